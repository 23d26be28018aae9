"""Fingerprints of a catalog's products and shoppers' sequences, in one place.

Each digest keys something kept across runs and machines, so each must stay byte-identical
from one version of the code to the next (``tests/unit/test_fingerprint.py`` pins them):

- :func:`data_fingerprint`: products and sequences; names the ranking models fitted on them
  (``agent.ranking.fit``, the offline runner's ``ranking/offline-<data>-<split>-<digest>``).
- :func:`dataset_fingerprint`: products alone; names an evaluation's catalog collection and keys
  the evaluation cache (``training.evaluation``), whose whole-split files are tracked in git.
- :func:`catalog_version`: the products' documents, order-free; stamps what ``queryagent
  ingest`` embedded, so precomputed recommendations and logged runs can tell a re-ingest.

They differ on purpose and cannot be merged without orphaning what is stored under them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from memory_store.products import Product

__all__ = ["catalog_version", "data_fingerprint", "dataset_fingerprint"]


def _products_and_sequences(
    products: Mapping[str, Product], sequences: Mapping[str, Sequence[str]]
) -> str:
    """SHA-256 of the products' documents by item id, then each user's ``user:id,id,...``."""
    digest = hashlib.sha256()
    for item_id in sorted(products):
        digest.update(products[item_id].document().encode())
    for user in sorted(sequences):
        digest.update(f"{user}:{','.join(sequences[user])}\n".encode())
    return digest.hexdigest()


def data_fingerprint(
    products: Mapping[str, Product], sequences: Mapping[str, Sequence[str]]
) -> str:
    """What a catalog's fitted models were fitted on: 16 hex digits."""
    return _products_and_sequences(products, sequences)[:16]


def dataset_fingerprint(products: Mapping[str, Product]) -> str:
    """A data set's products (documents by item id): 12 hex digits."""
    return _products_and_sequences(products, {})[:12]


def catalog_version(products: Iterable[Product]) -> str:
    """A short digest of the products' documents (what the catalog embeds), order-free."""
    digest = hashlib.sha256()
    for document in sorted(p.document() for p in products):
        digest.update(document.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]
