"""The fused search: BM25 over fields + MiniLM dense + popularity prior, fitted per catalog.

``fit_search`` builds it from a catalog's products and purchase sequences (the lexical index, the
prior counted from the sequences, the blend's weights chosen on each shopper's last purchase
before them); ``save`` writes it as one folder beside the catalog in the home, swapped in whole
(``memory_store.files.atomic_folder``), with a ``search.meta.json``; ``FusedSearch.load`` reads it
back. ``add_products`` (ingest of new products) and ``add_events`` (``events add``) keep the
index and the prior current; the weights stay those of the last fit.

    from agent.search import CatalogDenseScorer, fit_search
    search = fit_search(products, sequences, CatalogDenseScorer(catalog))
    search.search("lab scientific products microscopes", k=10)
    search.save(search_dir(home))
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.records import RetrievedProduct
from agent.search.fusion import DEFAULT_GRID, FusionWeights, top_k, tune_weights
from agent.search.lexical import FieldIndex
from agent.search.popularity import Popularity
from agent.search.protocol import DenseScorer
from memory_store.events import BehaviorEvent
from memory_store.files import atomic_folder, atomic_write
from memory_store.fingerprint import data_fingerprint
from memory_store.products import Product
from memory_store.queries import catalog_queries, normalize_query

__all__ = ["FusedSearch", "SearchConfig", "fit_search", "search_key", "tuning_rows"]

META_FILE = "search.meta.json"
PRODUCTS_FILE = "products.jsonl"
POPULARITY_FILE = "popularity.json"
WEIGHTS_FILE = "weights.json"
LEXICAL_DIR = "lexical"
QUERIES_PER_CHUNK = 256  # queries scored together (memory: 5 x 4 bytes x products each)
FORMAT = 1  # bumped when the folder's layout changes; an older folder is refitted


@dataclass(frozen=True)
class SearchConfig:
    """How ``fit_search`` chooses the blend's weights."""

    k: int = 10  # the result page the weights are tuned for (the evaluation's top 10)
    # Tuning rows (shoppers' last purchases), a seeded sample beyond that; the bundled catalog
    # has 7k, and the grid's cost grows with the distinct queries among them.
    max_rows: int = 20_000
    min_rows: int = 20  # fewer held-out purchases than this: keep FusionWeights' defaults
    grid: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_GRID))
    seed: int = 0


def _fingerprint(
    products: Iterable[Product], sequences: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The products (and sequences) as ``memory_store.fingerprint`` digests every fitted model."""
    return data_fingerprint({p.item_id: p for p in products}, sequences or {})


def search_key(
    products: Iterable[Product],
    sequences: Mapping[str, Sequence[str]],
    config: SearchConfig | None = None,
) -> str:
    """What a fit depends on: the products, the sequences and the configuration."""
    spec = json.dumps(asdict(config or SearchConfig()), sort_keys=True, default=list)
    return hashlib.sha256(
        f"{FORMAT}:{_fingerprint(products, sequences)}:{spec}".encode()
    ).hexdigest()[:16]


@dataclass(frozen=True)
class _State:
    """Everything a query reads, swapped as one reference by an update (readers in other
    threads see the old state or the new one, never a mix)."""

    products: tuple[Product, ...]  # sorted by item id: equal scores go to the smaller id
    item_ids: tuple[str, ...]
    lexical: FieldIndex
    popularity: Popularity
    prior: np.ndarray  # (1, items)


def _state(
    products: Iterable[Product], popularity: Popularity, lexical: FieldIndex | None = None
) -> _State:
    ordered = tuple(sorted({p.item_id: p for p in products}.values(), key=lambda p: p.item_id))
    ids = tuple(p.item_id for p in ordered)
    return _State(
        products=ordered,
        item_ids=ids,
        lexical=lexical if lexical is not None else FieldIndex.build(ordered),
        popularity=popularity,
        prior=popularity.prior(ids)[None, :],
    )


class FusedSearch:
    """``Search``: BM25 fields + dense + popularity prior, blended by fitted weights.

    Args:
        products: the catalog's products.
        popularity: purchases counted before the cutoff the caller chose.
        weights: the blend's weights (``fit_search`` tunes them).
        dense: dense similarities (``CatalogDenseScorer`` over the Chroma catalog).
        meta: what made it (written to ``search.meta.json``).
    """

    name = "fused"

    def __init__(
        self,
        products: Iterable[Product],
        popularity: Popularity,
        weights: FusionWeights,
        dense: DenseScorer,
        *,
        meta: Mapping[str, Any] | None = None,
        _lexical: FieldIndex | None = None,
    ) -> None:
        self._state = _state(products, popularity, _lexical)
        self.weights = weights
        self.dense = dense
        self.meta: dict[str, Any] = dict(meta or {})
        self._lock = threading.Lock()  # serializes updates; reads take the current state

    def __repr__(self) -> str:
        return f"FusedSearch({len(self._state.item_ids)} products, {self.weights})"

    @property
    def item_ids(self) -> tuple[str, ...]:
        return self._state.item_ids

    @property
    def popularity(self) -> Popularity:
        return self._state.popularity

    # ----------------------------------------------------------------- scoring

    def parts(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Each part's score matrix (queries x products, in ``item_ids`` order; the prior is
        one row): what the blend weighs, for the calibration and the tuning."""
        return self._parts(self._state, queries, dense=True)

    def _parts(
        self, state: _State, queries: Sequence[str], *, dense: bool
    ) -> dict[str, np.ndarray]:
        parts = state.lexical.scores(queries)
        if dense:
            parts["dense"] = self.dense.scores(queries, state.item_ids)
        else:  # a blend without the dense part: no query embedding needed
            parts["dense"] = np.zeros((len(queries), len(state.item_ids)), dtype=np.float32)
        parts["popularity"] = state.prior
        return parts

    def search(self, query: str, k: int = 10) -> list[RetrievedProduct]:
        return self.search_many([query], k=k)[0]

    def search_many(
        self, queries: list[str], k: int = 10, *, exact: bool = False
    ) -> list[list[RetrievedProduct]]:
        # ``exact`` is accepted for ``Catalog.search_many`` callers: every product is scored
        # and ties go to the smaller id, so the result is the same on every run anyway.
        del exact
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        state = self._state
        out: list[list[RetrievedProduct]] = []
        # In chunks: each query holds a row of every part over the whole catalog (an evaluation
        # asks for thousands of queries at once).
        for start in range(0, len(queries), QUERIES_PER_CHUNK):
            chunk = queries[start : start + QUERIES_PER_CHUNK]
            scores = self.weights.fuse(self._parts(state, chunk, dense=self.weights.dense != 0.0))
            for row, top in zip(scores, top_k(scores, k), strict=True):
                out.append(
                    [
                        RetrievedProduct(
                            **state.products[j].model_dump(), rank=rank, score=float(row[j])
                        )
                        for rank, j in enumerate(top.tolist(), start=1)
                    ]
                )
        return out

    # ----------------------------------------------------------------- updates

    def add_products(self, products: Iterable[Product]) -> int:
        """Add or replace products by id (``queryagent ingest`` of new products); the lexical
        index is rebuilt over the whole catalog (BM25's statistics are catalog-wide). Returns
        how many products were new or changed."""
        with self._lock:
            current = {p.item_id: p for p in self._state.products}
            changed = [p for p in products if current.get(p.item_id) != p]
            if changed:
                current.update({p.item_id: p for p in changed})
                self._state = _state(current.values(), self._state.popularity)
            return len({p.item_id for p in changed})

    def add_events(self, events: Iterable[BehaviorEvent], *, cutoff: float | None = None) -> int:
        """Count new purchases into the prior (``queryagent events add``); with ``cutoff`` only
        events timestamped before it (``Popularity.from_events``). Returns the new total."""
        with self._lock:
            state = self._state
            popularity = state.popularity.with_events(events, cutoff=cutoff)
            self._state = _State(
                state.products,
                state.item_ids,
                state.lexical,
                popularity,
                popularity.prior(state.item_ids)[None, :],
            )
            return popularity.total

    # ----------------------------------------------------------------- persistence

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the search to ``folder``, replacing any earlier one whole (a reader finds the
        old folder or the new one, never half of either)."""
        folder = Path(folder)
        state = self._state
        meta = {
            **self.meta,
            "format": FORMAT,
            "kind": self.name,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "products": len(state.item_ids),
            "products_fingerprint": _fingerprint(state.products),
            "purchases": state.popularity.total,
            "weights": self.weights.to_json(),
            "bm25s": _bm25s_version(),
        }
        with atomic_folder(folder) as tmp:
            (tmp / PRODUCTS_FILE).write_text(
                "".join(p.model_dump_json() + "\n" for p in state.products)
            )
            state.lexical.save(tmp / LEXICAL_DIR)
            (tmp / POPULARITY_FILE).write_text(json.dumps(dict(state.popularity.counts)))
            (tmp / WEIGHTS_FILE).write_text(json.dumps(self.weights.to_json()))
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        self.meta = meta
        return folder

    def save_popularity(self, folder: str | os.PathLike[str]) -> None:
        """Rewrite only the prior's counts and the meta (after ``add_events``), each file
        atomically: cheaper than ``save`` for a stream of events."""
        self.meta = _write_prior(Path(folder), dict(self._state.popularity.counts), self.meta)

    @staticmethod
    def count_purchases(folder: str | os.PathLike[str], item_ids: Iterable[str]) -> int:
        """Count purchases into the prior of the search saved in ``folder`` without loading it
        (``queryagent events add``): under a file lock every process sees, so concurrent adds
        all count, and each file is swapped atomically. A process that holds the search loaded
        sees the new counts when it loads it again. Returns the new total."""
        from filelock import FileLock  # only the events command writes a saved search's prior

        folder = Path(folder)
        with FileLock(str(folder) + ".lock"):
            counts: dict[str, int] = json.loads((folder / POPULARITY_FILE).read_text())
            for item in item_ids:
                counts[item] = counts.get(item, 0) + 1
            meta = _write_prior(folder, counts, json.loads((folder / META_FILE).read_text()))
            return int(meta["purchases"])

    @staticmethod
    def exists(folder: str | os.PathLike[str]) -> bool:
        return (Path(folder) / META_FILE).is_file()

    @classmethod
    def load(cls, folder: str | os.PathLike[str], dense: DenseScorer) -> FusedSearch:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        products = [
            Product.model_validate_json(line)
            for line in (folder / PRODUCTS_FILE).read_text().splitlines()
            if line.strip()
        ]
        counts = json.loads((folder / POPULARITY_FILE).read_text())
        weights = FusionWeights.from_json(json.loads((folder / WEIGHTS_FILE).read_text()))
        return cls(
            products,
            Popularity({str(k): int(v) for k, v in counts.items()}),
            weights,
            dense,
            meta=meta,
            _lexical=FieldIndex.load(folder / LEXICAL_DIR),
        )


def _write_prior(folder: Path, counts: dict[str, int], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write the prior's counts and the meta with their total, each file atomically; returns the
    meta written."""
    atomic_write(folder / POPULARITY_FILE, json.dumps(counts))
    written = {**meta, "purchases": sum(counts.values())}
    atomic_write(folder / META_FILE, json.dumps(written, indent=2, sort_keys=True))
    return written


def _bm25s_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bm25s")
    except PackageNotFoundError:  # pragma: no cover - bm25s is a dependency
        return "unknown"


def tuning_rows(
    sequences: Mapping[str, Sequence[str]], item_query: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """Each shopper's last purchase as a (category query, item) row, and the sequences before
    those rows (what the prior may count while the weights are tuned). A shopper with a single
    purchase has no history before it and keeps it. Shoppers in sorted order."""
    rows: list[tuple[str, str]] = []
    before: list[list[str]] = []
    for user in sorted(sequences):
        seq = list(sequences[user])
        if len(seq) >= 2:
            before.append(seq[:-1])
            query = item_query.get(seq[-1])
            if query:
                rows.append((query, seq[-1]))
        else:
            before.append(seq)
    return rows, before


def fit_search(
    products: Mapping[str, Product] | Iterable[Product],
    sequences: Mapping[str, Sequence[str]],
    dense: DenseScorer,
    config: SearchConfig | None = None,
) -> FusedSearch:
    """Fit the fused search of a catalog on its purchase sequences.

    The weights are tuned on each shopper's last purchase in ``sequences`` with the prior counted
    from the purchases before those (``tuning_rows``); the served prior counts every purchase in
    ``sequences``. Give the evaluation the sequences cut before its split's targets
    (``graphs.offline.runner.fit_sequences``): for ``test`` the weights are then tuned on the
    ``valid`` targets, and the prior never sees a test target.
    """
    config = config or SearchConfig()
    catalog = dict(products) if isinstance(products, Mapping) else {p.item_id: p for p in products}
    started = time.perf_counter()
    rows, before = tuning_rows(sequences, catalog_queries(catalog))
    rows = [(q, item) for q, item in rows if item in catalog]
    if len(rows) > config.max_rows:
        keep = sorted(random.Random(config.seed).sample(range(len(rows)), config.max_rows))
        rows = [rows[i] for i in keep]
    search = FusedSearch(
        catalog.values(), Popularity.from_sequences(before), FusionWeights(), dense
    )
    tuning: dict[str, Any] = {"rows": len(rows), "k": config.k}
    if len(rows) >= config.min_rows:
        # The same purchases asked for by a shopper who names the brand (fusion's docstring).
        kinds = {q: "category" for q, _ in rows}
        branded = [
            (named, item)
            for query, item in rows
            if (brand := normalize_query(catalog[item].brand))
            and (named := f"{query} {brand}") not in kinds
        ]
        kinds.update({q: "category+brand" for q, _ in branded})
        queries = sorted(kinds)
        row_of = {q: i for i, q in enumerate(queries)}
        column = {item: j for j, item in enumerate(search.item_ids)}
        targets: list[list[int]] = [[] for _ in queries]
        for query, item in [*rows, *branded]:
            targets[row_of[query]].append(column[item])
        weights, rates = tune_weights(
            search.parts(queries),
            targets,
            groups=[kinds[q] for q in queries],
            k=config.k,
            grid=config.grid,
            primary="category",
        )
        tuning.update(
            {
                "queries": len(queries),
                "branded_rows": len(branded),
                **{f"hit_at_k/{kind}": round(rate, 4) for kind, rate in rates.items()},
            }
        )
    else:
        weights = FusionWeights()
        tuning["note"] = f"fewer than {config.min_rows} held-out purchases: default weights"
    tuning["seconds"] = round(time.perf_counter() - started, 1)
    return FusedSearch(
        catalog.values(),
        Popularity.from_sequences(sequences.values()),
        weights,
        dense,
        meta={
            "made_by": "agent.search.fit_search",
            "key": search_key(catalog.values(), sequences, config),
            "shoppers": len(sequences),
            "tuning": tuning,
        },
        _lexical=search._state.lexical,
    )
