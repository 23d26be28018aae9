"""UserMemory on an InMemoryStore: registry, events, the profile cache and its invalidation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from langgraph.store.memory import InMemoryStore

import memory_store.memory as memory_module
from memory_store import (
    PROFILES_NAMESPACE,
    USERS_NAMESPACE,
    BehaviorEvent,
    Dataset,
    StoreError,
    UnknownUserError,
    UserMemory,
    build_profile,
    events_from_sequence,
    events_namespace,
    load_jsonl,
    open_store,
)

TINY_JSONL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-jsonl"
COLD_USER = "A1TINYUSER04"


@pytest.fixture
def tiny() -> Dataset:
    return load_jsonl(TINY_JSONL)


@pytest.fixture
def memory() -> UserMemory:
    return UserMemory(InMemoryStore())


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Records every profile the memory builds (user, number of events)."""
    calls: list[tuple[str, int]] = []
    real = memory_module.build_profile

    def counting(user_id, events, **kwargs):  # type: ignore[no-untyped-def]
        events = list(events)
        calls.append((user_id, len(events)))
        return real(user_id, events, **kwargs)

    monkeypatch.setattr(memory_module, "build_profile", counting)
    return calls


def make_events(user: str, n: int, start: int = 0) -> list[BehaviorEvent]:
    return [
        BehaviorEvent(
            user_id=user,
            seq=seq,
            item_id=f"I{seq}",
            title=f"Item {seq}",
            category=f"Industrial & Scientific Cat {seq % 3}",
            brand=f"Brand {seq % 2}",
        )
        for seq in range(start, start + n)
    ]


def test_unknown_versus_no_history(memory: UserMemory) -> None:
    assert memory.register_users(["cold", "cold"]) == 1
    assert memory.known("cold") and not memory.known("ghost")
    assert memory.n_events("cold") == 0
    assert memory.events("cold") == []
    profile = memory.profile("cold")
    assert profile.is_cold_start and "cold start" in profile.latent_identity
    with pytest.raises(UnknownUserError) as err:
        memory.profile("ghost")
    assert str(err.value).startswith("unknown user 'ghost'")
    with pytest.raises(KeyError):
        memory.events("ghost")


def test_register_keeps_existing_history(memory: UserMemory) -> None:
    memory.add_events(make_events("u", 3))
    assert memory.register_users(["u", "v"]) == 1
    assert memory.n_events("u") == 3


def test_events_are_ordered_and_paged(memory: UserMemory) -> None:
    events = make_events("u", 25)  # more than the store's default search limit of 10
    memory.add_events(reversed(events))
    assert memory.events("u") == events
    assert memory.events("u", before=7) == events[:7]
    assert memory.store.get(events_namespace("u"), "00000024") is not None
    assert memory.store.get(USERS_NAMESPACE, "u").value["n_events"] == 25  # type: ignore[union-attr]


def test_add_events_is_idempotent(memory: UserMemory) -> None:
    events = make_events("u", 5)
    memory.add_events(events)
    memory.add_events(events)
    memory.add_events(events[2:4])
    assert memory.n_events("u") == 5
    assert memory.events("u") == events


def test_add_events_rejects_gaps_and_writes_nothing(memory: UserMemory) -> None:
    memory.add_events(make_events("u", 2))
    with pytest.raises(ValueError, match="gap: seq 2 is missing"):
        memory.add_events(make_events("u", 2, start=3) + make_events("v", 1))
    assert memory.n_events("u") == 2
    assert not memory.known("v")


def test_profile_is_cached_and_reused(memory: UserMemory, builds: list) -> None:
    memory.add_events(make_events("u", 6))
    first = memory.profile("u")
    again = memory.profile("u")
    assert again == first
    assert builds == [("u", 6)]
    cached = memory.store.get(PROFILES_NAMESPACE, "u@6")
    assert cached is not None and cached.value["n_events"] == 6


def test_profile_rebuilt_when_new_events_arrive(memory: UserMemory, builds: list) -> None:
    memory.add_events(make_events("u", 4))
    old = memory.profile("u")
    memory.add_events(make_events("u", 2, start=4))
    new = memory.profile("u")
    assert new.n_events == 6 and new != old
    assert builds == [("u", 4), ("u", 6)]
    # The profile of the first four events is still valid and still cached.
    assert memory.profile("u", before=4) == old
    assert builds == [("u", 4), ("u", 6)]


def test_profile_rebuilt_when_an_event_is_overwritten(memory: UserMemory, builds: list) -> None:
    events = make_events("u", 4)
    memory.add_events(events)
    before = memory.profile("u")
    memory.add_events([events[1]])  # same content: cache still valid
    assert memory.profile("u") == before
    assert len(builds) == 1
    memory.add_events([events[1].model_copy(update={"brand": "New Brand"})])
    after = memory.profile("u")
    assert len(builds) == 2
    assert "New Brand" in {n.name for n in after.interest_graph.nodes}


def test_profile_before_cutoff_is_leak_free(memory: UserMemory, tiny: Dataset) -> None:
    memory.ingest_dataset(tiny, progress=False)
    user = "A1TINYUSER07"
    events = events_from_sequence(user, tiny.sequences[user], tiny.products)
    for t in range(len(events) + 2):
        assert memory.profile(user, before=t) == build_profile(user, events, before=t)
    assert memory.profile(user, before=-1).is_cold_start


def test_ingest_dataset(memory: UserMemory, tiny: Dataset) -> None:
    stats = memory.ingest_dataset(tiny, progress=False)
    assert (stats.users, stats.events) == (7, 33)
    assert all(memory.known(u) for u in tiny.users)
    assert memory.n_events(COLD_USER) == 0
    assert memory.profile(COLD_USER).is_cold_start
    user = "A1TINYUSER05"
    assert [e.item_id for e in memory.events(user)] == tiny.sequences[user]
    assert memory.events(user)[0].title == tiny.products[tiny.sequences[user][0]].title
    again = memory.ingest_dataset(tiny, progress=False)
    assert again.events == 33 and memory.n_events(user) == 7


def test_memory_from_threads(memory: UserMemory, tiny: Dataset) -> None:
    memory.ingest_dataset(tiny, progress=False)
    users = [u for u in tiny.users for _ in range(5)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        profiles = list(pool.map(memory.profile, users))
    assert [p.user_id for p in profiles] == users


def test_open_store_rejects_unknown_urls() -> None:
    with pytest.raises(StoreError, match="unsupported store url"):
        open_store(url="redis://localhost")
