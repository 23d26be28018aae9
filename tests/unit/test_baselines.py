"""Baselines on the tiny fixture; expected values worked out by hand from tiny-recbole."""

from __future__ import annotations

import pytest

from memory_store import Example
from tests.helpers.fakes import FakeCatalog
from training.evaluation.baselines import DenseQuery, LastCategory, Popular, QueryOracle, Swing
from training.queries import common_root

FILAMENT = "additive manufacturing products 3d printing supplies filament"
BEAKERS = "lab scientific products glassware labware beakers"
DUCT_TAPE = "tapes adhesives sealants adhesive duct tape"


@pytest.fixture()
def oracle(tiny_dataset) -> QueryOracle:
    return QueryOracle(
        tiny_dataset, common_root(p.category for p in tiny_dataset.products.values())
    )


def test_oracle_root_and_queries(oracle) -> None:
    assert oracle.root == "Industrial & Scientific"
    assert oracle.of_item("B000TINY01") == FILAMENT


def test_popular_is_the_most_frequent_training_target_query(oracle) -> None:
    # train targets: 5 beakers, 4 duct tapes, 3 filaments, 3 multimeters
    assert Popular(oracle).query == BEAKERS


def test_last_category(oracle, tiny_dataset) -> None:
    method = LastCategory(oracle, Popular(oracle))
    first = tiny_dataset.examples("test")[0]  # history: filament, filament, beaker, filament
    assert method([first]) == [FILAMENT]
    assert method([Example("u", (), "B000TINY01")]) == [BEAKERS]  # no history: popular


def test_swing_uses_co_occurrence(oracle) -> None:
    swing = Swing(oracle, LastCategory(oracle, Popular(oracle)))
    # multimeter B000TINY12 was bought with duct tapes B000TINY07 and B000TINY09 by two users
    assert swing.sim["B000TINY12"]["B000TINY07"] > 0
    assert swing.sim["B000TINY12"]["B000TINY09"] > 0
    assert "B000TINY04" not in swing.sim["B000TINY12"]
    assert swing([Example("u", ("B000TINY12",), "x")]) == [DUCT_TAPE]


def test_dense_query_picks_the_nearest_pool_query(oracle, tiny_dataset) -> None:
    method = DenseQuery(oracle, FakeCatalog(tiny_dataset.products.values()))
    assert FILAMENT in method.pool and DUCT_TAPE in method.pool
    history = ("B000TINY01", "B000TINY02", "B000TINY03")
    assert method([Example("u", history, "x")]) == [FILAMENT]
    assert method([Example("u", (), "x")]) == [None]
