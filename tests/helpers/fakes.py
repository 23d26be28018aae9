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

    def search_many(
        self, queries: list[str], k: int = 10, *, exact: bool = False
    ) -> list[list[RetrievedProduct]]:
        return [self.search(q, k) for q in queries]  # already exact: every product is scored

    def embeddings(self, item_ids: Sequence[str]) -> dict[str, list[float]]:
        return {i: hash_vector(self.products[i].document()) for i in item_ids if i in self.products}

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [hash_vector(t) for t in texts]

    def get(self, item_ids: Sequence[str]) -> dict[str, Product]:
        return {i: self.products[i] for i in item_ids if i in self.products}

    def count(self) -> int:
        return len(self.products)


class ScriptedGroundedDrafter:
    """A ``GroundedDrafter`` for unit tests: each ``beams`` call returns the next scripted list
    of queries (kept only when they are in the trie, as constrained decoding guarantees), with
    log-probabilities -1, -2, ...; ``score`` gives -(number of tokens) per completion.
    ``generate`` answers free-generation calls with ``Query: <first scripted query>``."""

    name = "scripted-grounded"

    def __init__(self, script: Sequence[Sequence[str]]) -> None:
        self.script = [list(s) for s in script]
        self.calls: list[list[dict[str, str]]] = []
        self.scored: list[list[list[int]]] = []

    def trie(self, queries: Sequence[str]):  # type: ignore[no-untyped-def]
        from agent.drafting.trie import QueryTrie

        return QueryTrie.build(WordTokenizer(), queries)

    def beams(self, prompts, trie, n, temperature=0.0):  # type: ignore[no-untyped-def]
        from agent.drafting.constrained import Beam
        from agent.drafting.trie import tries_per_prompt

        out = []
        for messages, one in zip(prompts, tries_per_prompt(trie, len(prompts)), strict=True):
            self.calls.append([dict(m) for m in messages])
            queries = self.script.pop(0) if self.script else []
            beams = []
            for k, q in enumerate(queries[:n]):
                ids = one.completion_ids(q)
                if ids is not None:
                    beams.append(Beam(q, -1.0 - k, tuple(ids), (1, 2, 3)))
            out.append(beams)
        return out

    def score(self, prompts, completions):  # type: ignore[no-untyped-def]
        self.scored.extend([list(map(list, c)) for c in completions])
        return [[-float(len(ids)) for ids in c] for c in completions]


class ScriptedWritingDrafter(ScriptedGroundedDrafter):
    """A ``ScriptedGroundedDrafter`` that also generates freely (as ``GroundedHFDrafter`` does),
    so the graph writes query texts: each ``generate`` call answers with the next of ``texts``
    (the last one repeated when they run out); its prompts go to ``written``."""

    def __init__(self, script: Sequence[Sequence[str]], texts: Sequence[str]) -> None:
        super().__init__(script)
        self.texts = list(texts)
        self.written: list[list[dict[str, str]]] = []

    def generate(self, prompts, **options):  # type: ignore[no-untyped-def]
        from agent.records import Generation

        out = []
        for messages in prompts:
            self.written.append([dict(m) for m in messages])
            text = self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]
            out.append(Generation(text=text, prompt_token_ids=[1], completion_token_ids=[2]))
        return out


class WordTokenizer:
    """A whitespace tokenizer with a growing vocabulary (enough to build a ``QueryTrie``)."""

    eos_token_id = 0
    name_or_path = "word-tokenizer"

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"<eos>": 0}

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]
