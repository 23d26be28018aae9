"""Ingest: a data set into the catalog, the memory and the catalog statistics, in one function.

    queryagent ingest [--data DIR] [--home DIR]      # the CLI calls ``ingest``
    OfflineRunner.from_dataset(...)                  # so does the offline runner (graphs.runner)

One function for both, so an offline run (evaluation, export, GRPO, bench, precompute) and the
served graph see the same store: the memory's events and the catalog statistics that
``recall_memory`` reads for a shopper with no history (the most common categories). Order: the
data set is validated while it loads (before anything is written), the catalog is upserted (by
``item_id``, idempotent), then the memory, then the statistics; ``_finish`` is the one place where
an ingest ends, so steps fitted per catalog go there.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from langgraph.store.base import BaseStore

from agent.nodes import CATALOG_NAMESPACE, CATALOG_STATS_KEY
from memory_store import Dataset, UserMemory, category_name
from memory_store.products import Product

__all__ = ["IngestResult", "Upsertable", "catalog_stats", "catalog_version", "ingest"]

# How many of the catalog's most common categories a cold-start shopper is offered.
POPULAR_CATEGORIES = 10


@runtime_checkable
class Upsertable(Protocol):
    """A catalog that can be written (``ChromaCatalog``); read-only catalogs are left alone."""

    def upsert(
        self, products: Iterable[Product], batch_size: int = ..., progress: bool = ...
    ) -> int:
        """Add or replace products by ``item_id``; returns how many records were written."""
        ...


@dataclass(frozen=True)
class IngestResult:
    """What one ingest wrote, and how long it took (seconds, wall clock)."""

    dataset: str
    products: int
    products_written: int  # new or changed in the catalog (0 when no writable catalog was given)
    users: int
    events: int
    catalog_s: float
    seconds: float
    catalog_version: str


def catalog_version(products: Iterable[Product]) -> str:
    """A short digest of the products' documents (what the catalog embeds), order-free."""
    digest = hashlib.sha256()
    for document in sorted(p.document() for p in products):
        digest.update(document.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _query_of(category: str) -> str:
    return " ".join(category_name(category).lower().split())


def ingest(
    dataset: Dataset, store: BaseStore, catalog: Any = None, *, progress: bool = True
) -> IngestResult:
    """Write ``dataset`` into ``catalog`` (when it is writable), the memory and the statistics.

    Args:
        dataset: a loaded (so already validated) data set.
        store: the memory's store (SQLite/Postgres from ``open_store``, or ``InMemoryStore``).
        catalog: the product catalog; upserted when it has ``upsert`` (``ChromaCatalog``), left
            as it is otherwise (a read-only or fake catalog, or one filled elsewhere).
        progress: tqdm bars for the catalog and the memory.

    Returns:
        What was written (``IngestResult``).
    """
    t0 = time.perf_counter()
    written = 0
    if isinstance(catalog, Upsertable):
        written = catalog.upsert(dataset.products.values(), progress=progress)
    t_catalog = time.perf_counter() - t0
    stats = UserMemory(store).ingest_dataset(dataset, progress=progress)
    version = catalog_version(dataset.products.values())
    counts = Counter(p.category for p in dataset.products.values() if p.category)
    store.put(
        CATALOG_NAMESPACE,
        CATALOG_STATS_KEY,
        {
            "popular_categories": [_query_of(c) for c, _ in counts.most_common(POPULAR_CATEGORIES)],
            "data": str(dataset.root),
            "dataset": dataset.name,
            "products": len(dataset.products),
            "catalog_version": version,
        },
    )
    result = IngestResult(
        dataset=dataset.name,
        products=len(dataset.products),
        products_written=written,
        users=stats.users,
        events=stats.events,
        catalog_s=t_catalog,
        seconds=time.perf_counter() - t0,
        catalog_version=version,
    )
    return _finish(dataset, store, catalog, result)


def _finish(dataset: Dataset, store: BaseStore, catalog: Any, result: IngestResult) -> IngestResult:
    """Where every ingest ends (CLI and offline runner alike): the catalog and the memory are
    written. Steps fitted per catalog from its sequences (the ``fit`` hook) belong here, so every
    caller gets them."""
    return result


def catalog_stats(store: BaseStore) -> dict[str, Any]:
    """The statistics the last ingest wrote (empty when nothing was ingested)."""
    item = store.get(CATALOG_NAMESPACE, CATALOG_STATS_KEY)
    return dict(item.value) if item is not None else {}
