"""Nearline precompute on fakes: resumes after a kill, --since, only changed memories recomputed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from langgraph.store.memory import InMemoryStore

from agent.drafting import ScriptedDrafter
from graphs.offline.ingest import ingest
from graphs.query_agent import Deps
from graphs.serving.precompute import (
    age_text,
    parse_since,
    precompute,
    read_users_file,
    stale,
)
from graphs.serving.results import (
    RECOMMENDATIONS_NAMESPACE,
    PrecomputeError,
    Versions,
    get_recommendation,
)
from memory_store import BehaviorEvent, UserMemory
from tests.helpers.contexts import drafting
from tests.helpers.fakes import FakeCatalog

USERS = [f"A1TINYUSER0{n}" for n in range(1, 8)]  # the tiny data set's 7 shoppers


def reply(messages: list[dict[str, str]]) -> str:
    return "Query: " + ("glass beaker set" if "Beaker" in messages[-1]["content"] else "duct tape")


class CountingDrafter(ScriptedDrafter):
    """Counts prompts; raises (a killed job) once ``kill_after`` prompts were answered."""

    def __init__(self, kill_after: int | None = None) -> None:
        super().__init__(reply)
        self.prompts = 0
        self.kill_after = kill_after

    def generate(self, prompts, **kwargs):  # type: ignore[no-untyped-def]
        if self.kill_after is not None and self.prompts + len(prompts) > self.kill_after:
            raise RuntimeError("killed")
        self.prompts += len(prompts)
        return super().generate(prompts, **kwargs)


@pytest.fixture()
def home_store(tiny_dataset) -> InMemoryStore:
    store = InMemoryStore()
    ingest(tiny_dataset, store, progress=False)
    return store


@pytest.fixture(autouse=True)
def _models(tiny_models) -> None:
    global MODELS
    MODELS = tiny_models


MODELS = None  # the tiny catalog's fitted models (set per test from the session fixture)


def deps(tiny_dataset, drafter) -> Deps:
    return Deps(
        drafter=drafter, catalog=FakeCatalog(tiny_dataset.products.values()), ranking=MODELS
    )


def stored(store) -> dict[str, dict]:
    return {i.key: i.value for i in store.search(RECOMMENDATIONS_NAMESPACE, limit=100)}


# The (free) drafting role, asked for since issue 27 (by default a free drafter makes no call):
# one model call per shopper, so prompts == shoppers.
CTX = drafting(max_refinements=0)


def test_computes_every_shopper_with_versions_then_nothing(tiny_dataset, home_store) -> None:
    drafter = CountingDrafter()
    result = precompute(home_store, deps(tiny_dataset, drafter), context=CTX, progress=False)
    assert sorted(result.computed) == USERS and result.up_to_date == 0 and drafter.prompts == 7
    results = stored(home_store)
    assert sorted(results) == USERS
    one = results["A1TINYUSER01"]
    assert one["query"] and one["products"] and one["source"]
    assert "fit" in one and "consistency" not in one
    assert one["products"][0]["item_id"]  # JSON, not models, in the store
    assert one["memory"] == {"n_events": 5, "revision": 0}
    assert one["model"] == "scripted" and len(one["model_digest"]) == 16
    assert one["catalog_version"] and one["code_version"]
    assert datetime.fromisoformat(one["computed_at"]).tzinfo is not None
    again = precompute(home_store, deps(tiny_dataset, drafter), context=CTX, progress=False)
    assert again.computed == [] and again.up_to_date == 7 and drafter.prompts == 7


def test_resumes_after_a_kill_without_redoing_or_losing(tiny_dataset, home_store) -> None:
    killer = CountingDrafter(kill_after=2)
    with pytest.raises(RuntimeError, match="killed"):
        precompute(
            home_store,
            deps(tiny_dataset, killer),
            context=CTX,
            batch_size=1,
            chunk_size=1,  # one shopper per graph.batch, stored before the next
            progress=False,
        )
    finished = stored(home_store)
    assert len(finished) == 2  # the chunks before the kill were stored
    drafter = CountingDrafter()
    result = precompute(home_store, deps(tiny_dataset, drafter), context=CTX, progress=False)
    assert sorted(result.computed) == sorted(set(USERS) - set(finished))
    assert result.up_to_date == 2 and drafter.prompts == 5  # finished shoppers not recomputed
    after = stored(home_store)
    assert sorted(after) == USERS  # nothing lost, one result per shopper
    for user, value in finished.items():
        assert after[user]["computed_at"] == value["computed_at"]


def test_new_events_recompute_only_that_shopper_and_since_selects_them(
    tiny_dataset, home_store
) -> None:
    precompute(home_store, deps(tiny_dataset, CountingDrafter()), context=CTX, progress=False)
    before = stored(home_store)
    since = datetime.now(UTC)
    time.sleep(0.01)  # the in-memory store stamps microseconds
    product = tiny_dataset.products["B000TINY12"]
    UserMemory(home_store).add_events(
        [
            BehaviorEvent(
                user_id="A1TINYUSER02",
                seq=4,
                item_id=product.item_id,
                title=product.title,
                category=product.category,
                brand=product.brand,
            )
        ]
    )
    drafter = CountingDrafter()
    result = precompute(
        home_store, deps(tiny_dataset, drafter), context=CTX, since=since, progress=False
    )
    assert result.selected == 1 and result.computed == ["A1TINYUSER02"] and drafter.prompts == 1
    after = stored(home_store)
    assert after["A1TINYUSER02"]["memory"] == {"n_events": 5, "revision": 0}
    assert after["A1TINYUSER02"]["computed_at"] > before["A1TINYUSER02"]["computed_at"]
    assert all(after[u] == before[u] for u in USERS if u != "A1TINYUSER02")
    # a later --since selects nobody; a run without it finds everything up to date
    later = precompute(
        home_store,
        deps(tiny_dataset, drafter),
        since=datetime.now(UTC) + timedelta(seconds=1),
        progress=False,
    )
    assert later.selected == 0 and later.computed == []
    assert precompute(home_store, deps(tiny_dataset, drafter), progress=False).computed == []


def test_another_model_or_force_recomputes(tiny_dataset, home_store) -> None:
    precompute(home_store, deps(tiny_dataset, CountingDrafter()), context=CTX, progress=False)
    other = CountingDrafter()
    other.name = "another-model"
    assert len(precompute(home_store, deps(tiny_dataset, other), progress=False).computed) == 7
    assert stored(home_store)["A1TINYUSER01"]["model"] == "another-model"
    forced = precompute(
        home_store, deps(tiny_dataset, other), users=["A1TINYUSER03"], force=True, progress=False
    )
    assert forced.computed == ["A1TINYUSER03"] and forced.selected == 1


def test_users_file_and_bad_requests(tiny_dataset, home_store, tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("# nightly\nA1TINYUSER03\n\nA1TINYUSER01  # twice\nA1TINYUSER03\n")
    assert read_users_file(users) == ["A1TINYUSER03", "A1TINYUSER01"]
    result = precompute(
        home_store,
        deps(tiny_dataset, CountingDrafter()),
        users=read_users_file(users),
        progress=False,
    )
    assert sorted(result.computed) == ["A1TINYUSER01", "A1TINYUSER03"]
    with pytest.raises(PrecomputeError, match="unknown shopper.*'NOBODY'"):
        precompute(home_store, deps(tiny_dataset, CountingDrafter()), users=["NOBODY"])
    with pytest.raises(PrecomputeError, match="--engine"):
        precompute(home_store, deps(tiny_dataset, CountingDrafter()), engine="spark")  # type: ignore[arg-type]
    with pytest.raises(PrecomputeError, match="cannot read"):
        read_users_file(tmp_path / "absent.txt")
    with pytest.raises(PrecomputeError, match="not a time"):
        parse_since("yesterday")
    assert parse_since("2026-11-30T16:00:00") == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert parse_since("0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert get_recommendation(home_store, "A1TINYUSER02") is None


def test_results_stored_before_the_fit_rename_read_with_it() -> None:
    store = InMemoryStore()
    store.put(RECOMMENDATIONS_NAMESPACE, "U1", {"user_id": "U1", "query": "q", "consistency": 0.2})
    assert get_recommendation(store, "U1") == {"user_id": "U1", "query": "q", "fit": 0.2}


def test_stale_and_age() -> None:
    v = Versions(model="m", model_digest="d", catalog_version="c", code_version="x")
    entry = {"n_events": 3, "revision": 0}
    fresh = {"memory": {"n_events": 3, "revision": 0}, "model_digest": "d", "catalog_version": "c"}
    assert not stale(fresh, entry, v)
    assert stale(None, entry, v)
    assert stale(fresh, {"n_events": 4, "revision": 0}, v)
    assert stale(fresh, {"n_events": 3, "revision": 1}, v)
    assert stale({**fresh, "catalog_version": "old"}, entry, v)
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert age_text((now - timedelta(seconds=5)).isoformat(), now) == "5 s ago"
    assert age_text((now - timedelta(minutes=3)).isoformat(), now) == "3 min ago"
    assert age_text((now - timedelta(hours=2)).isoformat(), now) == "2 h ago"


def test_since_on_sqlite_whole_second_stamps(tiny_dataset, tmp_path: Path) -> None:
    """SQLite stamps registry writes in whole seconds (naive UTC): the second of --since counts,
    earlier seconds do not."""
    from memory_store import open_store

    store = open_store(tmp_path)
    ingest(tiny_dataset, store, progress=False)
    time.sleep(1.1)  # the ingest's writes fall in an earlier second than ``since``
    since = datetime.now(UTC)
    product = tiny_dataset.products["B000TINY01"]
    UserMemory(store).add_events(
        [BehaviorEvent(user_id="A1TINYUSER04", seq=0, item_id=product.item_id, title=product.title)]
    )
    result = precompute(
        store, deps(tiny_dataset, CountingDrafter()), context=CTX, since=since, progress=False
    )
    assert result.selected == 1 and result.computed == ["A1TINYUSER04"]
