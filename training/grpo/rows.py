"""GRPO's prompt rows: one shopper at one point of their history, the held-out next item as the
reward's target; from a data set's split, from exported runs, or from live-logged runs joined with
the purchase recorded after them (``training.outcomes``).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from agent.prompts import draft_messages, grounded_messages
from graphs.offline.runner import profile_at
from memory_store import Dataset, UserProfile, target_position
from training.grpo.config import GRPOArguments, GRPOError
from training.outcomes import load_joined
from training.queries import QueryOracle, common_root


def _row(
    profile: UserProfile, before: int, target: str, dataset: Dataset, oracle: QueryOracle
) -> dict[str, Any] | None:
    query = oracle.of_item(target)
    if query is None:
        return None
    return {
        "prompt": grounded_messages(profile),
        "user_id": profile.user_id,
        "before": before,
        "target_item": target,
        "target_query": query,
        "target_title": dataset.products[target].title,
    }


def logged_records(settings: GRPOArguments) -> tuple[list[Any], bool]:
    """The ``--from_trajectories`` records, and whether they are live-logged runs
    (``training.outcomes.load_joined``)."""
    assert settings.from_trajectories is not None
    return load_joined(settings.from_trajectories, settings.home, prog="grpo")


def _same_prompts(record: Any, profile: UserProfile) -> bool:
    """The run's draft prompt is the one this code writes for its profile (grounded or free);
    a run without a model turn (``--no-model``) has none to differ. A cold-start shopper's memory
    shows the store's popular categories, which the record does not keep: only the messages
    before the memory are compared for them."""
    logged = next((s.messages for s in record.steps if s.turn == 0 and s.messages), None)
    if logged is None:
        return True
    cut = None if profile.n_events else -1
    return any(
        logged[:cut] == current[:cut]
        for current in (grounded_messages(profile), draft_messages(profile))
    )


def _live_rows(records: list[Any], prog: str = "grpo") -> list[dict[str, Any]]:
    """Rows from joined live runs: the profile the run held, its outcome as the target.

    A run the rollout cannot replay as it ran is skipped, and each reason counted in one
    ``{prog}: ...`` line: its profile snapshot is not this version's ``UserProfile``, or its
    draft prompt is not the one this code writes (logged by another prompt version).
    """
    rows = []
    unreadable = other_prompts = 0
    for record in records:
        if record.target is None or not record.target.query or record.profile is None:
            continue
        try:
            profile = UserProfile.model_validate(record.profile)
        except ValidationError:
            unreadable += 1
            continue
        if not _same_prompts(record, profile):
            other_prompts += 1
            continue
        held = (record.run.get("memory") or {}).get("n_events")
        before = record.before if record.before is not None else held
        rows.append(
            {
                "prompt": grounded_messages(profile),
                "user_id": record.user_id,
                "before": int(before if before is not None else profile.n_events),
                "target_item": record.target.item_id,
                "target_query": record.target.query,
                "target_title": record.target.title,
            }
        )
    for n, why in (
        (unreadable, "their profile snapshot is not this version's"),
        (other_prompts, "logged by another prompt version: their draft prompt is not this code's"),
    ):
        if n:
            print(f"{prog}: {n} of {len(records)} runs cannot be replayed ({why}); skipped")
    return rows


def build_rows(
    dataset: Dataset | None, settings: GRPOArguments, seed: int = 0
) -> list[dict[str, Any]]:
    """Prompt rows (see ``prompt_rows``)."""
    return prompt_rows(dataset, settings, seed)[0]


def prompt_rows(
    dataset: Dataset | None, settings: GRPOArguments, seed: int = 0
) -> tuple[list[dict[str, Any]], bool]:
    """Prompt rows: one shopper at one position, with the held-out item as the reward's target.

    From the data set's split (the profile is built from the items before the target), or from a
    trajectory file (its profile snapshots and targets: retraining on what the graph saw): runs
    exported from a split carry their target, live-logged runs get the shopper's next purchase
    recorded after them (``logged_records``). Shuffled with ``seed`` (the run's ``--seed``),
    then cut to ``settings.limit``.

    Returns:
        ``(rows, live)``: ``live`` when the rows come from live-logged runs (their home is the
        rollouts' environment).
    """
    rows: list[dict[str, Any]] = []
    if settings.from_trajectories:
        records, live = logged_records(settings)
        if live:
            rows = _live_rows(records)
            random.Random(seed).shuffle(rows)
            return (rows[: settings.limit] if settings.limit else rows), True
    if dataset is None:
        raise GRPOError("--data is required for rows from a split or from exported runs")
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    if settings.from_trajectories:
        for record in records:
            target = record.target.item_id if record.target else None
            if (
                target is None
                or target not in dataset.products
                or record.user_id not in dataset.sequences
            ):
                continue
            profile = UserProfile.model_validate(record.profile)
            before = record.before if record.before is not None else profile.n_events
            if (row := _row(profile, before, target, dataset, oracle)) is not None:
                rows.append(row)
    else:
        for ex in dataset.examples(settings.split):
            before = target_position(dataset, ex, settings.split)
            profile = profile_at(dataset, ex.user_id, before)
            if (row := _row(profile, before, ex.target, dataset, oracle)) is not None:
                rows.append(row)
    random.Random(seed).shuffle(rows)
    return (rows[: settings.limit] if settings.limit else rows), False


def heldout_rows(
    dataset: Dataset | None, settings: GRPOArguments, seed: int = 0
) -> list[dict[str, Any]]:
    """``settings.heldout`` fixed rows of the valid split (the items before each shopper's
    second-to-last purchase, that purchase the target), for a run on the train split of a data
    set; none otherwise (live runs and valid-split training have no split held out of them)."""
    if not settings.heldout or dataset is None or settings.from_trajectories:
        return []
    if settings.split != "train":
        return []
    valid = replace(settings, split="valid", limit=settings.heldout)
    return prompt_rows(dataset, valid, seed)[0]
