"""The evaluation protocol (leave-one-out, HEM ground-truth queries): which shoppers are evaluated,
where each target sits in the shopper's sequence, and the data set's catalog.

The target is the last item of each user in the test split (second to last in valid); the memory
the agent sees is built from the items before the target only; users whose target has no
category are skipped and counted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from agent.catalog import ChromaCatalog
from memory_store import DataError, Dataset, Example, target_position
from memory_store.fingerprint import dataset_fingerprint
from training.evaluation.baselines import QueryOracle
from training.evaluation.specs import EvalError


def select_examples(
    dataset: Dataset,
    split: str,
    limit: int | None,
    seed: int,
    oracle: QueryOracle,
    *,
    splits: Sequence[str] = ("valid", "test"),
) -> tuple[list[tuple[Example, str]], int]:
    """The evaluated (example, truth query) pairs and how many were skipped (no category).

    ``splits`` are the accepted split names: evaluation takes the leave-one-out targets only;
    the trajectory export also takes ``"train"`` (every history -> next item row).
    """
    if split not in splits:
        if tuple(splits) == ("valid", "test"):
            raise EvalError(
                f"split must be 'valid' or 'test' (leave-one-out targets), got {split!r}"
            )
        raise EvalError(f"split must be one of {', '.join(splits)}, got {split!r}")
    pairs, skipped = [], 0
    for ex in dataset.examples(split):
        truth = oracle.of_item(ex.target)
        if truth is None:
            skipped += 1
        else:
            pairs.append((ex, truth))
    if limit is not None and limit < len(pairs):
        keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
        pairs = [pairs[i] for i in keep]
    return pairs, skipped


def fit_name(dataset: Dataset, split: str, search: str) -> str:
    """The folder name (under the home's search and ranking folders) of what the evaluation fits
    for ``dataset``'s ``split`` with ``search``; the writer's trainers read the same ``valid``
    search, so both fit it once."""
    name = f"eval-{dataset.name.lower()}-{split}"
    return name if search == "dense" else f"{name}-{search}"


def open_eval_catalog(dataset: Dataset, home: str | Path | None) -> ChromaCatalog:
    """The data set's catalog in its own collection (embedded once, reused by later runs)."""
    collection = f"eval-{dataset.name.lower()}-{dataset_fingerprint(dataset.products)}"
    catalog = ChromaCatalog.from_env(home=home, collection=collection)
    if catalog.count() != len(dataset.products):
        catalog.upsert(dataset.products.values())
    return catalog


def example_position(dataset: Dataset, ex: Example, split: str) -> int:
    """``memory_store.target_position``, with a mismatch reported as an ``EvalError``."""
    try:
        return target_position(dataset, ex, split)
    except DataError as exc:
        raise EvalError(str(exc)) from exc
