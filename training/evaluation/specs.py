"""What an evaluation run is asked for: the methods (baselines and model methods, ``agent@PATH``),
the run's configuration, and a method's result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from agent.context import Context
from training.evaluation.metrics import UserOutcome

BASELINES = (
    # The ground-truth query itself: Q_EM is 1 by construction, so its I_Hit@10 is the search's
    # own figure given the right query (a reference row, not a recommender).
    "oracle-query",
    "popular",
    "last-category",
    "swing",
    "dense-query",
    "markov",
    "sasrec",
    "ranker",
)
# Methods that use the models fitted from the catalog's sequences (agent.ranking).
FITTED = ("markov", "sasrec", "ranker", "agent-single-turn", "agent")
MODEL_METHODS = ("llm-direct", "agent-single-turn", "agent")
METHODS = BASELINES + MODEL_METHODS
RETRIEVE_K = 10


class EvalError(Exception):
    """A user-caused problem with an evaluation request (one line for the CLI)."""


@dataclass(frozen=True)
class MethodSpec:
    """A method, and for model methods the drafter it uses (``agent@path/to/checkpoint``)."""

    method: str
    model: str | None = None

    @property
    def label(self) -> str:
        if self.method in MODEL_METHODS and self.model:
            return f"{self.method}@{Path(self.model).name or self.model}"
        return self.method


def parse_methods(text: str, default_model: str | None = None) -> list[MethodSpec]:
    """``"popular,agent,agent@ckpt/sft"`` -> specs; unknown names list the valid ones."""
    specs = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        method, _, model = raw.partition("@")
        if method not in METHODS:
            raise EvalError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        if model and method not in MODEL_METHODS:
            raise EvalError(f"method {method!r} uses no model, so {raw!r} names none")
        specs.append(
            MethodSpec(method, (model or default_model) if method in MODEL_METHODS else None)
        )
    if not specs:
        raise EvalError(f"no method given; valid methods: {', '.join(METHODS)}")
    return specs


@dataclass
class EvalConfig:
    data: str
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    model: str | None = None
    batch_size: int = 16
    max_refinements: int = Context.max_refinements
    home: str | None = None
    search: str = "fused"  # agent.search.SEARCH_MODES: every method's products come from it
    # The agent's model writes the query text the shopper sees (Context.write_query, on as in
    # the product): its I_Hit/Cons then come from the text's results.
    write_query: bool = Context.write_query

    @classmethod
    def from_args(cls, args: Any) -> Self:
        """From the parsed flags that ``eval`` and ``export`` share."""
        return cls(
            data=str(args.data),
            split=args.split,
            limit=args.limit,
            seed=args.seed,
            model=args.model,
            batch_size=args.batch_size,
            max_refinements=args.max_refinements,
            home=str(args.home) if args.home else None,
            search=getattr(args, "search", None) or "fused",
            write_query=bool(getattr(args, "write_query", Context.write_query)),
        )


@dataclass
class MethodResult:
    spec: MethodSpec
    outcomes: list[UserOutcome]
    wall_s: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    distinct_ratio: float = 0.0
