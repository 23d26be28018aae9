"""What every caller (the check, the evaluation, ``recommend``, precompute, the reward) needs from
the store's search, and what the fused search needs from the dense side.

``Search.search_many`` has the signature of ``Catalog.search_many``, so a search can be handed to
anything that took the catalog's (``agent.ranking.fit.SearchMany``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from agent.records import RetrievedProduct

__all__ = ["DenseScorer", "Search"]


@runtime_checkable
class Search(Protocol):
    """A product search over one catalog. Implementations must be thread-safe for reads."""

    name: str  # "fused" or "dense": what a run records as the search it used

    def search(self, query: str, k: int = 10) -> list[RetrievedProduct]:
        """The ``k`` best products for ``query`` (any text: a vocabulary query or a user's own
        words), best first: rank 1 has the highest score."""
        ...

    def search_many(
        self, queries: list[str], k: int = 10, *, exact: bool = False
    ) -> list[list[RetrievedProduct]]:
        """``search`` for each query in one batched call; one list per query, in order.

        ``exact``: the same result on every run (the dense search then scores every product
        instead of asking the approximate index); the fused search is always exact.
        """
        ...


class DenseScorer(Protocol):
    """Dense similarities of queries to products (the catalog's MiniLM space in production)."""

    def scores(self, queries: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """A ``len(queries) x len(item_ids)`` float32 matrix of similarities (higher is better,
        in [-1, 1]); an item the dense index does not hold scores 0."""
        ...
