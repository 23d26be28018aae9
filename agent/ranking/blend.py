"""The language model's vote in the check, weighted by what it is worth on the served catalog.

The ranker (``agent.ranking.ranker``) is fitted without a language model, so a catalog works
without one. Where a drafter is served, each candidate query also gets the model's
log-probability of writing it after the shopper's grounded draft prompt, added to the ranker's
score with one weight:

    rank score = ranker score + weight x log P_model(candidate | memory)

Only candidates of one shopper are compared, and normalizing the log-probabilities over them
(a log-softmax) would subtract the same number from each, so they are used as they are: the
scores stay comparable across refinement rounds, which check different candidates.

The weight is learned per (catalog, model) on rows the ranker never saw (``fit_catalog`` holds
them out and keeps their candidates and ranker scores): the weight among ``WEIGHTS`` whose top
candidate has the highest mean relevance (the ranker's labels: 1 for the real next query, 3 when
its products also hold the real next item); ties go to the smaller weight. A few hundred rows
are a noisy judge, so the best weight is kept only when it improves on the ranker alone on
clearly more rows than it worsens (a one-sided sign test, scipy's ``binomtest``, at ``ALPHA``);
otherwise the weight is 0 and the check is the ranker's. A one-dimensional grid over a handful of
values is all the search needs, hence no optimizer library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["ALPHA", "WEIGHTS", "ModelWeight", "combine", "fit_weight"]

# Candidate weights. The ranker's scores spread over a few units between a shopper's candidates;
# the model's log-probabilities of tens of candidates spread over about ten.
WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
# The sign test's level: the chance that a model with no signal still earns a weight.
ALPHA = 0.05


def combine(
    raw: Sequence[float] | np.ndarray, logprobs: Sequence[float] | None, weight: float
) -> np.ndarray:
    """The check's rank score: the ranker's ``raw`` plus ``weight`` x the model's log-probability
    (the ranker's alone without log-probabilities or weight)."""
    r = np.asarray(raw, dtype=np.float64)
    if logprobs is None or weight == 0.0 or not len(r):
        return r
    return r + weight * np.asarray(logprobs, dtype=np.float64)


@dataclass(frozen=True)
class ModelWeight:
    """The learned weight of one model on one catalog, with what it was learned from."""

    model: str  # the model's digest (agent.model_identity.model_digest)
    weight: float
    rows: int  # held-out rows it was fitted on
    # weight -> mean relevance of the top candidate on those rows (0 is the ranker alone)
    table: dict[str, float] = field(default_factory=dict)
    # the best weight against the ranker alone: rows it made better / worse, the sign test's p
    wins: int = 0
    losses: int = 0
    p_value: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelWeight:
        return cls(**data)

    def describe(self) -> str:
        """One line for people: the weight and the evidence it was chosen on."""
        return (
            f"weight {self.weight:g} in the check, learned on {self.rows} held-out rows (top "
            f"candidate's relevance by weight: {self.table}; the best weight against the ranker "
            f"alone: {self.wins} rows better, {self.losses} worse, sign test p {self.p_value})"
        )


def fit_weight(
    model: str,
    rows: Sequence[tuple[Sequence[float], Sequence[float], Sequence[int]]],
    weights: Sequence[float] = WEIGHTS,
    alpha: float = ALPHA,
) -> ModelWeight:
    """``model``'s weight: the one with the best mean relevance of the top candidate over
    ``rows`` of ``(ranker scores, log-probabilities, relevance labels)`` (the smaller weight on a
    tie), kept only when it beats the ranker alone on significantly more rows than it loses."""
    from scipy.stats import binomtest  # slow to import (scipy.stats); only this fit needs it

    rows = [r for r in rows if len(r[2])]
    top: dict[float, np.ndarray] = {}
    for w in sorted(set(weights) | {0.0}):
        top[w] = np.array(
            [float(labels[int(np.argmax(combine(raw, lp, w)))]) for raw, lp, labels in rows]
        )
    table = {f"{w:g}": round(float(v.mean()), 4) if len(v) else 0.0 for w, v in top.items()}
    best = max(sorted(top), key=lambda w: (table[f"{w:g}"], -w))
    wins = int((top[best] > top[0.0]).sum())
    losses = int((top[best] < top[0.0]).sum())
    p = float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins else 1.0
    weight = best if best > 0 and p <= alpha else 0.0
    return ModelWeight(model, weight, len(rows), table, wins, losses, round(p, 4))
