"""Graph state. ``attempts`` (``QueryAttempt`` dicts) is the chain-of-retrieval trajectory.

State values are plain JSON (``QueryAttempt.model_dump(mode="json")`` and friends), so the
checkpointer, the LangGraph server and Studio carry them without custom serializers.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any


@dataclass(kw_only=True)
class InputState:
    """What a caller gives: the shopper, and optionally a history cutoff."""

    user_id: str
    # Build the memory from the shopper's first ``before`` events only. Evaluation sets it to the
    # position of the held-out item so the profile never sees the item it predicts (no leakage).
    before: int | None = None


@dataclass(kw_only=True)
class State(InputState):
    """The full working state."""

    profile: dict[str, Any] | None = None
    # The shopper's purchases (item ids, oldest first) before the cutoff: the next-item model's
    # input and the check's features.
    history: list[str] = field(default_factory=list)
    # For a cold-start shopper: the catalog's most common categories, recorded at ingest.
    popular_categories: list[str] = field(default_factory=list)
    # The round's candidate attempts: set by draft/recall/refine, filled by retrieve, closed
    # (moved to ``attempts``) by the check.
    pending: list[dict[str, Any]] = field(default_factory=list)
    # The check's refinement threshold for this run (learned per catalog unless the context
    # sets one) and whether a model is there to refine with.
    threshold: float = 0.0
    can_refine: bool = False
    attempts: Annotated[list[dict[str, Any]], operator.add] = field(default_factory=list)
    # Reflect-and-retry bound (langchain-ai/data-enrichment): compared with Context.max_refinements.
    refinements: Annotated[int, operator.add] = 0
    query: str | None = None
    products: list[dict[str, Any]] = field(default_factory=list)
    consistency: float | None = None
    source: str | None = None


@dataclass(kw_only=True)
class OutputState:
    """What a caller gets back."""

    user_id: str
    query: str | None = None
    products: list[dict[str, Any]] = field(default_factory=list)
    consistency: float | None = None
    # The recommended candidate's first source ("model", "memory", "transition", "next-item",
    # "popular"), or "fallback" when there was no candidate at all.
    source: str | None = None
    refinements: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # The profile the run recalled (what the prompts saw): with ``attempts``, a whole trajectory.
    profile: dict[str, Any] | None = None
    # What the nodes between recall and check write. They are output channels so that a
    # LangGraph server, which filters a run's ``updates`` stream to the output schema, shows
    # every node's update in Studio; at the end ``pending`` is empty again.
    history: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    can_refine: bool = False
    threshold: float = 0.0
