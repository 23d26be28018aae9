"""Ingest: a data set into the catalog, the memory and the catalog statistics, in one function.

    queryagent ingest [--data DIR] [--home DIR]      # the CLI calls ``ingest``
    OfflineRunner.from_dataset(...)                  # so does graphs.offline.runner

One function for both, so an offline run (evaluation, export, GRPO, bench, precompute) and the
served graph see the same store: the memory's events and the catalog statistics that
``recall_memory`` reads for a shopper with no history (the most common categories). Order: the
data set is validated while it loads (before anything is written), the catalog is upserted (by
``item_id``, idempotent), then the memory, then the statistics, then (``_finish``, the one place
where an ingest ends) the ``fit`` hook: what is learned from the catalog's own sequences
(``agent.ranking``). ``queryagent ingest`` passes ``served_fit(home)``, which fits and stores the
served catalog's models; offline callers fit their own (the evaluation fits on the sequences
cut before its targets) and pass none.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from langgraph.store.base import BaseStore

from agent.catalog import DEFAULT_COLLECTION
from agent.nodes import CATALOG_STATS_KEY
from agent.ranking import fit_served
from agent.search import DEFAULT_SEARCH, prepare_search, search_dir
from memory_store import Dataset, UserMemory, category_name
from memory_store.fingerprint import catalog_version
from memory_store.namespaces import CATALOG_NAMESPACE
from memory_store.products import Product
from memory_store.queries import common_root

__all__ = [
    "FitHook",
    "IngestResult",
    "Upsertable",
    "catalog_stats",
    "catalog_version",
    "ingest",
    "served_fit",
]

# (dataset, catalog) -> (the fitted models, whether they were fitted now rather than reused).
FitHook = Callable[[Dataset, Any], tuple[Any, bool]]

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
    models: Any = None  # what the fit hook returned (agent.ranking.fit.CatalogModels), if any
    fitted: bool = False  # fitted by this ingest (False: none, or the stored ones still fit)
    fit_s: float = 0.0


def _query_of(category: str) -> str:
    return " ".join(category_name(category).lower().split())


def served_fit(
    home: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    search: str = DEFAULT_SEARCH,
) -> FitHook:
    """The fit hook of ``queryagent ingest``: fit the served catalog's search (``search``:
    ``"fused"`` is fitted and kept beside the catalog, ``"dense"`` is the catalog's own), then
    its ranking models on that search's results (``agent.ranking.fit_served``); each skipped when
    the stored one matches the data."""

    def fit(dataset: Dataset, catalog: Any) -> tuple[Any, bool]:
        collection = getattr(catalog, "collection_name", DEFAULT_COLLECTION)
        folder = search_dir(home, collection)
        t0 = time.perf_counter()
        served_search = prepare_search(
            search,
            catalog,
            folder,
            dataset.products,
            dataset.sequences,
            force=force,
        )
        if progress and search != "dense":
            print(f"search: {search} fitted in {time.perf_counter() - t0:.0f} s", flush=True)
        return fit_served(  # type: ignore[no-any-return]
            dataset.products,
            dataset.sequences,
            served_search,
            catalog,
            home,
            search_folder=folder,
            force=force,
            progress=progress,
        )

    return fit


def ingest(
    dataset: Dataset,
    store: BaseStore,
    catalog: Any = None,
    *,
    progress: bool = True,
    fit: FitHook | None = None,
) -> IngestResult:
    """Write ``dataset`` into ``catalog`` (when it is writable), the memory and the statistics.

    Args:
        dataset: a loaded (so already validated) data set.
        store: the memory's store (SQLite/Postgres from ``open_store``, or ``InMemoryStore``).
        catalog: the product catalog; upserted when it has ``upsert`` (``ChromaCatalog``), left
            as it is otherwise (a read-only or fake catalog, or one filled elsewhere).
        progress: tqdm bars for the catalog and the memory.
        fit: what to fit from the catalog's sequences once the rest is written (``served_fit``).

    Returns:
        What was written (``IngestResult``).
    """
    t0 = time.perf_counter()
    written = 0
    # The incomplete mark first (fit_pending: until the fit hook returns, every shopper is
    # refused with "the catalog's models are out of date"), so a kill at any step is never
    # silent.
    memory = UserMemory(store)
    memory.begin_ingest(dataset, fit_pending=fit is not None)
    if isinstance(catalog, Upsertable):
        written = catalog.upsert(dataset.products.values(), progress=progress)
    t_catalog = time.perf_counter() - t0
    stats = memory.ingest_dataset(dataset, progress=progress, fit_pending=fit is not None)
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
            # The taxonomy root that ground-truth queries drop (memory_store.queries): what a
            # purchase recorded later is scored against (training.outcomes).
            "query_root": common_root(p.category for p in dataset.products.values()),
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
    result = _finish(dataset, catalog, result, fit)
    if fit is not None:
        memory.finish_fit()
    return result


def _finish(
    dataset: Dataset, catalog: Any, result: IngestResult, fit: FitHook | None
) -> IngestResult:
    """Where every ingest ends (CLI and offline runner alike): the catalog, the memory and the
    statistics are written; what is fitted per catalog from its sequences comes last."""
    if fit is None:
        return result
    t0 = time.perf_counter()
    models, fitted = fit(dataset, catalog)
    fit_s = time.perf_counter() - t0
    return replace(
        result, models=models, fitted=fitted, fit_s=fit_s, seconds=result.seconds + fit_s
    )


def catalog_stats(store: BaseStore) -> dict[str, Any]:
    """The statistics the last ingest wrote (empty when nothing was ingested)."""
    item = store.get(CATALOG_NAMESPACE, CATALOG_STATS_KEY)
    return dict(item.value) if item is not None else {}
