"""Entry points that reliability tests start as real processes (``python -m``).

    python -m tests.reliability.workers append STORE_URL WORKER ROUNDS GO_FILE

``append``: waits for ``GO_FILE`` (so every worker starts together), then records ``ROUNDS``
purchases through ``graphs.serving.events.add_purchases`` in rounds of a few lines each, on
shoppers shared with the other workers. Each purchase's time encodes ``(worker, round, line)``
so the test can tell every event apart and count it once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from graphs.serving.events import EventLine, add_purchases
from memory_store import load_dataset, open_store
from tests.helpers.fakes import FakeCatalog

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-recbole"
SHOPPERS = ("SHARED0", "SHARED1", "SHARED2")  # every worker writes to all of them
LINES_PER_ROUND = 3


def event_time(worker: int, round_: int, line: int) -> float:
    """A purchase time naming its writer: distinct for every (worker, round, line)."""
    return float(worker * 100_000 + round_ * 10 + line)


def append(url: str, worker: int, rounds: int, go_file: str) -> None:
    products = load_dataset(TINY).products
    catalog = FakeCatalog(products.values())
    items = sorted(products)
    store = open_store(url=url)
    deadline = time.monotonic() + 60
    while not Path(go_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    for round_ in range(rounds):
        lines = [
            (
                f"worker{worker}:{round_}:{line}",
                EventLine(
                    user_id=SHOPPERS[(worker + round_ + line) % len(SHOPPERS)],
                    item_id=items[(worker + line) % len(items)],
                    time=event_time(worker, round_, line),
                ),
            )
            for line in range(LINES_PER_ROUND)
        ]
        add_purchases(store, catalog, lines)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "append":
        append(rest[0], int(rest[1]), int(rest[2]), rest[3])
    else:
        raise SystemExit(f"unknown worker command {command!r}")
