"""The writer's training rows: one per (shopper, position) whose next purchase has a category.

The intent is the next purchase's own category query (what a right check picks); the prompt is
exactly the graph's writing prompt (``agent.prompts.write_messages``) on the memory built from the
events before it. For the SFT cold start each row gets a label (``label_rows``): among the texts
the history supports (the intent's last words, alone or led by one of the shopper's three
heaviest brands), the one whose search results rank the real next purchase highest; a tie (or
no text finding it) keeps the shortest. The choice depends on the purchase, so the model learns
when a shopper's brand pays and which one; it never sees a brand the history does not hold.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.prompts import write_messages
from agent.search.protocol import Search
from graphs.offline.runner import profile_at
from memory_store import Dataset, target_position
from memory_store.queries import normalize_query
from training.queries import QueryOracle, common_root
from training.rewards import text_rank_reward

LEAF_WORDS = 3  # "the query's last three words alone retrieve as well as the whole path"
LABEL_DEPTH = 100  # results read when choosing a label


@dataclass(frozen=True)
class WriterRow:
    """One writing prompt: ``intent`` for ``user_id`` with the memory cut at ``before``."""

    user_id: str
    target: str
    before: int
    intent: str
    prompt: list[dict[str, str]]
    brands: tuple[str, ...]
    label: str | None = None


def leaf_text(intent: str, words: int = LEAF_WORDS) -> str:
    """The intent's last ``words`` words: its most specific category node, as a shopper says it."""
    return " ".join(intent.split()[-words:])


def candidate_texts(row: WriterRow) -> list[str]:
    """The texts the history supports for a row, shortest first."""
    leaf = leaf_text(row.intent)
    return [leaf, *(f"{brand} {leaf}" for brand in row.brands if brand not in leaf.split())]


def item_queries(dataset: Dataset) -> dict[str, str]:
    """Every product's category query (the intent a right check would pick for it)."""
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    return {i: q for i in dataset.products if (q := oracle.of_item(i))}


def writer_rows(
    dataset: Dataset, split: str, *, limit: int | None = None, seed: int = 0
) -> tuple[list[WriterRow], int]:
    """The rows of ``split`` (``train``: every history -> next item position; ``valid``/``test``:
    the leave-one-out targets), shuffled with ``seed``, the first ``limit``.

    Returns ``(rows, skipped)``: ``skipped`` counts targets without a category query.
    """
    queries = item_queries(dataset)
    examples = list(dataset.examples(split))
    kept = [ex for ex in examples if ex.target in queries]
    skipped = len(examples) - len(kept)
    random.Random(seed).shuffle(kept)
    if limit is not None:
        kept = kept[:limit]
    rows = []
    for ex in kept:
        before = target_position(dataset, ex, split)
        profile = profile_at(dataset, ex.user_id, before)
        intent = queries[ex.target]
        brands = tuple(
            b for n in profile.interest_graph.top("brand", 3) if (b := normalize_query(n.name))
        )
        rows.append(
            WriterRow(
                user_id=ex.user_id,
                target=ex.target,
                before=before,
                intent=intent,
                prompt=write_messages(profile, intent),
                brands=brands,
            )
        )
    return rows, skipped


def label_rows(rows: Sequence[WriterRow], search: Search) -> list[WriterRow]:
    """Each row with its label: the candidate text whose results rank the target highest."""
    texts = sorted({t for row in rows for t in candidate_texts(row)})
    results = dict(zip(texts, search.search_many(texts, k=LABEL_DEPTH), strict=True))
    labelled = []
    for row in rows:
        cands = candidate_texts(row)
        scores = [
            text_rank_reward(row.target, [p.item_id for p in results[t]], LABEL_DEPTH)
            for t in cands
        ]
        best = max(range(len(cands)), key=lambda i: (scores[i], -i))
        labelled.append(replace(row, label=cands[best]))
    return labelled
