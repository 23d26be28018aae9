"""Graph state. ``attempts`` (``QueryAttempt`` records) is the chain-of-retrieval trajectory.

State values are typed: the profile is a ``memory_store.UserProfile``, attempts are
``agent.records.QueryAttempt`` (each with its ``FitCheck``), products are ``RetrievedProduct``.
They are pydantic v2 models, which LangGraph's checkpointers (``JsonPlusSerializer``: in memory,
SQLite, Postgres) store and revive as the same models, and which the LangGraph server turns into
JSON for its API and Studio. A caller that prints, stores or compares an output takes its JSON
form, ``output_json(graph.invoke(...))``; the offline runner (``graphs.offline.runner``) returns
that form.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic_core import to_jsonable_python

from agent.records import QueryAttempt, RetrievedProduct, TextCheck, WrittenText
from memory_store import UserProfile

__all__ = ["InputState", "OutputState", "State", "merge_texts", "output_json"]


def merge_texts(left: list[WrittenText], right: list[WrittenText]) -> list[WrittenText]:
    """The ``texts`` channel's reducer: a text of a turn already there replaces it (the check
    fills a text in), any other is appended."""
    out = list(left)
    turns = {t.turn: i for i, t in enumerate(out)}
    for text in right:
        if text.turn in turns:
            out[turns[text.turn]] = text
        else:
            turns[text.turn] = len(out)
            out.append(text)
    return out


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

    profile: UserProfile | None = None
    # The shopper's purchases (item ids, oldest first) before the cutoff: the next-item model's
    # input and the check's features.
    history: list[str] = field(default_factory=list)
    # For a cold-start shopper: the catalog's most common categories, recorded at ingest.
    popular_categories: list[str] = field(default_factory=list)
    # The round's candidate attempts: set by draft/recall/refine, filled by retrieve, closed
    # (moved to ``attempts``) by the check.
    pending: list[QueryAttempt] = field(default_factory=list)
    # The check's refinement threshold for this run (learned per catalog unless the context
    # sets one) and whether a model is there to refine with.
    threshold: float = 0.0
    can_refine: bool = False
    attempts: Annotated[list[QueryAttempt], operator.add] = field(default_factory=list)
    # Reflect-and-retry bound (langchain-ai/data-enrichment): compared with Context.max_refinements.
    refinements: Annotated[int, operator.add] = 0
    query: str | None = None
    products: list[RetrievedProduct] = field(default_factory=list)
    # The recommended attempt's ``check.fit``: the calibrated chance that the shopper's next
    # purchase is among ``products`` (None for a fallback).
    fit: float | None = None
    source: str | None = None
    # The query text the shopper sees (``agent.writing``): ``query`` is the intent (the catalog
    # query the check picked, what Q_EM is taken on); ``query_text`` the model's text for it when
    # its products fit, else the intent (``text_source`` "model" or "intent"); ``products`` are
    # the shown text's. ``texts`` are the written texts with their checks, ``intent_check`` the
    # check of the intent's own page they are compared with, ``rewrites`` the rewrites made.
    query_text: str | None = None
    text_source: str | None = None
    texts: Annotated[list[WrittenText], merge_texts] = field(default_factory=list)
    intent_check: TextCheck | None = None
    rewrites: Annotated[int, operator.add] = 0


@dataclass(kw_only=True)
class OutputState:
    """What a caller gets back."""

    user_id: str
    # The intent: the catalog query the check picked (see ``State.query_text``).
    query: str | None = None
    # The query text the shopper sees, and who wrote it ("model", or "intent": the intent's own).
    query_text: str | None = None
    text_source: str | None = None
    # The products the shown text retrieves.
    products: list[RetrievedProduct] = field(default_factory=list)
    # The check's fit of the recommended attempt (see ``State.fit``).
    fit: float | None = None
    # The recommended candidate's first source ("model", "memory", "transition", "next-item",
    # "popular"), or "fallback" when there was no candidate at all.
    source: str | None = None
    refinements: int = 0
    attempts: list[QueryAttempt] = field(default_factory=list)
    # The profile the run recalled (what the prompts saw): with ``attempts``, a whole trajectory.
    profile: UserProfile | None = None
    # What the nodes between recall and check write. They are output channels so that a
    # LangGraph server, which filters a run's ``updates`` stream to the output schema, shows
    # every node's update in Studio; at the end ``pending`` is empty again.
    history: list[str] = field(default_factory=list)
    pending: list[QueryAttempt] = field(default_factory=list)
    can_refine: bool = False
    threshold: float = 0.0
    # The query text's steps (``agent.writing``), for Studio and the trajectory.
    texts: list[WrittenText] = field(default_factory=list)
    intent_check: TextCheck | None = None
    rewrites: int = 0


def output_json(output: Mapping[str, Any]) -> dict[str, Any]:
    """A graph output (or any state mapping) as JSON values: every model as its
    ``model_dump(mode="json")``. What the CLI prints, the precompute stores and files keep."""
    return dict(to_jsonable_python(dict(output)))
