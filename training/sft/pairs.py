"""SFT's training pairs: the graph's grounded draft prompt for one shopper at one position, and
the answer naming the real next query; from the training split or from a trajectory file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.prompts import grounded_messages
from graphs.offline.runner import profile_at
from memory_store import Dataset, Example, UserProfile, target_position
from training.outcomes import load_joined
from training.queries import QueryOracle, common_root
from training.writer.heldout import writer_search
from training.writer.rows import label_rows, writer_rows


@dataclass(frozen=True)
class SFTPair:
    """One training pair: the draft prompt the graph would send for ``user_id`` with the memory
    cut at ``before`` events, and the answer naming the real next query."""

    user_id: str
    target: str
    before: int
    truth: str
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]


def completion_messages(truth: str) -> list[dict[str, str]]:
    """The assistant turn the drafter should write: the form ``agent.parsing`` expects."""
    return [{"role": "assistant", "content": f"Query: {truth}"}]


def build_pairs(
    dataset: Dataset, *, seed: int = 0, limit: int | None = None
) -> tuple[list[SFTPair], int]:
    """The SFT pairs of the training split, shuffled with ``seed``, at most ``limit`` of them.

    Returns:
        ``(pairs, skipped)``: ``skipped`` counts training targets without a category (no
        ground-truth query), over the whole split.
    """
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    kept: list[tuple[Example, str]] = []
    skipped = 0
    for ex in dataset.examples("train"):
        truth = oracle.of_item(ex.target)
        if truth is None:
            skipped += 1
        else:
            kept.append((ex, truth))
    random.Random(seed).shuffle(kept)
    if limit is not None:
        kept = kept[:limit]
    pairs = []
    # Profiles are built only for the kept pairs: the bundled split has 34k examples.
    for ex, truth in kept:
        before = target_position(dataset, ex, "train")
        pairs.append(
            SFTPair(
                user_id=ex.user_id,
                target=ex.target,
                before=before,
                truth=truth,
                prompt=grounded_messages(profile_at(dataset, ex.user_id, before)),
                completion=completion_messages(truth),
            )
        )
    return pairs, skipped


def writer_pairs(
    dataset: Dataset, home: str | None, *, seed: int = 0, limit: int | None = None
) -> tuple[list[SFTPair], int]:
    """The writer's SFT pairs (``training.writer.rows``): the graph's writing prompt for the next
    purchase's intent -> the history-supported text that retrieved that purchase best, searched
    with the fused search fitted before the ``valid`` targets (kept in ``home``)."""
    rows, skipped = writer_rows(dataset, "train", limit=limit, seed=seed)
    rows = label_rows(rows, writer_search(dataset, home))
    return [
        SFTPair(
            user_id=r.user_id,
            target=r.target,
            before=r.before,
            truth=r.label or r.intent,
            prompt=r.prompt,
            completion=completion_messages(r.label or r.intent),
        )
        for r in rows
    ], skipped


def trajectory_pairs(
    path: str, home: str | None, *, seed: int = 0, limit: int | None = None
) -> tuple[list[SFTPair], int]:
    """SFT pairs from a trajectory file: the draft prompt of the profile each run held, and the
    query of its target (the outcome of a live run, joined in ``home``).

    Returns:
        ``(pairs, skipped)``: ``skipped`` counts records whose target has no category query.
    """
    records, _ = load_joined(path, home, prog="sft")
    usable = [r for r in records if r.target and r.target.query and r.profile is not None]
    skipped = len(records) - len(usable)
    random.Random(seed).shuffle(usable)
    pairs = []
    for record in usable[:limit] if limit is not None else usable:
        assert record.target is not None and record.target.query is not None
        profile = UserProfile.model_validate(record.profile)
        pairs.append(
            SFTPair(
                user_id=record.user_id,
                target=record.target.item_id,
                before=record.before if record.before is not None else profile.n_events,
                truth=record.target.query,
                prompt=grounded_messages(profile),
                completion=completion_messages(record.target.query),
            )
        )
    return pairs, skipped
