"""Ground-truth queries after the HEM protocol (Ai et al., SIGIR 2017), and query normalization.

The public data set has no logged search queries, so the "real next query" of a shopper is the
category path of the item they bought next, without its root level, normalized. The same
normalization is applied to generated queries before exact match (Q_EM).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from memory_store import Dataset

_PUNCT = re.compile(r"[^\w\s]|_")


def normalize_query(text: str) -> str:
    """Lowercase, punctuation to spaces, duplicate tokens removed keeping the first occurrence."""
    tokens = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(dict.fromkeys(tokens))


def common_root(categories: Iterable[str]) -> str:
    """The leading tokens every non-empty category path shares (the taxonomy's root level).

    Category levels are joined by spaces in the UniSRec files, so the root level is recovered as
    the longest common token prefix of the catalog's categories (``"Industrial & Scientific"`` for
    the bundled set). A catalog with one category has no separable root.
    """
    paths = {c.strip() for c in categories if c and c.strip()}
    if len(paths) < 2:
        return ""
    token_lists = [p.split() for p in paths]
    prefix: list[str] = []
    for column in zip(*token_lists, strict=False):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return " ".join(prefix)


def ground_truth_query(category: str, root: str) -> str | None:
    """The normalized query for an item's category path, or ``None`` when it has no category."""
    text = category.strip()
    if root and text.startswith(root):
        text = text[len(root) :]
    query = normalize_query(text)
    return query or None


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
