"""The dense side: today's catalog search by name (``dense``), and MiniLM similarities for fusion.

``DenseSearch`` is exactly the search the project had before the fused one (the Chroma catalog's
own query: same products, same order, same scores), kept so earlier figures stay reproducible
(``search="dense"``). ``CatalogDenseScorer`` gives the fused search a similarity for every
product: the vectors Chroma stores (read once, never re-embedded) against the query's vector from
the catalog's own embedding function, so the scores are the ones Chroma's query would report.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from agent.catalog import Catalog
from agent.records import RetrievedProduct

__all__ = ["CatalogDenseScorer", "DenseSearch"]

# Ids per ``Catalog.embeddings`` call: Chroma's local database reads one SQL variable per id and
# SQLite refuses more than 32,766 in one statement.
_EMBEDDINGS_PAGE = 5_000


class DenseSearch:
    """``Search`` by the catalog's dense index alone: today's search, unchanged."""

    name = "dense"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def __repr__(self) -> str:
        return f"DenseSearch({self.catalog!r})"

    def search(self, query: str, k: int = 10) -> list[RetrievedProduct]:
        return self.catalog.search(query, k=k)

    def search_many(
        self, queries: list[str], k: int = 10, *, exact: bool = False
    ) -> list[list[RetrievedProduct]]:
        return self.catalog.search_many(queries, k=k, exact=exact)


class CatalogDenseScorer:
    """``DenseScorer`` over a catalog's stored vectors (cosine similarity, as Chroma scores).

    The item vectors are read from the catalog once per item and kept (384 float32 per product:
    1.5 MB per 1,000 products); a product added to the catalog later is read on first use.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._vectors: dict[str, np.ndarray] = {}
        self._matrix: tuple[tuple[str, ...], np.ndarray] | None = None
        self._lock = threading.Lock()

    def item_matrix(self, item_ids: Sequence[str]) -> np.ndarray:
        """L2-normalized stored vectors, one row per id (zeros for an id the catalog lacks)."""
        key = tuple(item_ids)
        with self._lock:
            if self._matrix is not None and self._matrix[0] == key:
                return self._matrix[1]
            missing = [i for i in dict.fromkeys(key) if i not in self._vectors]
            for start in range(0, len(missing), _EMBEDDINGS_PAGE):
                page = self.catalog.embeddings(missing[start : start + _EMBEDDINGS_PAGE])
                for item_id, vector in page.items():
                    v = np.asarray(vector, dtype=np.float32)
                    self._vectors[item_id] = v / max(float(np.linalg.norm(v)), 1e-12)
            dim = len(next(iter(self._vectors.values()))) if self._vectors else 1
            zero = np.zeros(dim, dtype=np.float32)
            matrix = (
                np.stack([self._vectors.get(i, zero) for i in key])
                if key
                else np.zeros((0, dim), dtype=np.float32)
            )
            self._matrix = (key, matrix)
            return matrix

    def scores(self, queries: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        matrix = self.item_matrix(item_ids)
        if not queries:
            return np.zeros((0, len(item_ids)), dtype=np.float32)
        q = np.asarray(self.catalog.embed(list(queries)), dtype=np.float32)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        if matrix.shape[1] != q.shape[1]:  # an empty catalog: nothing to compare with
            return np.zeros((len(queries), len(item_ids)), dtype=np.float32)
        return (q @ matrix.T).astype(np.float32)
