"""Query-only baselines of the paper's table. Each maps a shopper's history to one query.

popular        the most frequent ground-truth query of the training split
last-category  the query of the last history item's category
swing          Swing item-to-item co-occurrence (Alibaba) over training sequences; the query
               of the top co-occurring item's category
dense-query    the nearest training-split ground-truth query to the embedded recent history
markov         the most frequent next query after the last purchase's query
sasrec         the query of the next-item model's (SASRec) most likely next item
ranker         the learned check over rule-based candidates, no language model (ablation)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np

from agent.catalog import Catalog
from agent.ranking.fit import CatalogModels
from memory_store import Example
from training.queries import QueryOracle

__all__ = [
    "DenseQuery",
    "LastCategory",
    "Markov",
    "Popular",
    "QueryOracle",
    "RankerOnly",
    "SASRecQuery",
    "Swing",
]

# The purchases a method may see for an example (the memory before the target's position).
HistoryOf = Callable[[Example], list[str]]

# Recent history items embedded for dense-query (the paper's latest intent is short too).
DENSE_RECENT = 5


class Popular:
    name = "popular"

    def __init__(self, oracle: QueryOracle) -> None:
        counts = Counter(
            q for ex in oracle.dataset.examples("train") if (q := oracle.of_item(ex.target))
        )
        if not counts:
            raise ValueError("the training split has no target with a category")
        # Ties go to the alphabetically first query, so the baseline is deterministic.
        self.query = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        return [self.query for _ in examples]


class OracleQuery:
    """The target's own ground-truth query: not a recommender but the search's reference row
    (Q_EM 1 by construction, so its I_Hit@10 is the search's figure given the right query)."""

    name = "oracle-query"

    def __init__(self, oracle: QueryOracle) -> None:
        self.oracle = oracle

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        return [self.oracle.of_item(ex.target) for ex in examples]


class LastCategory:
    name = "last-category"

    def __init__(self, oracle: QueryOracle, fallback: Popular) -> None:
        self.oracle = oracle
        self.fallback = fallback.query

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        return [self.oracle.last_query(ex.history) or self.fallback for ex in examples]


class Swing:
    """Swing similarity: sim(i, j) = sum over user pairs (u, v) who both bought i and j of
    1 / (alpha + |I_u & I_v|), with user weights 1 / sqrt(|I_u|) (Yang et al., 2020)."""

    name = "swing"

    def __init__(self, oracle: QueryOracle, fallback: LastCategory, *, alpha: float = 1.0) -> None:
        self.oracle = oracle
        self.fallback = fallback
        # Each user's longest training sequence: its items before the valid and test targets.
        longest: dict[str, set[str]] = defaultdict(set)
        for ex in oracle.dataset.examples("train"):
            longest[ex.user_id].update(ex.history)
            longest[ex.user_id].add(ex.target)
        users = {u: frozenset(items) for u, items in longest.items()}
        by_item: dict[str, list[str]] = defaultdict(list)
        for u, items in users.items():
            for i in items:
                by_item[i].append(u)
        weight = {u: 1.0 / math.sqrt(len(items)) for u, items in users.items()}
        self.sim: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for i, buyers in by_item.items():
            for u, v in combinations(buyers, 2):
                common = users[u] & users[v]
                w = weight[u] * weight[v] / (alpha + len(common))
                for j in common:
                    if j != i:
                        self.sim[i][j] += w

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        return [self._one(ex) for ex in examples]

    def _one(self, ex: Example) -> str | None:
        scores: dict[str, float] = defaultdict(float)
        seen = set(ex.history)
        for age, i in enumerate(reversed(ex.history)):
            for j, s in self.sim.get(i, {}).items():
                if j not in seen:
                    scores[j] += s * 0.8**age  # recent items count more
        for j, _ in sorted(scores.items(), key=lambda kv: -kv[1]):
            query = self.oracle.of_item(j)
            if query:
                return query
        return self.fallback([ex])[0]


class DenseQuery:
    """Nearest training-split query to the mean embedding of the last few history items."""

    name = "dense-query"

    def __init__(self, oracle: QueryOracle, catalog: Catalog) -> None:
        self.catalog = catalog
        pool = sorted(
            {q for ex in oracle.dataset.examples("train") if (q := oracle.of_item(ex.target))}
        )
        self.pool = pool
        self.pool_vectors = _unit(np.array(catalog.embed(pool), dtype=np.float32))

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        recent = [list(ex.history[-DENSE_RECENT:]) for ex in examples]
        vectors = self.catalog.embeddings(sorted({i for r in recent for i in r}))
        out: list[str | None] = []
        for items in recent:
            vs = [vectors[i] for i in items if i in vectors]
            if not vs:
                out.append(None)
                continue
            user = _unit(np.mean(np.array(vs, dtype=np.float32), axis=0, keepdims=True))
            out.append(self.pool[int(np.argmax(self.pool_vectors @ user[0]))])
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


# --------------------------------------------------------------------------- fitted per catalog
# The three below use the models ``queryagent ingest`` fits from a catalog's own sequences
# (``agent.ranking``); the evaluation fits them on the part of the folder before its targets.


class _Fitted:
    """A baseline over the catalog's fitted models and the purchases each example may see."""

    def __init__(self, models: CatalogModels, history_of: HistoryOf) -> None:
        self.models = models
        self.history_of = history_of


class Markov(_Fitted):
    """The most frequent next query after the last purchase's query (first-order transitions)."""

    name = "markov"

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        vocab = self.models.vocab
        out: list[str | None] = []
        for ex in examples:
            recent = vocab.history_queries(self.history_of(ex))
            last = recent[0] if recent else None
            nxt = vocab.transitions.top(last, 1) if last else []
            choice: list[str] = nxt or recent or vocab.transitions.popular(1)
            out.append(choice[0] if choice else None)
        return out


class SASRecQuery(_Fitted):
    """The query of the next-item model's most likely next item (SASRec, Kang & McAuley 2018)."""

    name = "sasrec"

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        histories = [self.history_of(ex) for ex in examples]
        out: list[str | None] = []
        for probs in self.models.next_item_probs(histories):
            query = None
            if probs is not None:
                for j in np.argsort(-probs)[:50]:
                    query = self.models.vocab.query_of(self.models.item_ids[int(j)])
                    if query:
                        break
            popular = self.models.vocab.transitions.popular(1)
            out.append(query or (popular[0] if popular else None))
        return out


class RankerOnly(_Fitted):
    """The learned check over the rule-based candidates (memory, transitions, next-item,
    popular), no language model: the ablation that shows what the model adds."""

    name = "ranker"

    def __call__(self, examples: Sequence[Example]) -> list[str | None]:
        histories = [self.history_of(ex) for ex in examples]
        out: list[str | None] = []
        for history, probs in zip(histories, self.models.next_item_probs(histories), strict=True):
            queries = [c.query for c in self.models.recall(history, probs)]
            if not queries:
                out.append(None)
                continue
            raw, _ = self.models.score(self.models.features(history, queries, probs))
            out.append(queries[int(np.argmax(raw))])
        return out
