"""The store's search over the catalog, one for every caller (the check, the evaluation,
``recommend``, precompute, the GRPO reward).

Two searches, chosen by name (``SEARCH_MODES``):

* ``"fused"`` (the default): lexical BM25 over the category path, title and brand
  (``lexical``, with ``bm25s``), fused with the catalog's MiniLM dense similarity (``dense``)
  and a popularity prior (``popularity``) by a linear blend whose weights are chosen on
  held-out purchases (``fusion``); fitted per catalog (``fit_search``) and kept beside the
  catalog in the home (``search_dir``).
* ``"dense"``: the Chroma catalog's own query, exactly the search before the fused one.

    from agent.search import open_search
    search = open_search(catalog, "fused", home=home)   # or "dense"
    search.search("microscope slides", k=10)             # -> list[RetrievedProduct]
    search.search_many(queries, k=10)                    # one list per query
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from agent.catalog import DEFAULT_COLLECTION, Catalog
from agent.search.dense import CatalogDenseScorer, DenseSearch
from agent.search.fused import FusedSearch, SearchConfig, fit_search, search_key
from agent.search.fusion import FusionWeights
from agent.search.popularity import Popularity
from agent.search.protocol import DenseScorer, Search
from memory_store.paths import queryagent_home
from memory_store.products import Product

__all__ = [
    "DEFAULT_SEARCH",
    "SEARCH_DIR",
    "SEARCH_MODES",
    "CatalogDenseScorer",
    "DenseScorer",
    "DenseSearch",
    "FusedSearch",
    "FusionWeights",
    "Popularity",
    "Search",
    "SearchConfig",
    "SearchError",
    "SearchMissingError",
    "fit_search",
    "load_or_fit_search",
    "open_search",
    "prepare_search",
    "search_dir",
    "search_id",
    "search_of",
    "text_vectors",
    "search_key",
]

SEARCH_DIR = "search"
SEARCH_MODES = ("fused", "dense")
DEFAULT_SEARCH = "fused"


class SearchError(ValueError):
    """A search request a user can get wrong (an unknown search name); one line for a CLI."""


class SearchMissingError(RuntimeError):
    """The catalog has no fitted search yet (run ``queryagent ingest``)."""


def search_dir(
    home: str | os.PathLike[str] | None = None, collection: str = DEFAULT_COLLECTION
) -> Path:
    """Where a catalog's fused search is kept: ``<home>/search/<collection>``, beside the
    catalog's Chroma folder."""
    return queryagent_home(home) / SEARCH_DIR / collection


def open_search(
    catalog: Catalog,
    mode: str = DEFAULT_SEARCH,
    *,
    home: str | os.PathLike[str] | None = None,
    folder: str | os.PathLike[str] | None = None,
) -> Search:
    """The named search over ``catalog``: ``"dense"`` needs nothing more; ``"fused"`` loads the
    search fitted for it (``folder``, by default ``search_dir(home, <catalog's collection>)``).

    Raises:
        SearchError: an unknown name.
        SearchMissingError: no fused search was fitted for this catalog.
    """
    if mode == "dense":
        return DenseSearch(catalog)
    if mode != "fused":
        raise SearchError(f"unknown search {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    if folder is None:
        collection = getattr(catalog, "collection_name", DEFAULT_COLLECTION)
        folder = search_dir(home, collection)
    if not FusedSearch.exists(folder):
        raise SearchMissingError(
            f"no fitted search in {folder}: run `queryagent ingest` to fit it, or use the "
            "dense search (search='dense')"
        )
    return FusedSearch.load(folder, CatalogDenseScorer(catalog))


def load_or_fit_search(
    folder: str | os.PathLike[str],
    products: Mapping[str, Product] | Iterable[Product],
    sequences: Mapping[str, Sequence[str]],
    dense: DenseScorer,
    config: SearchConfig | None = None,
    *,
    force: bool = False,
) -> tuple[FusedSearch, bool]:
    """The search stored in ``folder`` when it was fitted on these products and sequences with
    this configuration; else fitted and stored there. Returns ``(search, fitted)``: the one
    fit-or-reuse step for ingest and for the evaluation (whose sequences are cut before the
    evaluated split's targets)."""
    catalog = list(products.values()) if isinstance(products, Mapping) else list(products)
    key = search_key(catalog, sequences, config)
    if not force and FusedSearch.exists(folder):
        search = FusedSearch.load(folder, dense)
        if search.meta.get("key") == key:
            return search, False
    search = fit_search(catalog, sequences, dense, config)
    search.save(folder)
    return search, True


def search_id(search: Search) -> str:
    """What a fit that learned from ``search``'s results depends on (``agent.ranking``'s key):
    ``"dense"``, or ``"fused:<key>"`` with the fused search's own fit key."""
    if search.name == "dense":
        return "dense"
    key = getattr(search, "meta", {}).get("key")
    return f"{search.name}:{key}" if key else search.name


def prepare_search(
    mode: str,
    catalog: Catalog,
    folder: str | os.PathLike[str],
    products: Mapping[str, Product] | Iterable[Product],
    sequences: Mapping[str, Sequence[str]],
    *,
    force: bool = False,
) -> Search:
    """The named search over ``catalog``, fitted on ``sequences`` where it needs a fit (the
    fused one, kept in ``folder`` and reused while the data match): what ingest and the
    evaluation call before fitting the ranking models on its results.

    Raises:
        SearchError: an unknown name.
    """
    if mode == "dense":
        return DenseSearch(catalog)
    if mode != "fused":
        raise SearchError(f"unknown search {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    search, _ = load_or_fit_search(
        folder, products, sequences, CatalogDenseScorer(catalog), force=force
    )
    return search


def search_of(
    meta: Mapping[str, object], folder: str | os.PathLike[str] | None, catalog: Catalog
) -> Search:
    """The search that fitted ranking models (``agent.ranking``) learned from, as their
    ``meta`` names it (``"search"``, and ``"search_dir"`` relative to their ``folder``); models
    that name none were fitted on the dense search.

    Raises:
        SearchMissingError: the models name a fused search that is not where they say.
    """
    mode = str(meta.get("search") or "dense")
    if mode == "dense":
        return DenseSearch(catalog)
    relative = meta.get("search_dir")
    if not relative or folder is None:
        raise SearchMissingError(
            f"the catalog's models were fitted on the {mode} search but do not say where it is "
            "kept: run `queryagent ingest --refit`"
        )
    return open_search(catalog, mode, folder=Path(folder) / str(relative))


def text_vectors(search: Search, catalog: Catalog) -> Callable[[Sequence[str]], np.ndarray]:
    """The catalog's stored MiniLM vectors of given item ids (L2-normalized; zeros for an id it
    lacks): the next-item model's text start (``agent.ranking.fit``'s ``item_vectors``). Read
    through the fused search's dense scorer when it has one, so they are read once."""
    dense = getattr(search, "dense", None)
    scorer = dense if isinstance(dense, CatalogDenseScorer) else CatalogDenseScorer(catalog)
    return scorer.item_matrix
