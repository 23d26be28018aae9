"""Fusion: a linear blend (CombSUM) of the per-field BM25 scores, the dense similarity and the
popularity prior, with its few weights chosen by grid search on held-out purchases.

Every part is on a comparable scale before it is weighted: each field's BM25 score is divided by
its maximum for the query (``agent.search.lexical``), the dense score is a cosine similarity, the
prior is ``log(1 + purchases)`` over its maximum. The category field's weight is fixed at 1 (a
blend's scale does not change its order), so four weights are searched.

The weights are chosen on each shopper's last purchase before the evaluated targets (for the
``test`` split that is the ``valid`` target), never on the evaluated targets themselves. Two
kinds of query stand for what a shopper types for that purchase: its category query (the
search's I_Hit@10 given the right query) and, where the product has a brand, that query with
the brand named; the objective is the mean of the two shares shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = [
    "COMPONENTS",
    "DEFAULT_GRID",
    "FusionWeights",
    "hits_at_k",
    "shown_targets",
    "top_k",
    "tune_weights",
]

COMPONENTS = ("category", "title", "brand", "dense", "popularity")

# The searched values of each weight (category fixed at 1), smallest first. The text parts never
# reach 0: the tuning queries are category paths (and those with a brand named), which cannot show
# what a title word or the dense side is worth to a user's own words, so each keeps a small weight
# and a free-text query's words in a title still count.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "title": (0.02, 0.05, 0.1, 0.25, 0.5),
    "brand": (0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
    "dense": (0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
    "popularity": (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0),
}


@dataclass(frozen=True)
class FusionWeights:
    """The blend's weights; the defaults are only the starting point of a fit (they serve a
    catalog with too few purchases to tune on)."""

    category: float = 1.0
    title: float = 0.1
    brand: float = 0.25
    dense: float = 0.1
    popularity: float = 0.05

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
        is one row for every query).

        The text parts' blend (fields and dense) is divided by its best value for the query, so
        the best match scores 1 whatever the query; the prior is then added. Its weight thus
        says how far below the best match a popular product may be and still come first: among
        the category's products for a category query, among the nearest ones for words that
        match no field (without the division, the prior would outweigh a small dense weight
        and show the catalog's bestsellers for them).
        """
        shape = np.broadcast_shapes(*(p.shape for p in parts.values()))
        relevance = np.zeros(shape, dtype=np.float32)
        for name in COMPONENTS:
            weight = getattr(self, name)
            if weight != 0.0 and name != "popularity":
                relevance += weight * parts[name]
        if shape[-1]:
            best = relevance.max(axis=1, keepdims=True)
            np.divide(relevance, best, out=relevance, where=best > 0)
        if self.popularity != 0.0:
            relevance += self.popularity * parts["popularity"]
        return relevance


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


def shown_targets(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """Whether each target (``scores[rows[i], cols[i]]``) is in its row's top ``k`` as ``top_k``
    orders it (equal scores to the smaller column), without ordering any row: the tuning asks
    this of thousands of rows for each blend it tries, so it is vectorized (a target above its
    row's k-th best value is shown; one equal to it, when fewer than ``k`` columns score
    higher plus equal columns before it)."""
    n = scores.shape[1]
    if n == 0 or len(rows) == 0:
        return np.zeros(len(rows), dtype=bool)
    k = min(k, n)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    value, threshold = scores[rows, cols], kth[rows]
    shown = value > threshold
    for i in np.flatnonzero(value == threshold):  # ties at the k-th value: few
        row = scores[rows[i]]
        above = int(np.count_nonzero(row > threshold[i]))
        before = int(np.count_nonzero(row[: cols[i]] == threshold[i]))
        shown[i] = above + before < k
    return shown


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
    groups: Sequence[str] | None = None,
    k: int = 10,
    grid: Mapping[str, Sequence[float]] | None = None,
    rounds: int = 4,
    primary: str | None = None,
) -> tuple[FusionWeights, dict[str, float]]:
    """The weights with the most held-out purchases in their query's top ``k``, by coordinate
    ascent over the grid: from each weight's first value, each weight in turn takes its best
    value with the others fixed, until a round changes nothing (at most ``rounds``). A change
    must strictly improve the objective, so among equal blends the earlier (smaller) value stays.

    Args:
        parts: per component, a (queries x items) matrix, or one row for the prior.
        targets: per query row, the column indices of its held-out purchases.
        groups: per query row, the kind of query it is (``"category"``, ``"category+brand"``);
            the objective is the mean over kinds of each kind's share of targets shown, so a
            kind with fewer rows still counts. One kind when omitted.
        k: the result page's size (the evaluation's top 10).
        grid: values per weight (``DEFAULT_GRID``; a weight it does not name stays 0); the
            category field's weight is fixed at 1.
        primary: a kind that comes first: a blend is better when it shows more of this kind's
            targets, and only among equals when the mean over kinds is higher (the fit never
            trades a category query's hit for a branded one's).

    Returns:
        The weights, and per kind its I_Hit@k given that query (``"objective"``: their mean).
    """
    grid = dict(grid or DEFAULT_GRID)
    names = [name for name in COMPONENTS if name != "category"]
    kinds = list(groups) if groups is not None else ["all"] * len(targets)
    if len(kinds) != len(targets):
        raise ValueError(f"{len(kinds)} groups for {len(targets)} query rows")
    totals = {kind: 0 for kind in dict.fromkeys(kinds)}
    for kind, row_targets in zip(kinds, targets, strict=True):
        totals[kind] += len(row_targets)

    # Every (row, column) target once, flat: ``shown_targets`` scores them all at once.
    target_rows = np.array([r for r, ts in enumerate(targets) for _ in ts], dtype=np.int64)
    target_cols = np.array([t for ts in targets for t in ts], dtype=np.int64)

    def evaluate(weights: FusionWeights) -> dict[str, float]:
        hit = shown_targets(weights.fuse(parts), target_rows, target_cols, k)
        shown = np.bincount(target_rows[hit], minlength=len(targets)).tolist()
        rates = {kind: 0.0 for kind in totals}
        for kind, hits in zip(kinds, shown, strict=True):
            rates[kind] += hits / (totals[kind] or 1)
        rates["objective"] = sum(rates[kind] for kind in totals) / (len(totals) or 1)
        return rates

    values = {name: tuple(grid.get(name, (0.0,))) or (0.0,) for name in names}
    best = FusionWeights(category=1.0, **{name: values[name][0] for name in names})
    best_rates = evaluate(best)

    def better(rates: dict[str, float], than: dict[str, float]) -> bool:
        if primary is not None and rates[primary] != than[primary]:
            return rates[primary] > than[primary]
        return rates["objective"] > than["objective"]

    for _ in range(rounds):
        changed = False
        for name in names:
            for value in values[name]:
                if value == getattr(best, name):
                    continue
                trial = replace(best, **{name: value})
                rates = evaluate(trial)
                if better(rates, best_rates):
                    best, best_rates, changed = trial, rates, True
        if not changed:
            break
    return best, best_rates
