"""What the check learns from one catalog's own sequences, fitted at ingest and stored per catalog.

* ``vocabulary``: the catalog's category queries, what each retrieves, query transitions;
* ``nextitem``: the next-item model (a compact SASRec);
* ``candidates``: recall sources (memory, transitions, next-item, popular);
* ``features`` and ``ranker``: the learned check (LightGBM lambdarank, calibrated);
* ``fit``: ``fit_catalog`` and ``CatalogModels`` (save/load);
* ``threads``: the fit's CPU threads (``QUERYAGENT_FIT_THREADS``) and OpenMP's wait policy.

``graphs`` (ingest, the check node) and ``training`` (rewards, evaluation) use it; it imports
nothing from them.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.catalog import Catalog
from agent.ranking.fit import CatalogModels, fit_catalog, fit_key
from agent.search import Search, search_id, text_vectors
from memory_store.paths import queryagent_home

__all__ = [
    "RANKING_DIR",
    "RankingMissingError",
    "fit_on_search",
    "fit_served",
    "load_or_fit",
    "load_served",
    "served_dir",
]

RANKING_DIR = "ranking"


class RankingMissingError(RuntimeError):
    """The served catalog has no fitted ranking models yet (run ``queryagent ingest``)."""


def served_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where ``queryagent ingest`` writes the served catalog's fitted models."""
    return queryagent_home(home) / RANKING_DIR / "served"


def load_served(home: str | os.PathLike[str] | None = None):  # type: ignore[no-untyped-def]
    """The served catalog's ``CatalogModels``; one clear error when ingest has not fitted them."""
    folder = served_dir(home)
    if not CatalogModels.exists(folder):
        raise RankingMissingError(
            f"no fitted catalog models in {folder}: run `queryagent ingest` to fit them"
        )
    return CatalogModels.load(folder)


def load_or_fit(  # type: ignore[no-untyped-def]
    folder: str | os.PathLike[str],
    products,
    sequences,
    search_many,
    *,
    search: str = "dense",
    search_folder: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    item_vectors=None,
):
    """The catalog models stored in ``folder`` when they were fitted on these products and
    sequences, with the current ``FitConfig``, from this search's results (and with text
    vectors or without, as asked); else fitted (``fit.fit_catalog``; ``item_vectors``: the text
    start of the next-item model) and stored there. Returns ``(models, fitted)``. The one
    fit-or-reuse step of ingest, the evaluation and the offline runs.

    ``search_many`` is the search the fit learns from and caches per vocabulary query;
    ``search`` names it for the key and the stored meta: ``"dense"`` (the catalog's own), or
    ``"fused:<key>"`` (``agent.search.search_id``), kept in ``search_folder``. The models
    name it in their meta (``"search"``, and ``"search_dir"`` relative to ``folder``), so the
    graph serves with the search they were fitted with (``agent.search.search_of``).
    """
    folder = Path(folder)
    key = fit_key(products, sequences, search)
    if not force and CatalogModels.exists(folder):
        models = CatalogModels.load(folder)
        text_init = bool(models.meta.get("nextitem_text_init", False))
        if models.meta.get("key") == key and text_init == (item_vectors is not None):
            return models, False
    models = fit_catalog(
        products, sequences, search_many, progress=progress, item_vectors=item_vectors
    )
    models.meta["key"] = key
    models.meta["search"] = search.partition(":")[0]
    models.meta["search_id"] = search
    if search_folder is not None:
        models.meta["search_dir"] = os.path.relpath(
            Path(search_folder).absolute(), folder.absolute()
        )
    models.save(folder)
    return models, True


def fit_on_search(  # type: ignore[no-untyped-def]
    folder: str | os.PathLike[str],
    products,
    sequences,
    search: Search,
    catalog: Catalog,
    *,
    search_folder: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
):
    """``load_or_fit`` on ``search``'s results: its identity in the key (``search_id``), where a
    fused search is kept (``search_folder``, named in the models' meta), and the catalog's text
    vectors as the next-item model's start. The one step ingest, the evaluation and the offline
    runs take after fitting their search. Returns ``(models, fitted)``."""
    return load_or_fit(
        folder,
        products,
        sequences,
        search.search_many,
        search=search_id(search),
        search_folder=None if search.name == "dense" else search_folder,
        force=force,
        progress=progress,
        item_vectors=text_vectors(search, catalog),
    )


def fit_served(  # type: ignore[no-untyped-def]
    products,
    sequences,
    search: Search,
    catalog: Catalog,
    home: str | os.PathLike[str] | None = None,
    *,
    search_folder: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
):
    """Fit the served catalog's models at ingest into the home, on ``search``'s results
    (``fit_on_search``: skipped when the stored ones match the data and the search). Returns
    ``(models, fitted)``."""
    return fit_on_search(
        served_dir(home),
        products,
        sequences,
        search,
        catalog,
        search_folder=search_folder,
        force=force,
        progress=progress,
    )
