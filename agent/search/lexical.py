"""Lexical scoring over product fields: one BM25 index per field (category path, title, brand).

Why ``bm25s``: Chroma's local client refuses a sparse index ("Sparse vector indexing is not
enabled in local"; Chroma's BM25/sparse search is Cloud-only), so the lexical side needs its own
index. ``bm25s`` is maintained, scores a whole catalog with sparse matrices in milliseconds, and
saves and loads its index as plain files, which the search keeps beside the catalog in the home.

The category field holds the product's catalog query (``memory_store.queries``: the category path
without the taxonomy's root, normalized), so a vocabulary query and its category's field are the
same words. Each field's BM25 scores are divided by their maximum over the catalog for that query
(0 when no product matches), so the fusion weights compare fields on one scale.

Tokens: lowercase words (``normalize_query``'s punctuation rule), English stop words removed (a
user's own words: "a gift for my lab"), and plurals folded by Harman's S-stemmer (Harman 1991,
"How effective is suffixing?", JASIS 42(1)): three rules, so that "microscope" finds the
"microscopes" category. A stemming library (PyStemmer, bm25s's optional stemmer) would be one more
compiled dependency for what these three rules cover on category and product names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.products import Product
from memory_store.queries import common_root, ground_truth_query

__all__ = ["FIELDS", "FieldIndex", "field_texts", "s_stem", "tokenize"]

FIELDS = ("category", "title", "brand")
_PUNCT = re.compile(r"[^\w\s]|_")
# The stop words of bm25s's English list (bm25s.stopwords.STOPWORDS_EN), kept here so tokenizing
# a query does not import bm25s (and the list cannot change under a saved index); plus the "s"
# and "t" that the punctuation rule leaves of "lab's" and "don't" (a category normalized by
# ``normalize_query`` has them too, so both sides drop them).
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with s t".split()
)
# BM25 parameters (Lucene's variant, bm25s's defaults): term-frequency saturation k1, length
# normalization b.
K1 = 1.5
B = 0.75


def s_stem(word: str) -> str:
    """Harman's S-stemmer: "batteries" -> "battery", "boxes" -> "boxe", "tubes" -> "tube",
    "glass" and "virus" unchanged. Short words (3 letters or fewer) are left alone."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """The lexical tokens of a query or a field: lowercase words, stop words out, S-stemmed."""
    return [s_stem(w) for w in _PUNCT.sub(" ", text.lower()).split() if w not in STOPWORDS]


def field_texts(products: Sequence[Product]) -> dict[str, list[str]]:
    """Each field's text per product, in ``products`` order; the category field is the product's
    catalog query (root level removed), "" when it has no category."""
    root = common_root(p.category for p in products)
    return {
        "category": [ground_truth_query(p.category, root) or "" for p in products],
        "title": [p.title for p in products],
        "brand": [p.brand for p in products],
    }


class FieldIndex:
    """BM25 indexes of the fields of a fixed list of products (row ``i`` is product ``i``)."""

    def __init__(self, indexes: Mapping[str, Any], n_docs: int) -> None:
        self.indexes = dict(indexes)  # field -> bm25s.BM25 (None for a field no product has)
        self.n_docs = n_docs

    @classmethod
    def build(cls, products: Sequence[Product]) -> FieldIndex:
        # bm25s is imported here, not at the top: `import agent.search` stays light for the
        # graph and Studio, and only fitting or loading a fused search needs it.
        import bm25s

        indexes: dict[str, Any] = {}
        for name, texts in field_texts(products).items():
            tokens = [tokenize(t) for t in texts]
            if not any(tokens):
                indexes[name] = None  # e.g. a catalog without brands
                continue
            index = bm25s.BM25(k1=K1, b=B, method="lucene")
            index.index(tokens, show_progress=False)
            indexes[name] = index
        return cls(indexes, len(products))

    def scores(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Per field, a ``len(queries) x n_docs`` float32 matrix of BM25 scores divided by each
        query's maximum (rows of zeros where no product matches)."""
        out: dict[str, np.ndarray] = {}
        for name in FIELDS:
            matrix = np.zeros((len(queries), self.n_docs), dtype=np.float32)
            index = self.indexes.get(name)
            if index is not None:
                for row, query in enumerate(queries):
                    ids = index.get_tokens_ids(tokenize(query))
                    if not ids:
                        continue
                    raw = np.asarray(index.get_scores_from_ids(ids), dtype=np.float32)
                    top = float(raw.max(initial=0.0))
                    if top > 0:
                        matrix[row] = raw / top
            out[name] = matrix
        return out

    # ----------------------------------------------------------------- persistence

    def save(self, folder: Path) -> None:
        """One bm25s index folder per field, plus ``fields.json`` (which fields have one)."""
        folder.mkdir(parents=True, exist_ok=True)
        present = [name for name in FIELDS if self.indexes.get(name) is not None]
        for name in present:
            self.indexes[name].save(str(folder / name), show_progress=False)
        (folder / "fields.json").write_text(json.dumps({"fields": present, "n_docs": self.n_docs}))

    @classmethod
    def load(cls, folder: Path) -> FieldIndex:
        # bm25s imported here for the reason given in ``build``.
        import bm25s

        spec = json.loads((folder / "fields.json").read_text())
        indexes: dict[str, Any] = {name: None for name in FIELDS}
        for name in spec["fields"]:
            indexes[name] = bm25s.BM25.load(str(folder / name), show_progress=False)
        return cls(indexes, int(spec["n_docs"]))
