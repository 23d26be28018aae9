"""32 concurrent graph runs against one store, SQLite and PostgreSQL: no lost or duplicated write.

Each of 32 threads writes a new shopper's purchases through its own ``UserMemory`` (as graph
nodes do) and runs the graph for that shopper, which reads the events and caches the profile.
Afterwards every shopper has exactly its events (seq 0..n-1, each once, the right items), its
registry count, and one cached profile equal to the one built single-threaded. The graph runs
without a drafter (recall and the check alone) on a fake catalog: the store is the part under
test, and it is the real one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.context import Context
from graphs.query_agent import Deps, build_graph
from memory_store import (
    PROFILES_NAMESPACE,
    BehaviorEvent,
    UserMemory,
    build_profile,
    events_from_sequence,
    events_namespace,
    open_store,
)
from tests.helpers.fakes import FakeCatalog

RUNS = 32


def sequences(tiny_dataset) -> dict[str, list[str]]:
    items = sorted(tiny_dataset.products)
    return {
        f"CONCURRENT{i:02d}": [items[(i + k * 5) % len(items)] for k in range(2 + i % 6)]
        for i in range(RUNS)
    }


def run_concurrently(store, tiny_dataset, tiny_models) -> dict[str, list[BehaviorEvent]]:
    wanted = {
        user: events_from_sequence(user, seq, tiny_dataset.products)
        for user, seq in sequences(tiny_dataset).items()
    }
    graph = build_graph(
        Deps(
            drafter=None,
            catalog=FakeCatalog(tiny_dataset.products.values()),
            ranking=tiny_models,
        )
    ).compile(store=store)

    def one_run(user: str) -> dict:
        UserMemory(store).add_events(wanted[user])
        return graph.invoke({"user_id": user}, context=Context(max_refinements=1))

    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        outputs = list(pool.map(one_run, wanted))
    assert [o["user_id"] for o in outputs] == list(wanted)
    assert all(o["query"] for o in outputs)
    return wanted


def check_writes(store, wanted: dict[str, list[BehaviorEvent]]) -> None:
    memory = UserMemory(store)
    for user, events in wanted.items():
        assert memory.n_events(user) == len(events)
        stored = store.search(events_namespace(user), limit=1000)
        assert sorted(item.key for item in stored) == [f"{s:08d}" for s in range(len(events))]
        assert memory.events(user) == events
        profiles = [
            item.key
            for item in store.search(PROFILES_NAMESPACE, limit=1000)
            if item.key.startswith(f"{user}@")
        ]
        assert profiles == [f"{user}@{len(events)}"]
        assert memory.profile(user) == build_profile(user, events)


@pytest.mark.integration
def test_32_concurrent_runs_on_sqlite(tiny_dataset, tiny_models, tmp_path: Path) -> None:
    store = open_store(url=f"sqlite:///{tmp_path / 'memory.sqlite'}")
    check_writes(store, run_concurrently(store, tiny_dataset, tiny_models))


@pytest.mark.integration
def test_32_concurrent_runs_on_postgres(tiny_dataset, tiny_models, postgres_url: str) -> None:
    store = open_store(url=postgres_url)
    try:
        check_writes(store, run_concurrently(store, tiny_dataset, tiny_models))
    finally:
        store.conn.close()  # type: ignore[attr-defined]
