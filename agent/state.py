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
    # For a cold-start shopper: the catalog's most common categories, recorded at ingest.
    popular_categories: list[str] = field(default_factory=list)
    # The attempt being built: set by draft/refine, filled by retrieve, closed by check.
    current: dict[str, Any] | None = None
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
    # "model" when the recommended query came from the drafter, "fallback" when no attempt parsed
    # and the shopper's strongest interest-graph category was used instead.
    source: str | None = None
    refinements: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # The profile the run recalled (what the prompts saw): with ``attempts``, a whole trajectory.
    profile: dict[str, Any] | None = None
