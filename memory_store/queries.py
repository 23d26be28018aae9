"""A catalog's query vocabulary: category paths as search queries (HEM protocol, Ai et al. 2017).

The public data has no logged searches, so the query for an item is its category path without the
taxonomy's root level, normalized. The same normalization turns generated queries into comparable
strings (Q_EM), and the set of these queries over a catalog is the vocabulary that grounded
drafting is constrained to. It lives on the ground floor because ingest (graphs), the agent's
recall and ranking (agent) and the evaluation (training) all need the same function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from memory_store.products import Product

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_QUERY_WORDS",
    "catalog_queries",
    "common_root",
    "ground_truth_query",
    "normalize_query",
]

_PUNCT = re.compile(r"[^\w\s]|_")
# A recommended query is a short search string. Category paths run up to 12 words in the bundled
# catalog; a longer "category" is a parsing accident of the item text, not a query anyone types.
MAX_QUERY_WORDS = 16
MAX_QUERY_CHARS = 160


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


def catalog_queries(products: Mapping[str, Product]) -> dict[str, str]:
    """``item_id -> query`` for every product that has a category (the catalog's vocabulary is
    the set of values)."""
    root = common_root(p.category for p in products.values())
    out: dict[str, str] = {}
    for item_id, product in products.items():
        query = ground_truth_query(product.category, root)
        if query and len(query.split()) <= MAX_QUERY_WORDS and len(query) <= MAX_QUERY_CHARS:
            out[item_id] = query
    return out
