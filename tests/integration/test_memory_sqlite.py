"""The memory on a real SqliteStore file, and the loaders on the real bundled data set."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from langgraph.store.sqlite import SqliteStore

from memory_store import (
    PROFILES_NAMESPACE,
    USERS_NAMESPACE,
    DataError,
    Dataset,
    StoreError,
    UserMemory,
    leave_one_out,
    load_dataset,
    load_jsonl,
    load_recbole,
    open_store,
)

pytestmark = pytest.mark.integration

TINY_JSONL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-jsonl"
BUNDLED = Path("/work/shared/data/amazon-scientific")
needs_bundled = pytest.mark.skipif(
    not (BUNDLED / "Scientific.text").exists(), reason="bundled Amazon data set not present"
)


@pytest.fixture(scope="module")
def bundled() -> Dataset:
    return load_recbole(BUNDLED)


def close(store: object) -> None:
    assert isinstance(store, SqliteStore)
    store.conn.close()


def test_sqlite_store_persists_across_reopen(tmp_path: Path) -> None:
    tiny = load_jsonl(TINY_JSONL)
    store = open_store(home=tmp_path)
    assert isinstance(store, SqliteStore)
    assert (tmp_path / "memory.sqlite").exists()
    memory = UserMemory(store)
    memory.ingest_dataset(tiny, progress=False)
    profile = memory.profile("A1TINYUSER07", before=5)
    close(store)

    reopened = UserMemory(open_store(home=tmp_path))
    assert reopened.known("A1TINYUSER04") and reopened.n_events("A1TINYUSER04") == 0
    assert not reopened.known("nobody")
    assert [e.item_id for e in reopened.events("A1TINYUSER07")] == tiny.sequences["A1TINYUSER07"]
    assert reopened.store.get(PROFILES_NAMESPACE, "A1TINYUSER07@5") is not None
    assert reopened.profile("A1TINYUSER07", before=5) == profile
    # Ingesting the same data again changes nothing: no event differs, no profile goes stale.
    reopened.ingest_dataset(tiny, progress=False)
    entry = reopened.store.get(USERS_NAMESPACE, "A1TINYUSER07")
    assert entry is not None and entry.value == {
        "user_id": "A1TINYUSER07",
        "n_events": 7,
        "revision": 0,
        "generation": 2,  # the second ingest wrote it (see UserMemory.ingest_dataset)
    }
    close(reopened.store)


def test_sqlite_url_and_threads(tmp_path: Path) -> None:
    store = open_store(url=f"sqlite:///{tmp_path / 'sub' / 'm.sqlite'}")
    memory = UserMemory(store)
    tiny = load_jsonl(TINY_JSONL)
    memory.ingest_dataset(tiny, progress=False)
    users = tiny.users * 6
    with ThreadPoolExecutor(max_workers=8) as pool:
        profiles = list(pool.map(memory.profile, users))
    assert [p.user_id for p in profiles] == users
    close(store)


def test_postgres_url_without_driver_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The postgres extra is installed by `make install`; hide it to check the message a user
    # without it gets (a None entry in sys.modules makes the import fail).
    monkeypatch.setitem(sys.modules, "langgraph.store.postgres", None)
    with pytest.raises(StoreError, match="postgres extra"):
        open_store(url="postgresql://localhost/queryagent")


@needs_bundled
def test_bundled_totals(bundled: Dataset) -> None:
    assert len(bundled.products) == 4385
    assert len(bundled.users) == 8442
    assert len(bundled.examples("train")) == 34101
    assert len(bundled.examples("valid")) == 8442
    assert len(bundled.examples("test")) == 8442
    # 59,384 interactions in the test rows, plus 43 older ones of the 3 capped users.
    assert sum(len(s) for s in bundled.sequences.values()) == 59427
    assert sum(1 for p in bundled.products.values() if not p.category) == 134
    assert all(
        p.category.startswith("Industrial & Scientific ")
        for p in bundled.products.values()
        if p.category
    )
    assert load_dataset(BUNDLED).name == "Scientific"


@needs_bundled
def test_bundled_splits_follow_the_documented_rules(bundled: Dataset) -> None:
    assert leave_one_out(bundled.users, bundled.sequences) == bundled.splits


@needs_bundled
def test_bundled_brand_with_dot_space_is_parsed(bundled: Dataset) -> None:
    brands = {p.brand for p in bundled.products.values()}
    assert {"Mr. Heater", "J.V. Converting", "C. B. Gitty"} <= brands


@needs_bundled
@pytest.mark.slow
def test_ingest_bundled_into_sqlite(tmp_path: Path, bundled: Dataset) -> None:
    memory = UserMemory(open_store(home=tmp_path))
    stats = memory.ingest_dataset(bundled, progress=False)
    assert (stats.users, stats.events) == (8442, 59427)
    assert stats.seconds < 30
    user = bundled.users[0]
    assert [e.item_id for e in memory.events(user)] == bundled.sequences[user]
    close(memory.store)


def test_missing_bundled_like_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        load_recbole(tmp_path)
