"""Carve a second catalog out of a data set: the products of some category subtrees and the
shoppers' purchases of them, written as a JSON-lines folder (``DATA_FORMAT.md``); optionally the
rest as another folder, to fit or train on what the carved catalog never shows.

Used to check that the agent serves catalogs it never saw (its queries must be the carved
catalog's own) without carrying data that is not ours::

    python -m memory_store.carve --data data/amazon-scientific \
        --subtrees "lab scientific products,test measure inspect" --out /tmp/lab --rest /tmp/rest

A subtree is named by the leading words of its normalized category query (the path without the
taxonomy's root, as ``memory_store.queries`` normalizes it). Shoppers keep only their purchases
inside (or, for ``--rest``, outside) the subtrees, in order; one left with fewer than
``--min-items`` is dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from memory_store.datasets import DataError, Dataset, load_dataset
from memory_store.queries import common_root, ground_truth_query

__all__ = ["carve", "main"]


def _write(folder: Path, dataset: Dataset, items: set[str], min_items: int) -> tuple[int, int]:
    folder.mkdir(parents=True, exist_ok=True)
    sequences = {u: [i for i in dataset.sequences.get(u, ()) if i in items] for u in dataset.users}
    sequences = {u: s for u, s in sequences.items() if len(s) >= min_items}
    with (folder / "products.jsonl").open("w") as f:
        for item_id in sorted(items):
            p = dataset.products[item_id]
            row = {"item_id": item_id, "title": p.title, "category": p.category, "brand": p.brand}
            f.write(json.dumps(row) + "\n")
    with (folder / "sequences.jsonl").open("w") as f:
        for user, seq in sequences.items():
            f.write(json.dumps({"user_id": user, "items": seq}) + "\n")
    return len(items), len(sequences)


def carve(
    dataset: Dataset,
    subtrees: Sequence[str],
    out: Path,
    rest: Path | None = None,
    min_items: int = 3,
) -> dict[str, tuple[int, int]]:
    """Write the carved catalog (and the rest); returns ``{name: (products, shoppers)}``."""
    root = common_root(p.category for p in dataset.products.values())
    prefixes = [" ".join(s.lower().split()) for s in subtrees if s.strip()]
    inside = set()
    for item_id, p in dataset.products.items():
        query = ground_truth_query(p.category, root) or ""
        if any(query == pre or query.startswith(pre + " ") for pre in prefixes):
            inside.add(item_id)
    if not inside:
        raise ValueError(f"no product's category query starts with any of {prefixes}")
    counts = {"carved": _write(out, dataset, inside, min_items)}
    if rest is not None:
        counts["rest"] = _write(rest, dataset, set(dataset.products) - inside, min_items)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memory_store.carve", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the data set folder")
    parser.add_argument(
        "--subtrees", required=True, help="comma-separated leading words of category queries"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the carved catalog")
    parser.add_argument("--rest", type=Path, help="folder for everything else")
    parser.add_argument("--min-items", type=int, default=3, help="drop shorter shoppers")
    args = parser.parse_args(argv)
    try:
        counts = carve(
            load_dataset(args.data), args.subtrees.split(","), args.out, args.rest, args.min_items
        )
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, (n_products, n_shoppers) in counts.items():
        print(f"{name}: {n_products} products, {n_shoppers} shoppers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
