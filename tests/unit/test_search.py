"""The fused catalog search (agent.search) on a tiny catalog, with the fake catalog's word-hash
vectors as the dense side (tests/integration/test_search_chroma.py runs real Chroma and MiniLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.search import (
    CatalogDenseScorer,
    DenseSearch,
    FusedSearch,
    FusionWeights,
    Popularity,
    Search,
    SearchConfig,
    SearchError,
    SearchMissingError,
    fit_search,
    load_or_fit_search,
    open_search,
    search_dir,
)
from agent.search.fused import tuning_rows
from agent.search.fusion import top_k, tune_weights
from agent.search.lexical import FieldIndex, s_stem, tokenize
from memory_store.events import BehaviorEvent
from memory_store.products import Product
from memory_store.queries import catalog_queries
from tests.helpers.fakes import FakeCatalog

ROOT = "Industrial & Scientific"
MICROSCOPES = f"{ROOT} Lab & Scientific Products Microscopes"
BEAKERS = f"{ROOT} Lab & Scientific Products Glassware Beakers"
DUCT = f"{ROOT} Tapes Adhesives Duct Tape"
MASKING = f"{ROOT} Tapes Adhesives Masking Tape"

PRODUCTS = [
    Product(item_id="b1", title="Glass beaker set 250 ml", category=BEAKERS, brand="Pyrex"),
    Product(item_id="b2", title="Beaker for microscope slide staining", category=BEAKERS),
    Product(item_id="d1", title="Duct tape, silver", category=DUCT, brand="Gorilla"),
    Product(item_id="d2", title="Heavy duty duct tape roll", category=DUCT, brand="3M"),
    Product(item_id="k1", title="Blue painter's masking tape", category=MASKING, brand="3M"),
    Product(item_id="k2", title="Masking tape general purpose", category=MASKING, brand="Scotch"),
    Product(item_id="m1", title="Compound microscope 40x-1000x", category=MICROSCOPES),
    Product(item_id="m2", title="Student microscope kit", category=MICROSCOPES, brand="Celestron"),
]
CATEGORY = {p.item_id: p.category for p in PRODUCTS}


def make(
    products: list[Product] = PRODUCTS,
    counts: dict[str, int] | None = None,
    weights: FusionWeights | None = None,
) -> FusedSearch:
    catalog = FakeCatalog(products)
    return FusedSearch(
        products, Popularity(counts or {}), weights or FusionWeights(), CatalogDenseScorer(catalog)
    )


def ids(results: list) -> list[str]:  # type: ignore[type-arg]
    return [r.item_id for r in results]


def test_a_category_query_returns_that_category_first() -> None:
    search = make()
    assert isinstance(search, Search)
    queries = catalog_queries({p.item_id: p for p in PRODUCTS})
    assert queries["m1"] == "lab scientific products microscopes"
    results = search.search(queries["m1"], k=4)
    # b2's title says "microscope", its category shares "lab scientific products": still after
    assert ids(results)[:2] == ["m1", "m2"] or ids(results)[:2] == ["m2", "m1"]
    assert [r.rank for r in results] == [1, 2, 3, 4]
    assert results[0].score >= results[1].score >= results[2].score
    for query in set(queries.values()):
        top = search.search(query, k=2)
        assert all(queries[r.item_id] == query for r in top), query


def test_a_brand_word_moves_that_brands_items_up() -> None:
    search = make()
    assert ids(search.search("tapes adhesives duct tape", k=2)) == ["d1", "d2"]  # shorter title
    assert ids(search.search("tapes adhesives duct tape 3m", k=2)) == ["d2", "d1"]
    assert ids(search.search("masking tape scotch", k=1)) == ["k2"]
    assert ids(search.search("masking tape 3m", k=1)) == ["k1"]


def test_the_popularity_prior_breaks_ties() -> None:
    twins = [
        Product(item_id="a", title="Nitrile gloves", category=f"{ROOT} Safety Gloves"),
        Product(item_id="b", title="Nitrile gloves", category=f"{ROOT} Safety Gloves"),
        Product(item_id="c", title="Safety goggles", category=f"{ROOT} Safety Eyewear"),
    ]
    assert ids(make(twins).search("safety gloves", k=2)) == ["a", "b"]  # no prior: by id
    popular_b = make(twins, counts={"b": 5, "a": 1})
    assert ids(popular_b.search("safety gloves", k=2)) == ["b", "a"]
    # the prior orders equals; it does not lift an item over a better match
    assert ids(make(twins, counts={"c": 50}).search("safety gloves", k=2)) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I need a good microscope for my kids", MICROSCOPES),
        ("masking tape for painting walls", MASKING),
        ("some glass beakers", BEAKERS),
    ],
)
def test_a_free_text_query_returns_products_of_the_matching_category(
    text: str, category: str
) -> None:
    results = make(counts={"d1": 9, "d2": 9}).search(text, k=2)
    assert [CATEGORY[i] for i in ids(results)] == [category, category]


def test_the_dense_option_is_the_catalogs_own_search() -> None:
    catalog = FakeCatalog(PRODUCTS)
    dense = open_search(catalog, "dense")
    assert isinstance(dense, DenseSearch) and dense.name == "dense"
    queries = ["duct tape", "lab scientific products microscopes", "gift for a chemist"]
    for exact in (False, True):
        assert dense.search_many(queries, k=5, exact=exact) == catalog.search_many(
            queries, k=5, exact=exact
        )
    assert dense.search("duct tape", k=3) == catalog.search("duct tape", k=3)


def test_unknown_or_missing_search_is_one_clear_error(tmp_path: Path) -> None:
    catalog = FakeCatalog(PRODUCTS)
    with pytest.raises(SearchError, match="unknown search 'bm25'; choose one of fused, dense"):
        open_search(catalog, "bm25", home=tmp_path)
    with pytest.raises(SearchMissingError, match="run `queryagent ingest`"):
        open_search(catalog, "fused", home=tmp_path)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    search = make(counts={"k2": 3, "m1": 1}, weights=FusionWeights(title=0.5, popularity=0.35))
    folder = search_dir(tmp_path)
    search.save(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["products"]  # no temp left
    meta = json.loads((folder / "search.meta.json").read_text())
    assert meta["products"] == len(PRODUCTS) and meta["purchases"] == 4
    assert meta["weights"]["title"] == 0.5
    loaded = open_search(FakeCatalog(PRODUCTS), "fused", home=tmp_path)
    assert isinstance(loaded, FusedSearch)
    assert loaded.weights == search.weights and loaded.popularity == search.popularity
    queries = ["masking tape", "microscope", "tapes adhesives duct tape 3m", ""]
    assert loaded.search_many(queries, k=8) == search.search_many(queries, k=8)


def test_popularity_counts_only_events_before_the_cutoff() -> None:
    def event(item: str, seq: int, ts: float | None, kind: str = "purchase") -> BehaviorEvent:
        return BehaviorEvent(user_id="u", seq=seq, item_id=item, kind=kind, timestamp=ts)  # type: ignore[arg-type]

    events = [
        event("a", 0, 100.0),
        event("a", 1, 199.0),
        event("b", 2, 200.0),  # at the cutoff: not before it
        event("c", 3, None),  # no time: cannot be shown to precede it
        event("d", 4, 50.0, kind="click"),  # not a purchase
    ]
    assert dict(Popularity.from_events(events, cutoff=200.0).counts) == {"a": 2}
    assert dict(Popularity.from_events(events).counts) == {"a": 2, "b": 1, "c": 1}
    # the fit tunes on each shopper's last purchase with the prior counted before it
    sequences = {"u1": ["m1", "m2", "d1"], "u2": ["d1", "d2"], "u3": ["k1"]}
    rows, before = tuning_rows(sequences, catalog_queries({p.item_id: p for p in PRODUCTS}))
    assert rows == [("tapes adhesives duct tape", "d1"), ("tapes adhesives duct tape", "d2")]
    assert before == [["m1", "m2"], ["d1"], ["k1"]]
    assert dict(Popularity.from_sequences(before).counts) == {"m1": 1, "m2": 1, "d1": 1, "k1": 1}


def test_fit_tunes_weights_on_held_out_purchases_and_serves_every_purchase() -> None:
    catalog = FakeCatalog(PRODUCTS)
    # Duct tape shoppers end on the 3M roll, bought by nobody before: the prior counted before
    # the held-out purchases favours d1, so the tuned blend turns the prior off.
    sequences = {f"u{i}": ["d1", "d1", "d2"] for i in range(30)}
    config = SearchConfig(k=1, min_rows=5)
    search = fit_search(PRODUCTS, sequences, CatalogDenseScorer(catalog), config)
    tuning = search.meta["tuning"]
    assert tuning["rows"] == 30 and tuning["branded_rows"] == 30 and tuning["queries"] == 2
    assert tuning["hit_at_k/category+brand"] == 1.0  # "... duct tape 3m" shows d2 first
    assert search.weights.popularity == 0.0
    assert ids(search.search("tapes adhesives duct tape 3m", k=1)) == ["d2"]
    assert dict(search.popularity.counts) == {"d1": 60, "d2": 30}  # served: every purchase
    assert search.meta["key"]
    # too few rows: the default weights, and the meta says why
    few = fit_search(PRODUCTS, {"u": ["d1", "d2"]}, CatalogDenseScorer(catalog))
    assert few.weights == FusionWeights() and "default weights" in few.meta["tuning"]["note"]


def test_tune_weights_picks_the_blend_that_shows_the_held_out_items() -> None:
    # two items tie on the category; the held-out purchases are of the popular one at k=1
    parts = {
        "category": np.array([[1.0, 1.0, 0.0]], dtype=np.float32),
        "title": np.zeros((1, 3), dtype=np.float32),
        "brand": np.zeros((1, 3), dtype=np.float32),
        "dense": np.array([[0.0, 0.0, 0.9]], dtype=np.float32),
        "popularity": np.array([[0.1, 1.0, 0.0]], dtype=np.float32),
    }
    weights, rates = tune_weights(parts, [[1, 1]], k=1)
    assert rates == {"all": 1.0, "objective": 1.0} and weights.popularity > 0
    assert weights.dense < 1.0  # a dense weight of 1 would put item 2 first
    _, without_prior = tune_weights(parts, [[1, 1]], k=1, grid={"popularity": (0.0,)})
    assert without_prior["objective"] == 0.0
    # kinds of query count equally, whatever their number of rows
    two = {name: np.repeat(m, 2, axis=0) for name, m in parts.items()}
    _, mixed = tune_weights(two, [[1, 1, 1], [0]], groups=["a", "b"], k=1, grid={})
    assert mixed == {"a": 0.0, "b": 1.0, "objective": 0.5}
    with pytest.raises(ValueError, match="1 groups for 2 query rows"):
        tune_weights(two, [[1], [0]], groups=["a"])


def test_load_or_fit_reuses_a_matching_fit(tmp_path: Path) -> None:
    dense = CatalogDenseScorer(FakeCatalog(PRODUCTS))
    sequences = {"u1": ["m1", "m2"], "u2": ["k1", "k2", "k1"]}
    folder = tmp_path / "search"
    first, fitted = load_or_fit_search(folder, PRODUCTS, sequences, dense)
    assert fitted
    again, fitted_again = load_or_fit_search(folder, PRODUCTS, sequences, dense)
    assert not fitted_again and again.meta["key"] == first.meta["key"]
    _, refit = load_or_fit_search(folder, PRODUCTS, {**sequences, "u3": ["d1"]}, dense)
    assert refit


def test_added_products_and_events_keep_the_search_current(tmp_path: Path) -> None:
    catalog = FakeCatalog(PRODUCTS)
    weights = FusionWeights(popularity=0.5)
    search = FusedSearch(PRODUCTS, Popularity({"d1": 1}), weights, CatalogDenseScorer(catalog))
    new = Product(item_id="t9", title="Digital thermometer", category=f"{ROOT} Lab Thermometers")
    assert ids(search.search("thermometer", k=1)) != ["t9"]
    catalog.products[new.item_id] = new  # ingest writes the catalog, then the search
    assert search.add_products([new, PRODUCTS[0]]) == 1  # unchanged products are not counted
    assert ids(search.search("lab thermometers", k=1)) == ["t9"]
    assert ids(search.search("tapes adhesives duct tape", k=1)) == ["d1"]
    assert (
        search.add_events([BehaviorEvent(user_id="u", seq=s, item_id="d2") for s in range(3)]) == 4
    )
    assert ids(search.search("tapes adhesives duct tape", k=1)) == ["d2"]
    folder = tmp_path / "s"
    search.save(folder)
    search.add_events([BehaviorEvent(user_id="u", seq=3, item_id="d1")])
    search.save_popularity(folder)
    loaded = FusedSearch.load(folder, CatalogDenseScorer(catalog))
    assert dict(loaded.popularity.counts) == {"d1": 2, "d2": 3}
    assert "t9" in loaded.item_ids


def test_ranking_helpers() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert [t.tolist() for t in top_k(scores, 3)] == [[1, 0, 2], [0, 1, 2]]
    assert [t.tolist() for t in top_k(scores, 10)] == [[1, 0, 2, 3], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="k must be >= 1"):
        make().search("tape", k=0)
    assert make().search_many([], k=3) == []
    assert [s_stem(w) for w in ["batteries", "tubes", "glass", "virus", "gas", "boxes"]] == [
        "battery",
        "tube",
        "glass",
        "virus",
        "gas",
        "boxe",
    ]
    assert tokenize("A gift for the Lab's microscopes!") == ["gift", "lab", "microscope"]
    empty_brands = FieldIndex.build([p.model_copy(update={"brand": ""}) for p in PRODUCTS])
    assert empty_brands.indexes["brand"] is None
    assert not empty_brands.scores(["3m"])["brand"].any()


def test_a_batch_is_scored_in_chunks_with_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.search.fused as fused

    search = make(counts={"d2": 2})
    queries = ["duct tape", "microscope", "masking tape 3m", "beakers", "tape"]
    whole = search.search_many(queries, k=4)
    monkeypatch.setattr(fused, "QUERIES_PER_CHUNK", 2)
    assert search.search_many(queries, k=4) == whole
    assert whole == [search.search(q, k=4) for q in queries]


def test_shown_targets_agrees_with_top_k_ties_included() -> None:
    """The tuning's vectorized membership test says what ``top_k``'s page shows, ties too."""
    import numpy as np

    from agent.search.fusion import shown_targets

    rng = np.random.default_rng(0)
    # Few distinct values, so many rows tie at their k-th best score.
    scores = rng.integers(0, 4, size=(60, 40)).astype(np.float32)
    rows = np.repeat(np.arange(60), 40)
    cols = np.tile(np.arange(40), 60)
    for k in (1, 3, 10, 40, 50):
        pages = top_k(scores, k)
        expected = np.array([c in set(pages[r].tolist()) for r, c in zip(rows, cols, strict=True)])
        assert (shown_targets(scores, rows, cols, k) == expected).all(), k
