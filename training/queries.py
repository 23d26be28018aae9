"""Ground-truth queries after the HEM protocol (Ai et al., SIGIR 2017), and query normalization.

The public data set has no logged search queries, so the "real next query" of a shopper is the
category path of the item they bought next, without its root level, normalized. The same
normalization is applied to generated queries before exact match (Q_EM).
"""

from __future__ import annotations

from collections.abc import Sequence

from memory_store import Dataset
from memory_store.queries import common_root, ground_truth_query, normalize_query

__all__ = ["QueryOracle", "common_root", "ground_truth_query", "normalize_query"]


class QueryOracle:
    """Ground-truth queries of a data set's items (category path minus the common root)."""

    def __init__(self, dataset: Dataset, root: str) -> None:
        self.dataset = dataset
        self.root = root

    def of_item(self, item_id: str) -> str | None:
        return ground_truth_query(self.dataset.products[item_id].category, self.root)

    def last_query(self, history: Sequence[str]) -> str | None:
        """Query of the most recent history item that has a category."""
        for item_id in reversed(history):
            query = self.of_item(item_id)
            if query:
                return query
        return None
