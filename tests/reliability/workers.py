"""Entry points that reliability tests start as real processes (``python -m``).

    python -m tests.reliability.workers append STORE_URL WORKER ROUNDS GO_FILE
    python -m tests.reliability.workers slow-eval EVAL_ARGS...

``append``: waits for ``GO_FILE`` (so every worker starts together), then records ``ROUNDS``
purchases through ``graphs.serving.events.add_purchases`` in rounds of a few lines each, on
shoppers shared with the other workers. Each purchase's time encodes ``(worker, round, line)``
so the test can tell every event apart and count it once.

``slow-eval``: ``queryagent-train eval`` with a second of native work before each drafter batch
(see ``slow_eval``).
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


def slow_eval(argv: list[str]) -> None:
    """``queryagent-train eval`` as its own process, each drafter batch preceded by a second of
    native torch work on the batching thread (what a forward pass of a real model costs), so a
    SIGINT lands while that daemon thread is inside C++ code."""
    import torch

    from agent.drafting import batching

    real = batching.MicroBatchingDrafter._serve

    def serve(self: batching.MicroBatchingDrafter, options: dict, requests: list) -> None:
        a = torch.ones(1200, 1200)
        for _ in range(12):
            a = (a @ a).clamp_(max=1.0)  # the GIL is released inside each op
        real(self, options, requests)

    batching.MicroBatchingDrafter._serve = serve  # type: ignore[method-assign]
    from training.cli import main

    sys.argv = ["queryagent-train", *argv]
    sys.exit(main())  # argv None: main runs as the process does


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "append":
        append(rest[0], int(rest[1]), int(rest[2]), rest[3])
    elif command == "slow-eval":
        slow_eval(rest)
    else:
        raise SystemExit(f"unknown worker command {command!r}")
