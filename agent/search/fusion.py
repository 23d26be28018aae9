"""Fusion: a linear blend (CombSUM) of the per-field BM25 scores, the dense similarity and the
popularity prior, with its few weights chosen by grid search on held-out purchases.

Every part is on a comparable scale before it is weighted: each field's BM25 score is divided by
its maximum for the query (``agent.search.lexical``), the dense score is a cosine similarity, the
prior is ``log(1 + purchases)`` over its maximum. The category field's weight is fixed at 1 (a
blend's scale does not change its order), so four weights are searched.

The weights are chosen on each shopper's last purchase before the evaluated targets (for the
``test`` split that is the ``valid`` target), the query being that purchase's category query:
the search's I_Hit@10 given the right query. Never on the evaluated targets themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["COMPONENTS", "DEFAULT_GRID", "FusionWeights", "hits_at_k", "top_k", "tune_weights"]

COMPONENTS = ("category", "title", "brand", "dense", "popularity")

# The searched values of each weight (category fixed at 1), smallest first: among equally good
# blends the first found, the one with the smallest weights, is kept.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "title": (0.0, 0.1, 0.25, 0.5),
    "brand": (0.0, 0.1, 0.25, 0.5),
    "dense": (0.0, 0.1, 0.25, 0.5, 1.0),
    "popularity": (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0),
}


@dataclass(frozen=True)
class FusionWeights:
    """The blend's weights; the defaults are only the starting point of a fit (they serve a
    catalog with too few purchases to tune on)."""

    category: float = 1.0
    title: float = 0.25
    brand: float = 0.1
    dense: float = 0.25
    popularity: float = 0.2

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, float]) -> FusionWeights:
        return cls(**{name: float(data[name]) for name in COMPONENTS if name in data})

    @classmethod
    def only(cls, *names: str) -> FusionWeights:
        """Weight 1 on the named parts, 0 elsewhere (the calibration's "each part alone")."""
        return cls(**{name: (1.0 if name in names else 0.0) for name in COMPONENTS})

    def fuse(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        """The blended score matrix (queries x items); ``parts`` rows may broadcast (the prior
        is one row for every query)."""
        total: np.ndarray | None = None
        for name in COMPONENTS:
            weight = getattr(self, name)
            if weight == 0.0:
                continue
            term = weight * parts[name]
            total = term if total is None else total + term
        if total is None:
            shape = np.broadcast_shapes(*(p.shape for p in parts.values()))
            return np.zeros(shape, dtype=np.float32)
        return np.broadcast_to(
            total, np.broadcast_shapes(*(p.shape for p in parts.values()))
        ).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row, the column indices of the ``k`` highest scores, best first; equal scores go to
    the smaller column (the search keeps its products in id order, so: to the smaller id)."""
    n = scores.shape[1]
    if n == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(scores.shape[0])]
    k = min(k, n)
    # The k-th best value per row; every column at or above it is a candidate (ties included),
    # then a stable sort of the few candidates orders them by score, then by column.
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    out = []
    for row, threshold in zip(scores, kth, strict=True):
        idx = np.flatnonzero(row >= threshold)
        out.append(idx[np.argsort(-row[idx], kind="stable")][:k])
    return out


def hits_at_k(scores: np.ndarray, targets: Sequence[Sequence[int]], k: int) -> int:
    """How many of the targets (per row, column indices; a column may repeat) are in their row's
    top ``k``."""
    hits = 0
    for top, row_targets in zip(top_k(scores, k), targets, strict=True):
        shown = set(top.tolist())
        hits += sum(1 for t in row_targets if t in shown)
    return hits


def tune_weights(
    parts: Mapping[str, np.ndarray],
    targets: Sequence[Sequence[int]],
    *,
    k: int = 10,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> tuple[FusionWeights, float]:
    """The grid's weights with the most targets in their query's top ``k``; returns them and
    that share of targets (I_Hit@k given the right query).

    Args:
        parts: per component, a (queries x items) matrix, or one row for the prior.
        targets: per query row, the column indices of its held-out purchases.
        k: the result page's size (the evaluation's top 10).
        grid: values per weight (``DEFAULT_GRID``); category is fixed at 1.
    """
    grid = dict(grid or DEFAULT_GRID)
    names = [name for name in COMPONENTS if name != "category"]
    total = sum(len(t) for t in targets) or 1
    best, best_hits = FusionWeights(), -1
    for values in itertools.product(*(grid.get(name, (0.0,)) for name in names)):
        weights = FusionWeights(category=1.0, **dict(zip(names, values, strict=True)))
        hits = hits_at_k(weights.fuse(parts), targets, k)
        if hits > best_hits:
            best, best_hits = weights, hits
    return best, best_hits / total
