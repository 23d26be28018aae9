"""Hold back each shopper's last purchase: a data-set folder cut before it, and the held-back
purchases as an event file, to replay "what happened next" into a live store.

    python -m memory_store.holdout --data data/amazon-scientific --out /tmp/loop/cut \
        --events /tmp/loop/next.jsonl [--last 1]

Any folder ``load_dataset`` reads (RecBole or JSON lines) works. The cut is written as a JSON-lines
folder (``DATA_FORMAT.md``): every product, and every shopper with their sequence minus its last
``--last`` items (a shopper with fewer keeps an empty history: a cold-start shopper whose first
purchase is held back). The held-back purchases go to ``--events``, one
``{"user_id", "item_id"}`` a line in purchase order, the file ``queryagent events add --file``
reads. ``queryagent ingest --data CUT``, then ``queryagent events add --file EVENTS``, leaves the
store holding the original sequences, each held-back purchase recorded after the cut. Prints
``cut: N products, U shoppers, E events kept; H purchases held back -> EVENTS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from memory_store.datasets import DataError, Dataset, load_dataset
from memory_store.files import atomic_write

__all__ = ["hold_out", "main"]


def hold_out(dataset: Dataset, out: Path, events: Path, last: int = 1) -> dict[str, int]:
    """Write the cut folder and the held-back events; returns the counts printed by ``main``.

    Raises:
        ValueError: ``last`` is below 1.
    """
    if last < 1:
        raise ValueError(f"--last must be >= 1, got {last}")
    products = "".join(
        json.dumps(
            {"item_id": p.item_id, "title": p.title, "category": p.category, "brand": p.brand}
        )
        + "\n"
        for p in dataset.products.values()
    )
    kept_lines, held_lines, kept = [], [], 0
    for user in dataset.users:
        sequence = list(dataset.sequences.get(user, ()))
        cut = max(0, len(sequence) - last)
        kept += cut
        kept_lines.append(json.dumps({"user_id": user, "items": sequence[:cut]}) + "\n")
        held_lines += [json.dumps({"user_id": user, "item_id": i}) + "\n" for i in sequence[cut:]]
    # Each file appears whole or not at all (memory_store.files): a reader never ingests half.
    atomic_write(out / "products.jsonl", products)
    atomic_write(out / "sequences.jsonl", "".join(kept_lines))
    atomic_write(events, "".join(held_lines))
    return {
        "products": len(dataset.products),
        "users": len(dataset.users),
        "kept": kept,
        "held": len(held_lines),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m memory_store.holdout", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="the data set folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the cut data set")
    parser.add_argument(
        "--events", type=Path, required=True, help="JSONL file for the held-back purchases"
    )
    parser.add_argument(
        "--last", type=int, default=1, help="purchases held back per shopper (default 1)"
    )
    args = parser.parse_args(argv)
    try:
        if args.out.resolve() == Path(args.data).resolve():
            raise ValueError("--out must not be the --data folder (it would be overwritten)")
        counts = hold_out(load_dataset(args.data), args.out, args.events, args.last)
    except (DataError, ValueError, OSError) as exc:
        print(f"holdout: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"cut: {counts['products']} products, {counts['users']} shoppers, {counts['kept']} events "
        f"kept; {counts['held']} purchases held back -> {args.events}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
