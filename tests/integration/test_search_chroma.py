"""The catalog search (agent.search) on real Chroma with the real, packaged MiniLM (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.catalog import ChromaCatalog
from agent.search import (
    CatalogDenseScorer,
    DenseSearch,
    FusedSearch,
    load_or_fit_search,
    open_search,
    search_dir,
)
from memory_store.products import Product

# Chroma's built-in (downloading) embedder must never run: tests/conftest.py.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_default_embedder")]

ROOT = "Industrial & Scientific"
MICROSCOPES = f"{ROOT} Lab & Scientific Products Microscopes"
BEAKERS = f"{ROOT} Lab & Scientific Products Glassware Beakers"
GLOVES = f"{ROOT} Occupational Health & Safety Products Gloves"
TAPE = f"{ROOT} Tapes Adhesives Duct Tape"
PRODUCTS = [
    Product(item_id="m1", title="Compound microscope 40x-1000x", category=MICROSCOPES),
    Product(item_id="m2", title="Kids beginner microscope kit", category=MICROSCOPES),
    Product(item_id="b1", title="Low form glass beaker set", category=BEAKERS, brand="Eisco"),
    Product(item_id="b2", title="Borosilicate griffin beakers", category=BEAKERS, brand="Pyrex"),
    Product(item_id="g1", title="Nitrile exam gloves, 100 count", category=GLOVES),
    Product(item_id="g2", title="Cut resistant work gloves", category=GLOVES, brand="NoCry"),
    Product(item_id="t1", title="Silver duct tape 60 yd", category=TAPE, brand="Gorilla"),
    Product(item_id="t2", title="Heavy duty duct tape", category=TAPE, brand="3M"),
]
CATEGORY = {p.item_id: p.category for p in PRODUCTS}
# Shoppers: the popular tape (t1), the gloves and the beakers are bought most.
SEQUENCES = {
    **{f"tape{i}": ["t1", "g1", "t1"] for i in range(15)},
    **{f"lab{i}": ["b1", "m1", "b2"] for i in range(15)},
    **{f"glove{i}": ["g1", "g2"] for i in range(5)},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("search-home")


@pytest.fixture(scope="module")
def catalog(home: Path) -> ChromaCatalog:
    cat = ChromaCatalog(home=home)
    cat.upsert(PRODUCTS, progress=False)
    return cat


QUERIES = [
    "lab scientific products microscopes",
    "tapes adhesives duct tape",
    "something to protect my hands",
    "gift for a young scientist",
]


def test_the_dense_option_is_todays_catalog_search(catalog: ChromaCatalog) -> None:
    dense = open_search(catalog, "dense")
    assert isinstance(dense, DenseSearch)
    for exact in (False, True):
        got = dense.search_many(QUERIES, k=5, exact=exact)
        assert got == catalog.search_many(QUERIES, k=5, exact=exact)
        assert [[p.item_id for p in r] for r in got] == [
            [p.item_id for p in catalog.search(q, k=5)] for q in QUERIES
        ]


def test_the_fused_dense_part_is_the_catalogs_similarity(catalog: ChromaCatalog) -> None:
    ids = sorted(CATEGORY)
    scores = CatalogDenseScorer(catalog).scores(QUERIES, ids)
    for row, results in zip(
        scores, catalog.search_many(QUERIES, k=len(ids), exact=True), strict=True
    ):
        chroma = {p.item_id: p.score for p in results}
        np.testing.assert_allclose(row, [chroma[i] for i in ids], atol=1e-5)


def test_fitted_fused_search_serves_vocabulary_and_free_text_queries(
    catalog: ChromaCatalog, home: Path
) -> None:
    folder = search_dir(home)
    fitted, was_fitted = load_or_fit_search(
        folder, PRODUCTS, SEQUENCES, CatalogDenseScorer(catalog)
    )
    assert was_fitted and fitted.meta["tuning"]["rows"] == 35
    search = open_search(catalog, "fused", home=home)  # what the callers load
    assert isinstance(search, FusedSearch) and search.weights == fitted.weights
    top = search.search("lab scientific products microscopes", k=2)
    assert {p.item_id for p in top} == {"m1", "m2"}
    # a user's own words: the category that matches, though the words differ ("microscope"
    # against the "Microscopes" category; "gloves" is in both)
    for text, category in [
        ("a microscope for my daughter", MICROSCOPES),
        ("disposable gloves for the lab", GLOVES),
        ("strong tape to fix a hose", TAPE),
    ]:
        results = search.search(text, k=2)
        assert [CATEGORY[p.item_id] for p in results] == [category, category], text
    # words no field holds: the dense side decides among the nearest, not the bestsellers
    assert CATEGORY[search.search("keep my fingers safe", k=1)[0].item_id] == GLOVES
