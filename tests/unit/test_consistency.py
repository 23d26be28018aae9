"""The products-vs-profile score, on hand-built profiles and vectors."""

from __future__ import annotations

import pytest

from agent.consistency import W_BRAND, W_CATEGORY, W_SIMILARITY, category_overlap, score_products
from agent.records import RetrievedProduct
from memory_store import build_profile, events_from_sequence
from memory_store.products import Product

ROOT = "Industrial & Scientific "
BEAKERS = ROOT + "Lab & Scientific Products Glassware & Labware Beakers"
FLASKS = ROOT + "Lab & Scientific Products Glassware & Labware Flasks"
TAPE = ROOT + "Tapes, Adhesives & Sealants Adhesive Tapes Duct Tape"

PRODUCTS = {
    "b1": Product(item_id="b1", title="Beaker 250 ml", category=BEAKERS, brand="Eisco"),
    "b2": Product(item_id="b2", title="Beaker set", category=BEAKERS, brand="Eisco"),
    "t1": Product(item_id="t1", title="Duct tape", category=TAPE, brand="Gorilla"),
}


def retrieved(item_id: str, rank: int = 1) -> RetrievedProduct:
    return RetrievedProduct(**PRODUCTS[item_id].model_dump(), rank=rank, score=0.5)


@pytest.fixture()
def profile():
    # two beakers (Eisco): the interest graph has one category and one brand node
    return build_profile("u", events_from_sequence("u", ["b1", "b2"], PRODUCTS))


def test_category_overlap_is_the_shared_leading_share() -> None:
    assert category_overlap("a b c d", "a b c d") == 1.0
    assert category_overlap("a b x y", "a b c d") == 0.5
    assert category_overlap("x", "a b") == 0.0
    assert category_overlap("", "a") == 0.0


def test_matching_product_scores_every_signal(profile) -> None:
    b2 = [1.0, 0.0]
    report = score_products([retrieved("b1")], profile, embeddings={"b1": b2, "b2": b2})
    (p,) = report.products
    # the only category and brand node, so both matches are full; identical vectors
    assert p.category_match == 1.0 and p.brand_match == 1.0 and p.similarity == 1.0
    assert p.score == pytest.approx(W_CATEGORY + W_BRAND + W_SIMILARITY) and p.fits
    assert report.score == p.score
    assert report.feedback == "All checked products fit the shopper."


def test_misfit_is_named_in_the_feedback(profile) -> None:
    vectors = {"b1": [1.0, 0.0], "b2": [1.0, 0.0], "t1": [0.0, 1.0]}
    report = score_products([retrieved("b1"), retrieved("t1", 2)], profile, embeddings=vectors)
    tape = report.products[1]
    assert tape.category_match == 0.0 and tape.brand_match == 0.0 and tape.similarity == 0.0
    assert not tape.fits and tape.score == 0.0
    assert report.score == pytest.approx((report.products[0].score + 0.0) / 2)
    assert "1 of 2 products do not fit" in report.feedback
    assert "Duct tape" in report.feedback
    assert "Lab & Scientific Products Glassware & Labware Beakers" in report.feedback


def test_sibling_category_gets_partial_credit(profile) -> None:
    flask = RetrievedProduct(
        item_id="f1", title="Flask", category=FLASKS, brand="", rank=1, score=0.4
    )
    (p,) = score_products([flask], profile).products
    # 7 of the 8 category tokens after the root are shared ("Flasks" vs "Beakers")
    assert p.category_match == pytest.approx(7 / 8)
    assert p.brand_match == 0.0 and p.similarity == 0.0  # no vectors given


def test_no_products_scores_zero(profile) -> None:
    report = score_products([], profile)
    assert report.score == 0.0 and "no products" in report.feedback
