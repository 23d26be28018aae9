"""The served catalog's query vocabulary, what each query retrieves, and category transitions.

Everything here is fitted from one catalog and its purchase sequences (``fit_catalog``), never
carried over from another catalog: grounded drafting, recall and the check all read it.

* ``item_query``: item id -> its category query (``memory_store.queries``, the HEM protocol).
* ``products`` / ``retrieved``: query -> the top products (ids) the catalog returns for it.
  Candidate queries are always vocabulary queries, so retrieval is computed once per catalog
  and reused by
  the check, the reward and the evaluation (a GRPO step is then dominated by the model, not by
  Chroma).
* ``Transitions``: first-order query -> next query counts over the sequences (a Markov chain on
  the category of consecutive purchases), with add-one smoothing toward the query's popularity.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["QueryVocabulary", "Transitions"]

_VOCAB_FILE = "vocabulary.json"


@dataclass
class Transitions:
    """Counts of ``next query`` after ``query`` over consecutive purchases."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    popularity: dict[str, int] = field(default_factory=dict)  # purchases per query

    @classmethod
    def fit(cls, query_sequences: Iterable[Sequence[str | None]]) -> Transitions:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        popularity: Counter[str] = Counter()
        for seq in query_sequences:
            known = [q for q in seq if q]
            popularity.update(known)
            for a, b in zip(known, known[1:], strict=False):
                counts[a][b] += 1
        return cls({a: dict(c) for a, c in counts.items()}, dict(popularity))

    def prob(self, last: str | None, query: str) -> float:
        """P(next = query | last), add-one smoothed toward popularity (0 < p < 1)."""
        total_pop = sum(self.popularity.values()) or 1
        prior = (self.popularity.get(query, 0) + 1) / (total_pop + len(self.popularity) + 1)
        row = self.counts.get(last or "", {})
        n = sum(row.values())
        return (row.get(query, 0) + prior) / (n + 1)

    def top(self, last: str | None, k: int) -> list[str]:
        """The ``k`` most frequent next queries after ``last`` (most frequent first)."""
        row = self.counts.get(last or "", {})
        return [q for q, _ in sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]

    def popular(self, k: int) -> list[str]:
        return [q for q, _ in sorted(self.popularity.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


@dataclass
class QueryVocabulary:
    """The catalog's queries, their items, what each retrieves, and their transitions."""

    item_query: dict[str, str]
    # query -> the catalog's top products for it (``RetrievedProduct`` dumps, best first)
    products: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    transitions: Transitions = field(default_factory=Transitions)
    item_popularity: dict[str, int] = field(default_factory=dict)  # purchases per item

    def __post_init__(self) -> None:
        self.retrieved = {
            q: [str(p["item_id"]) for p in products] for q, products in self.products.items()
        }
        items: dict[str, list[str]] = defaultdict(list)
        for item, query in self.item_query.items():
            items[query].append(item)
        self.query_items = dict(items)
        self.queries = sorted(self.query_items)
        self._hit_share: dict[str, float] = {}

    def query_of(self, item_id: str) -> str | None:
        return self.item_query.get(item_id)

    def history_queries(self, history: Sequence[str]) -> list[str]:
        """The queries of the history's items, most recent first, each once."""
        out: dict[str, None] = {}
        for item in reversed(history):
            q = self.item_query.get(item)
            if q:
                out.setdefault(q, None)
        return list(out)

    @classmethod
    def build(
        cls,
        item_query: Mapping[str, str],
        sequences: Iterable[Sequence[str]],
        products: Mapping[str, list[dict[str, object]]] | None = None,
    ) -> QueryVocabulary:
        item_query = dict(item_query)
        sequences = [list(s) for s in sequences]
        transitions = Transitions.fit([item_query.get(i) for i in seq] for seq in sequences)
        popularity = Counter(i for seq in sequences for i in seq)
        return cls(item_query, dict(products or {}), transitions, dict(popularity))

    def hit_share(self, query: str) -> float:
        """Share of the query's category purchases that fall on products the query retrieves
        (add-0.1 smoothed): how often the right category also means a retrieved product.
        Depends on the vocabulary alone, so it is computed once per query."""
        if query not in self._hit_share:
            self._hit_share[query] = self._compute_hit_share(query)
        return self._hit_share[query]

    def _compute_hit_share(self, query: str) -> float:
        items = self.query_items.get(query, [])
        if not items:
            return 0.0
        # Sorted: a set's order changes with the process's string hashing, and so would the
        # sum's last bits (two fresh fits' rankers differed by them).
        hits = sorted({i for i in self.retrieved.get(query, []) if self.item_query.get(i) == query})
        total = sum(self.item_popularity.get(i, 0) + 0.1 for i in items)
        return sum(self.item_popularity.get(i, 0) + 0.1 for i in hits) / total

    # ----------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, object]:
        return {
            "item_query": self.item_query,
            "products": self.products,
            "transitions": {
                "counts": self.transitions.counts,
                "popularity": self.transitions.popularity,
            },
            "item_popularity": self.item_popularity,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> QueryVocabulary:
        tr = data.get("transitions") or {}
        assert isinstance(tr, dict)
        return cls(
            dict(data["item_query"]),  # type: ignore[call-overload]
            dict(data.get("products") or {}),  # type: ignore[call-overload]
            Transitions(dict(tr.get("counts", {})), dict(tr.get("popularity", {}))),
            dict(data.get("item_popularity") or {}),  # type: ignore[call-overload]
        )

    def save(self, folder: Path) -> None:
        (folder / _VOCAB_FILE).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, folder: Path) -> QueryVocabulary:
        return cls.from_json(json.loads((folder / _VOCAB_FILE).read_text()))
