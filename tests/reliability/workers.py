"""Entry points that reliability tests start as real processes (``python -m``).

    python -m tests.reliability.workers append STORE_URL WORKER ROUNDS GO_FILE
    python -m tests.reliability.workers slow-eval EVAL_ARGS...
    python -m tests.reliability.workers killed N COUNT_FILE CLI ARGS...

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
from typing import Any

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


def ingest_fast(home: str, data: str) -> None:
    """``graphs.offline.ingest.ingest`` as ``queryagent ingest`` runs it (the store in ``home``,
    the completion mark, the fit hook saving the catalog's models into the home), with the fake
    catalog instead of Chroma and a 2-epoch next-item model: the same writes in seconds."""
    from agent.ranking import served_dir
    from agent.ranking.fit import FitConfig, fit_catalog, fit_key
    from agent.ranking.nextitem import NextItemConfig
    from graphs.offline.ingest import ingest

    dataset = load_dataset(data)
    catalog = FakeCatalog(dataset.products.values())

    def fit(ds: Any, cat: Any) -> tuple[Any, bool]:
        config = FitConfig(nextitem=NextItemConfig(epochs=2))
        models = fit_catalog(ds.products, ds.sequences, cat.search_many, config, progress=False)
        models.meta["key"] = fit_key(ds.products, ds.sequences)  # as load_or_fit stamps it
        models.save(served_dir(home))
        return models, True

    ingest(dataset, open_store(home), catalog, progress=False, fit=fit)


def killed(argv: list[str]) -> None:
    """Run a command in this process and SIGKILL it at its ``N``-th write point.

    ``argv``: ``N COUNT_FILE CLI ARGS...`` with ``CLI`` one of ``queryagent``,
    ``queryagent-train``, ``ingest`` (``ingest_fast HOME DATA``), ``append``
    (``graphs.serving.events.add_purchases`` of an events file on a store URL, with the tiny
    catalog). Write points are the places where a process leaves
    something behind: a store batch, a Chroma upsert, a file rename or a raw ``os.write``. The
    process kills itself just before the ``N``-th one (``N = 0``: never) and, when it ends
    normally, writes how many it passed to ``COUNT_FILE`` (the range a schedule draws from).
    """
    import os
    import signal

    from langgraph.store.sqlite import SqliteStore

    at, count_file, cli, *args = argv
    target = int(at)
    seen = [0]

    def point() -> None:
        seen[0] += 1
        if seen[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)

    def counted(real: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            point()
            return real(*a, **k)

        return wrapper

    SqliteStore.batch = counted(SqliteStore.batch)  # type: ignore[method-assign]
    os.replace = counted(os.replace)
    os.rename = counted(os.rename)
    os.write = counted(os.write)
    try:
        from chromadb.api.models.Collection import Collection

        Collection.upsert = counted(Collection.upsert)  # type: ignore[method-assign]
    except ImportError:  # pragma: no cover - chromadb is a dependency
        pass
    code = 0
    if cli == "queryagent":
        from graphs.cli import main

        code = main(args)
    elif cli == "queryagent-train":
        from training.cli import main as train_main

        code = train_main(args)
    elif cli == "ingest":
        ingest_fast(*args)
    elif cli == "append":
        from graphs.serving.events import add_purchases, read_events

        url, events = args
        catalog = FakeCatalog(load_dataset(TINY).products.values())
        add_purchases(open_store(url=url), catalog, read_events(events))
    Path(count_file).write_text(str(seen[0]))
    sys.exit(code)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "append":
        append(rest[0], int(rest[1]), int(rest[2]), rest[3])
    elif command == "killed":
        killed(rest)
    elif command == "slow-eval":
        slow_eval(rest)
    else:
        raise SystemExit(f"unknown worker command {command!r}")
