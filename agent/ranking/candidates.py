"""Recall: candidate queries for a shopper from several sources, each candidate naming its sources.

Sources (besides the language model's constrained beams, which the graph adds):

* ``memory``: the queries of the shopper's own purchases, most recent first;
* ``transition``: the most frequent next queries after the last purchase's query;
* ``next-item``: the queries of the next-item model's most likely items;
* ``popular``: the catalog's most purchased queries (cold start, and a floor for everyone).

Every candidate is a query of the served catalog's vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.ranking.vocabulary import QueryVocabulary

__all__ = ["SOURCES", "Candidate", "RecallConfig", "merge", "recall"]

SOURCES = ("model", "memory", "transition", "next-item", "popular")


@dataclass
class Candidate:
    """A candidate query and the sources that proposed it (first source first)."""

    query: str
    sources: list[str] = field(default_factory=list)
    logprob: float | None = None  # the language model's log-probability, when scored


@dataclass(frozen=True)
class RecallConfig:
    """How many candidates each source contributes."""

    memory: int = 8
    transition: int = 8
    next_item: int = 8
    popular: int = 3


def merge(groups: Iterable[tuple[str, Sequence[str]]]) -> list[Candidate]:
    """Union of ``(source, queries)`` groups in order; a query recalled twice keeps both sources."""
    out: dict[str, Candidate] = {}
    for source, queries in groups:
        for q in queries:
            cand = out.setdefault(q, Candidate(q))
            if source not in cand.sources:
                cand.sources.append(source)
    return list(out.values())


def next_item_queries(
    vocab: QueryVocabulary, probs: np.ndarray, item_ids: Sequence[str], k: int
) -> list[str]:
    """The ``k`` queries with the most next-item probability mass (summed over their items)."""
    mass: dict[str, float] = {}
    # Only the top items matter for the top queries; 20 items per wanted query is plenty.
    top = np.argsort(-probs)[: max(20 * k, 50)]
    for j in top:
        q = vocab.item_query.get(item_ids[int(j)])
        if q:
            mass[q] = mass.get(q, 0.0) + float(probs[int(j)])
    return [q for q, _ in sorted(mass.items(), key=lambda kv: -kv[1])[:k]]


def recall(
    vocab: QueryVocabulary,
    history: Sequence[str],
    probs: np.ndarray | None,
    item_ids: Sequence[str],
    config: RecallConfig | None = None,
    *,
    model_queries: Sequence[str] = (),
) -> list[Candidate]:
    """All sources' candidates for one shopper (``history``: item ids, oldest first)."""
    cfg = config or RecallConfig()
    hist = vocab.history_queries(history)
    last = hist[0] if hist else None
    groups: list[tuple[str, Sequence[str]]] = [
        ("model", list(model_queries)),
        ("memory", hist[: cfg.memory]),
        ("transition", vocab.transitions.top(last, cfg.transition) if last else []),
    ]
    if probs is not None and history:
        groups.append(("next-item", next_item_queries(vocab, probs, item_ids, cfg.next_item)))
    groups.append(("popular", vocab.transitions.popular(cfg.popular)))
    return merge(groups)
