"""The fingerprints of products and sequences stay byte-identical (``memory_store.fingerprint``).

They name fitted ranking models, evaluation caches tracked in git and the catalog version stamped
on precomputed recommendations: a digest that moved would orphan all of them. The values below
are the ones the code gave before the fingerprints were gathered into one module.
"""

from __future__ import annotations

import pytest

from graphs.offline.runner import fit_sequences
from memory_store.fingerprint import catalog_version, data_fingerprint, dataset_fingerprint
from memory_store.products import Product

# Out of id order, one empty category, one empty brand, one non-ASCII title.
PRODUCTS = {
    "B2": Product(item_id="B2", title="Café crème", category="Food Drinks", brand=""),
    "A1": Product(item_id="A1", title="Duct tape", category="", brand="3M"),
}
SEQUENCES = {"u2": ["A1", "B2", "A1"], "u1": ["B2"]}


def test_the_digests_of_a_small_catalog_are_pinned() -> None:
    assert data_fingerprint(PRODUCTS, SEQUENCES) == "81b86168053c3090"
    assert dataset_fingerprint(PRODUCTS) == "a4b6e799375e"
    assert catalog_version(PRODUCTS.values()) == "3db5e78ff44a"


def test_the_digests_of_the_tiny_data_set_are_pinned(tiny_dataset) -> None:
    dataset = tiny_dataset
    sequences = fit_sequences(dataset, "test")
    assert data_fingerprint(dataset.products, sequences) == "c931bf1ac6dea292"
    assert dataset_fingerprint(dataset.products) == "c1bffb10f750"
    assert catalog_version(dataset.products.values()) == "1e7f200ad3ee"


@pytest.mark.parametrize(
    "change",
    [
        lambda p, s: ({**p, "A1": p["A1"].model_copy(update={"brand": "3m"})}, s),
        lambda p, s: ({k: v for k, v in p.items() if k != "A1"}, s),
        lambda p, s: (p, {**s, "u1": ["B2", "A1"]}),
        lambda p, s: (p, {**s, "u3": []}),
    ],
)
def test_any_change_to_products_or_sequences_moves_the_data_fingerprint(change) -> None:
    products, sequences = change(PRODUCTS, SEQUENCES)
    assert data_fingerprint(products, sequences) != data_fingerprint(PRODUCTS, SEQUENCES)


def test_order_does_not_matter_but_content_does() -> None:
    reordered = dict(reversed(PRODUCTS.items()))
    assert data_fingerprint(reordered, dict(reversed(SEQUENCES.items()))) == data_fingerprint(
        PRODUCTS, SEQUENCES
    )
    assert catalog_version(reversed(list(PRODUCTS.values()))) == catalog_version(PRODUCTS.values())
    assert dataset_fingerprint({"A1": PRODUCTS["A1"]}) != dataset_fingerprint(PRODUCTS)
