"""Pydantic records that cross a boundary: graph state, CLI JSON, trajectory files.

The attempts list in the graph state (a list of ``QueryAttempt``) is the chain-of-retrieval
trajectory of the paper: every draft or refinement, what it retrieved and how well that fit
(``FitCheck``). The graph state holds these models; callers that print, store or compare an
output turn it into JSON with ``agent.state.output_json``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memory_store.products import Product

__all__ = [
    "FitCheck",
    "Generation",
    "Product",
    "QueryAttempt",
    "RetrievedProduct",
    "TextCheck",
    "WrittenText",
]


class RetrievedProduct(Product):
    """A product the catalog returned for a query; ``score`` is a similarity (higher is better)."""

    rank: int = Field(ge=1)
    score: float


class Generation(BaseModel):
    """One completion from a drafter, with the token ids recorded at generation time.

    Training needs the ids exactly as generated; re-tokenizing the text does not round-trip.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    prompt_token_ids: list[int] = Field(default_factory=list)
    completion_token_ids: list[int] = Field(default_factory=list)


class FitCheck(BaseModel):
    """The check's verdict on one attempt (the ``check_consistency`` node, the paper's step).

    Not the training reward (``training.rewards``) and not the Cons@K metric (the evaluation):
    ``fit`` is the learned check's calibrated chance in [0, 1] that the shopper's next purchase
    is among the attempt's products (0 for a completion that is not a query); ``feedback`` is the
    sentence the refine prompt shows the model.
    """

    model_config = ConfigDict(frozen=True)

    fit: float
    feedback: str = ""


class QueryAttempt(BaseModel):
    """One step of the chain of retrieval; a model mistake is kept as data (``error``).

    Frozen: an attempt in the graph state is shared by every later step (and a checkpoint), so a
    node that fills it in makes a copy (``attempt.model_copy(update={...})``).
    """

    model_config = ConfigDict(frozen=True)

    turn: int = Field(ge=0, description="0 for the draft, then 1, 2, ... for refinements")
    kind: Literal["draft", "refine"]
    # Where the candidate came from: "model" (the drafter), "memory", "transition",
    # "next-item", "popular" (agent.ranking.candidates); several when more than one proposed it.
    sources: list[str] = Field(default_factory=lambda: ["model"])
    messages: list[dict[str, str]] = Field(default_factory=list)
    completion: str = ""
    prompt_token_ids: list[int] = Field(default_factory=list)
    completion_token_ids: list[int] = Field(default_factory=list)
    query: str | None = None
    error: str | None = None
    products: list[RetrievedProduct] = Field(default_factory=list)
    # The check's verdict; None until ``check_consistency`` has seen the attempt.
    check: FitCheck | None = None
    # The drafter's log-probability of the completion (grounded drafting), when computed.
    logprob: float | None = None
    # The learned check's ranking score (higher is better; ``check.fit`` is its calibrated
    # chance that the next purchase is among ``products``).
    rank_score: float | None = None


class TextCheck(BaseModel):
    """The check of a query text (``agent.writing``): how its products fit the intent and the
    shopper. ``share``: the share of its products in the intent's category; ``mass``: the
    next-item model's probability that the shopper's next purchase is among them (0 without a
    next-item model); ``fits``: at least as good as the intent's own page (see
    ``agent.writing.text_fits``); ``feedback``: the sentence a rewrite prompt shows the model."""

    model_config = ConfigDict(frozen=True)

    share: float
    mass: float
    fits: bool = True
    feedback: str = ""


class WrittenText(BaseModel):
    """One query text the model wrote for the recommendation's intent (``agent.writing``):
    the prompt and completion as generated, the parsed text (None with ``error`` when the
    completion is not a query), what it retrieves and the check's verdict. Frozen, like
    ``QueryAttempt``."""

    model_config = ConfigDict(frozen=True)

    turn: int = Field(ge=0, description="0 for the first text, then 1, 2, ... for rewrites")
    kind: Literal["write", "rewrite"]
    messages: list[dict[str, str]] = Field(default_factory=list)
    completion: str = ""
    prompt_token_ids: list[int] = Field(default_factory=list)
    completion_token_ids: list[int] = Field(default_factory=list)
    text: str | None = None
    error: str | None = None
    products: list[RetrievedProduct] = Field(default_factory=list)
    # None until ``check_text`` has seen the text.
    check: TextCheck | None = None
