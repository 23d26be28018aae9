"""ChromaCatalog on a real PersistentClient with the real (packaged, offline) MiniLM."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.catalog import (
    EMBEDDING_DIM,
    Catalog,
    CatalogError,
    ChromaCatalog,
    MiniLMEmbeddingFunction,
)
from memory_store.products import Product

# Chroma's built-in (downloading) embedder must never run: tests/conftest.py.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_default_embedder")]

PRODUCTS = [
    Product(
        item_id="cable",
        title="USB-C fast charging cable 2m",
        category="Electronics Cables",
        brand="Anker",
    ),
    Product(
        item_id="knife",
        title="Stainless steel chef knife 8 inch",
        category="Home Kitchen",
        brand="Wusthof",
    ),
    Product(item_id="mat", title="Non-slip yoga mat", category="Sports Fitness"),
    Product(
        item_id="shoes", title="Trail running shoes", category="Sports Footwear", brand="Salomon"
    ),
    Product(item_id="lamp", title="LED desk lamp with dimmer", category="Home Office", brand=""),
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> ChromaCatalog:
    cat = ChromaCatalog(home=tmp_path_factory.mktemp("catalog-home"))
    assert cat.upsert(PRODUCTS, batch_size=2, progress=False) == len(PRODUCTS)
    return cat


def test_upsert_is_idempotent(catalog: ChromaCatalog) -> None:
    assert isinstance(catalog, Catalog)
    assert catalog.count() == len(PRODUCTS)
    # unchanged products are not written (nor embedded) again
    assert catalog.upsert(PRODUCTS, progress=False) == 0
    assert catalog.upsert(iter(PRODUCTS[:2]), batch_size=1, progress=False) == 0  # an iterator
    assert catalog.count() == len(PRODUCTS)


def test_reingest_writes_only_changed_products(tmp_path: Path) -> None:
    cat = ChromaCatalog(home=tmp_path)
    assert cat.upsert(PRODUCTS, progress=False) == len(PRODUCTS)
    changed = PRODUCTS[0].model_copy(update={"title": "A renamed product"})
    assert cat.upsert([changed, *PRODUCTS[1:]], progress=False) == 1
    assert cat.get([changed.item_id])[changed.item_id] == changed
    assert cat.search("A renamed product", k=1)[0].item_id == changed.item_id


def test_upsert_replaces_by_id_and_keeps_the_last_duplicate(tmp_path: Path) -> None:
    cat = ChromaCatalog(home=tmp_path)
    old = Product(item_id="x", title="Old title", category="A")
    new = Product(item_id="x", title="New title", category="B", brand="Z")
    assert cat.upsert([old, new], progress=False) == 1
    assert cat.get(["x"])["x"] == new


def test_search_ranks_the_relevant_product_first(catalog: ChromaCatalog) -> None:
    hits = catalog.search("cable to charge my phone", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].item_id == "cable"
    assert hits[0] == hits[0].model_copy()  # a full RetrievedProduct, metadata round-tripped
    assert (hits[0].title, hits[0].category, hits[0].brand) == (
        "USB-C fast charging cable 2m",
        "Electronics Cables",
        "Anker",
    )
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_search_many_is_one_list_per_query(catalog: ChromaCatalog) -> None:
    results = catalog.search_many(["japanese kitchen knife", "mat for yoga", "hiking shoes"], k=2)
    assert [r[0].item_id for r in results] == ["knife", "mat", "shoes"]
    assert all(len(r) == 2 for r in results)
    assert catalog.search_many([], k=2) == []
    assert results[1][0].brand == ""  # no brand: empty string, never None


def test_many_deep_searches_fit_in_sqlite(tmp_path: Path) -> None:
    """170 queries x 200 results each is more than SQLite's 32,766 variables in one statement
    (one Chroma query call failed with "too many SQL variables" on that); they go in chunks and
    return what one query at a time returns."""
    cat = ChromaCatalog(home=tmp_path)
    words = ["cable", "knife", "mat", "shoes", "lamp", "drill", "glove", "tape", "beaker", "filter"]
    cat.upsert(
        [
            Product(item_id=f"p{i}", title=f"{words[i % 10]} model {i}", category=words[i % 10])
            for i in range(200)
        ],
        progress=False,
    )
    queries = [f"{words[j % 10]} number {j}" for j in range(170)]
    results = cat.search_many(queries, k=200)
    assert len(results) == 170 and all(len(r) == 200 for r in results)
    for j in (0, 85, 169):
        alone = cat.search(queries[j], k=200)
        assert [p.item_id for p in results[j]] == [p.item_id for p in alone]


def test_exact_search_scores_every_product_and_breaks_ties_by_id(tmp_path: Path) -> None:
    """``exact=True`` (what a fit uses): every stored vector scored, read in pages, best first,
    equal scores in id order; the same products and order as a brute force over the stored
    vectors, and the approximate search's first hit on this small catalog."""
    import numpy as np

    cat = ChromaCatalog(home=tmp_path)
    twins = [Product(item_id=i, title="Nitrile gloves 100 pack", category="Gloves") for i in "zab"]
    cat.upsert([*PRODUCTS, *twins], progress=False)
    cat.SCAN_PAGE = 3  # three pages for eight products
    queries = ["gloves for the lab", "japanese kitchen knife", "running"]
    exact = cat.search_many(queries, k=8, exact=True)
    assert [p.item_id for p in exact[0][:3]] == ["a", "b", "z"]  # identical vectors: id order
    ids = [p.item_id for p in [*PRODUCTS, *twins]]
    stored = cat.embeddings(ids)
    vectors = np.array([stored[i] for i in ids])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for query, got in zip(queries, exact, strict=True):
        q = np.array(cat.embed([query])[0])
        sims = vectors @ (q / np.linalg.norm(q))
        want = sorted(range(len(ids)), key=lambda j: (-round(float(sims[j]), 5), ids[j]))
        assert [p.item_id for p in got] == [ids[j] for j in want]
        assert [p.rank for p in got] == list(range(1, 9))
        assert [p.score for p in got] == pytest.approx([float(sims[j]) for j in want], abs=1e-5)
        assert got[0].score == pytest.approx(cat.search(query, k=1)[0].score, abs=1e-5)
    assert exact[1][0].model_dump(exclude={"rank", "score"}) == PRODUCTS[1].model_dump()


def test_get_embeddings_and_embed(catalog: ChromaCatalog) -> None:
    got = catalog.get(["mat", "nope"])
    assert got == {"mat": PRODUCTS[2]}
    vectors = catalog.embeddings(["cable", "knife", "nope"])
    assert set(vectors) == {"cable", "knife"}
    assert all(len(v) == EMBEDDING_DIM for v in vectors.values())
    assert math.isclose(math.fsum(x * x for x in vectors["cable"]), 1.0, rel_tol=1e-4)
    [query] = catalog.embed(["USB-C fast charging cable 2m. Electronics Cables. Anker"])
    assert len(query) == EMBEDDING_DIM
    cosine = math.fsum(a * b for a, b in zip(query, vectors["cable"], strict=True))
    assert cosine > 0.99  # the stored vector is the document's embedding
    assert catalog.embeddings([]) == {}


def test_concurrent_searches(catalog: ChromaCatalog) -> None:
    queries = ["charging cable", "chef knife", "yoga", "running", "desk lamp"] * 4
    expected = [catalog.search(q, k=2) for q in queries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda q: catalog.search(q, k=2), queries)) == expected


def test_reopened_collection_uses_the_persisted_embedding_function(tmp_path: Path) -> None:
    import chromadb
    from chromadb.api.client import SharedSystemClient
    from chromadb.config import Settings

    ChromaCatalog(home=tmp_path).upsert(PRODUCTS, progress=False)
    SharedSystemClient.clear_system_cache()  # a fresh client reads the collection from disk

    reopened = ChromaCatalog(home=tmp_path)
    assert reopened.count() == len(PRODUCTS)
    assert reopened.search("dimmable lamp for my desk", k=1)[0].item_id == "lamp"

    # A plain Chroma client, given no embedding function, rebuilds ours from the configuration.
    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False)
    )
    collection = client.get_collection("products")
    ef_config = collection.configuration_json["embedding_function"]
    assert ef_config["name"] == MiniLMEmbeddingFunction.name()
    assert collection.configuration_json["hnsw"]["space"] == "cosine"
    result = collection.query(query_texts=["chef knife"], n_results=1, include=["distances"])
    assert result["ids"] == [["knife"]]


def test_missing_or_empty_catalog_says_to_ingest(tmp_path: Path) -> None:
    cat = ChromaCatalog(home=tmp_path)
    assert cat.count() == 0
    assert cat.get(["x"]) == {}
    assert cat.embeddings(["x"]) == {}
    with pytest.raises(CatalogError, match="does not exist.*queryagent ingest"):
        cat.search("anything")
    assert cat.upsert([], progress=False) == 0  # creates the collection, writes nothing
    with pytest.raises(CatalogError, match="is empty.*queryagent ingest"):
        cat.search_many(["anything"])


def test_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUERYAGENT_CHROMA_HOST", raising=False)
    local = ChromaCatalog.from_env(home=tmp_path)
    assert local.location == str(tmp_path.resolve() / "chroma")
    monkeypatch.setenv("QUERYAGENT_CHROMA_HOST", "localhost")
    monkeypatch.setenv("QUERYAGENT_CHROMA_PORT", "eighty")
    with pytest.raises(CatalogError, match="QUERYAGENT_CHROMA_PORT"):
        ChromaCatalog.from_env(home=tmp_path)
    monkeypatch.setenv("QUERYAGENT_CHROMA_PORT", "1")  # nothing listens on port 1
    with pytest.raises(CatalogError, match="cannot reach the Chroma server at http://localhost:1"):
        ChromaCatalog.from_env(home=tmp_path)
