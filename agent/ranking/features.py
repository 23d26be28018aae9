"""Features of a (shopper, candidate query) pair for the learned check.

Every feature is computed from the shopper's history *before* the item being predicted (the
caller passes that history and next-item probabilities conditioned on it alone), so a training
row never sees its own target or anything after it (leave-one-out discipline).

The core feature is ``mass_hit``: the next-item model's probability that the next purchase is
one of the products the query retrieves *and* belongs to the query's category, i.e. an estimate
of the paper's Cons@K event for that query. Source membership is recomputed from the data (not
taken from which source recalled the candidate), so a candidate has the same features whichever
source proposed it, and the ranker fitted without a language model applies to the model's beams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agent.ranking.vocabulary import QueryVocabulary

__all__ = ["FEATURES", "candidate_features"]

FEATURES = (
    "mass_hit",  # P(next item in retrieved(q) and of category q)
    "mass_retrieved",  # P(next item in retrieved(q))
    "mass_category",  # P(next item of category q)
    "log_transition",  # log P(q | query of the last purchase), smoothed
    "recency",  # 1 / (1 + position of q among the history's queries, most recent = 0); 0 if absent
    "history_share",  # share of history purchases whose query is q
    "is_last",  # q is the last purchase's query
    "log_popularity",  # log(1 + purchases of q in the catalog's sequences)
    "retrievability",  # share of retrieved(q) whose own query is q
    "n_history",  # purchases before the target
    "mass_rank",  # rank of mass_hit among this shopper's candidates (0 = best)
    "hit_share",  # share of q's category purchases on products q retrieves (popularity)
)


def candidate_features(
    vocab: QueryVocabulary,
    history: Sequence[str],
    queries: Sequence[str],
    probs: np.ndarray | None,
    item_index: dict[str, int],
) -> np.ndarray:
    """``[len(queries), len(FEATURES)]`` for one shopper."""
    hist = vocab.history_queries(history)
    position = {q: i for i, q in enumerate(hist)}
    last = hist[0] if hist else None
    counts: dict[str, int] = {}
    for item in history:
        q = vocab.item_query.get(item)
        if q:
            counts[q] = counts.get(q, 0) + 1
    n = len(history)
    rows = []
    for q in queries:
        retrieved = vocab.retrieved.get(q, [])
        same = [i for i in retrieved if vocab.item_query.get(i) == q]
        if probs is not None:
            idx_same = [item_index[i] for i in same if i in item_index]
            idx_ret = [item_index[i] for i in retrieved if i in item_index]
            idx_cat = [item_index[i] for i in vocab.query_items.get(q, []) if i in item_index]
            mass_hit = float(probs[idx_same].sum()) if idx_same else 0.0
            mass_ret = float(probs[idx_ret].sum()) if idx_ret else 0.0
            mass_cat = float(probs[idx_cat].sum()) if idx_cat else 0.0
        else:
            mass_hit = mass_ret = mass_cat = 0.0
        rows.append(
            [
                mass_hit,
                mass_ret,
                mass_cat,
                math.log(vocab.transitions.prob(last, q)),
                1.0 / (1 + position[q]) if q in position else 0.0,
                counts.get(q, 0) / n if n else 0.0,
                float(q == last),
                math.log1p(vocab.transitions.popularity.get(q, 0)),
                len(same) / len(retrieved) if retrieved else 0.0,
                float(n),
                0.0,
                vocab.hit_share(q),
            ]
        )
    x = np.asarray(rows, dtype=np.float64).reshape(len(queries), len(FEATURES))
    if len(queries):
        order = np.argsort(-x[:, 0], kind="stable")
        x[order, FEATURES.index("mass_rank")] = np.arange(len(queries))
    return x
