"""Fakes for unit tests only: a catalog that ranks by word overlap and hashes words to vectors.

The integration tests run the same code against real Chroma and the real MiniLM.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

from agent.records import RetrievedProduct
from memory_store.products import Product

DIM = 64


def _words(text: str) -> set[str]:
    return {w.strip(".,&()").lower() for w in text.split() if w.strip(".,&()")}


def hash_vector(text: str) -> list[float]:
    vec = [0.0] * DIM
    for word in _words(text):
        vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class FakeCatalog:
    """Implements ``agent.catalog.Catalog`` in memory."""

    def __init__(self, products: Iterable[Product]) -> None:
        self.products = {p.item_id: p for p in products}
        self.queries: list[str] = []

    def search(self, query: str, k: int = 10) -> list[RetrievedProduct]:
        self.queries.append(query)
        q = _words(query)
        scored = sorted(
            self.products.values(),
            key=lambda p: (-len(q & _words(p.document())) / (len(q) or 1), p.item_id),
        )[:k]
        return [
            RetrievedProduct(
                **p.model_dump(), rank=i + 1, score=len(q & _words(p.document())) / (len(q) or 1)
            )
            for i, p in enumerate(scored)
        ]

    def search_many(self, queries: list[str], k: int = 10) -> list[list[RetrievedProduct]]:
        return [self.search(q, k) for q in queries]

    def embeddings(self, item_ids: Sequence[str]) -> dict[str, list[float]]:
        return {i: hash_vector(self.products[i].document()) for i in item_ids if i in self.products}

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [hash_vector(t) for t in texts]

    def get(self, item_ids: Sequence[str]) -> dict[str, Product]:
        return {i: self.products[i] for i in item_ids if i in self.products}

    def count(self) -> int:
        return len(self.products)
