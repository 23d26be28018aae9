"""Issue 25, defect 1: events appended by concurrent processes are all stored, exactly once.

``PROCESSES`` real processes (``tests.reliability.workers append``) each record ``ROUNDS`` rounds
of ``LINES_PER_ROUND`` purchases on the same three shoppers, all at once, on SQLite and on a
throwaway PostgreSQL. Before the cross-process write lock, two processes read the same
``n_events`` and wrote the same position: events were lost while every process reported success.
Afterwards each shopper's positions are ``0 .. n-1`` with no gap, ``n_events`` counts them, and
every (worker, round, line) purchase is stored once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from memory_store import USERS_NAMESPACE, UserMemory, events_namespace, open_store
from tests.reliability.workers import LINES_PER_ROUND, SHOPPERS, event_time

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 8
ROUNDS = 25  # 8 x 25 x 3 = 600 events on 3 shoppers


def run_workers(url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.workers",
                "append",
                url,
                str(w),
                str(ROUNDS),
                str(go),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for w in range(PROCESSES)
    ]
    # Let every worker import and open the store, then start them together.
    import time

    time.sleep(3.0)
    go.write_text("go")
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def check_every_event_once(url: str) -> None:
    store = open_store(url=url)
    memory = UserMemory(store)
    seen: Counter[float] = Counter()
    total = 0
    for user in SHOPPERS:
        n = memory.n_events(user)
        keys = sorted(item.key for item in store.search(events_namespace(user), limit=100_000))
        assert keys == [f"{s:08d}" for s in range(n)], f"{user}: positions are not 0..{n - 1}"
        events = memory.events(user)
        assert [e.seq for e in events] == list(range(n))
        seen.update(e.timestamp for e in events if e.timestamp is not None)
        total += n
        assert store.get(USERS_NAMESPACE, user) is not None
    wanted = {
        event_time(w, r, line)
        for w in range(PROCESSES)
        for r in range(ROUNDS)
        for line in range(LINES_PER_ROUND)
    }
    assert total == len(wanted) == PROCESSES * ROUNDS * LINES_PER_ROUND
    assert set(seen) == wanted and max(seen.values()) == 1


@pytest.mark.integration
def test_processes_appending_to_shared_shoppers_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    open_store(url=url)  # created once, before the workers race to create it
    run_workers(url, tmp_path)
    check_every_event_once(url)


@pytest.mark.integration
def test_processes_appending_to_shared_shoppers_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    open_store(url=postgres_url).conn.close()  # type: ignore[attr-defined]
    run_workers(postgres_url, tmp_path)
    check_every_event_once(postgres_url)
