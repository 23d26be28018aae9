"""Logged runs joined with the purchases recorded after them (training.outcomes), the held-back
cut (memory_store.holdout), purchases recorded one by one (graphs.serving.events) and extension
ingest."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from graphs.offline.ingest import ingest
from graphs.record import (
    SCHEMA,
    TrajectoryRecord,
    load_trajectories,
    run_stamp,
    write_trajectories,
)
from graphs.serving.events import EventLine, EventsError, add_purchases, read_events
from memory_store import BehaviorEvent, UserMemory, load_dataset, open_store
from memory_store.holdout import hold_out
from memory_store.queries import common_root, ground_truth_query
from tests.helpers.fakes import FakeCatalog
from training.outcomes import OutcomeError, join_outcomes, live_metrics


@pytest.fixture()
def cut(tmp_path: Path, tiny_dataset):
    """The tiny data set cut before each shopper's last purchase, and the held-back events."""
    events = tmp_path / "next.jsonl"
    counts = hold_out(tiny_dataset, tmp_path / "cut", events)
    return load_dataset(tmp_path / "cut"), events, counts


@pytest.fixture()
def live(tmp_path: Path, cut, tiny_dataset):
    """A home store ingested from the cut, and the catalog the events are recorded against."""
    dataset, events, _ = cut
    store = open_store(tmp_path / "home")
    ingest(dataset, store, progress=False)
    return store, FakeCatalog(tiny_dataset.products.values()), events


def _record(store, user: str, product_ids: list[str], query: str | None) -> TrajectoryRecord:
    """A live-logged run as `recommend --log` writes it: no target, the memory stamp in run."""
    return TrajectoryRecord.model_validate(
        {
            "schema": SCHEMA,
            "run_id": f"run-{user}",
            "thread_id": None,
            "user_id": user,
            "before": None,
            "model": "none",
            "created": "2026-11-30T00:00:00+00:00",
            "profile": UserMemory(store).profile(user).model_dump(mode="json"),
            "steps": [],
            "final": {"query": query, "source": "memory", "product_ids": product_ids},
            "run": run_stamp(store, user),
        }
    )


def test_holdout_cuts_the_last_purchase(cut, tiny_dataset) -> None:
    dataset, events, counts = cut
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert counts["held"] == len(lines) == 6  # A1TINYUSER04 has no purchase to hold back
    for line in lines:
        full = tiny_dataset.sequences[line["user_id"]]
        assert dataset.sequences[line["user_id"]] == full[:-1] and line["item_id"] == full[-1]
    assert dataset.sequences["A1TINYUSER04"] == []
    assert len(dataset.products) == len(tiny_dataset.products)


def test_extension_ingest_appends_and_keeps_old_events(tmp_path: Path, cut, tiny_dataset) -> None:
    dataset, _, _ = cut
    store = open_store(tmp_path / "ext")
    memory = UserMemory(store)
    ingest(dataset, store, progress=False)
    before = {u: memory.events(u) for u in dataset.users}
    revisions = {u: memory._entry(u)["revision"] for u in dataset.users}
    old_profile = memory.profile("A1TINYUSER02")
    ingest(tiny_dataset, store, progress=False)  # the full folder extends every sequence
    for user in dataset.users:
        now = memory.events(user)
        assert now[: len(before[user])] == before[user]  # old events untouched
        assert [e.item_id for e in now] == tiny_dataset.sequences[user]
        assert memory._entry(user)["revision"] == revisions[user]  # nothing was overwritten
    # the memory is bumped: a longer history, a profile built from it
    assert memory.profile("A1TINYUSER02").n_events == old_profile.n_events + 1
    assert memory.ingest_state() == {**memory.ingest_state(), "generation": 2, "complete": True}


def test_events_add_appends_purchases_in_order(live) -> None:
    store, catalog, events = live
    memory = UserMemory(store)
    n = memory.n_events("A1TINYUSER02")
    lines = [
        ("a:1", EventLine(user_id="A1TINYUSER02", item_id="B000TINY06", time=100)),
        ("a:2", EventLine(user_id="A1TINYUSER02", item_id="B000TINY01", time="2026-11-30T10:00")),
        ("a:3", EventLine(user_id="A1NEWSHOPPER", item_id="B000TINY01")),
    ]
    result = add_purchases(store, catalog, lines)
    assert (result.events, result.shoppers, result.new_shoppers) == (3, 2, 1)
    added = memory.events("A1TINYUSER02")[n:]
    assert [(e.seq, e.item_id, e.timestamp) for e in added] == [
        (n, "B000TINY06", 100.0),
        (n + 1, "B000TINY01", datetime(2026, 11, 30, 10, tzinfo=UTC).timestamp()),
    ]
    assert added[0].category == catalog.products["B000TINY06"].category  # snapshot kept
    assert memory.n_events("A1NEWSHOPPER") == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"user_id": "A1TINYUSER02", "item_id": "NOPE"}\n', "unknown item id 'NOPE'"),
        ('{"user_id": "A1TINYUSER02"}\n', "item_id: Field required"),
        ("not json\n", "not JSON"),
        ('{"user_id": "A1.X", "item_id": "B000TINY01"}\n', "contains '.'"),
        ('{"user_id": "A1TINYUSER02", "item_id": "B000TINY01", "time": "soon"}\n', "not a time"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_written(
    live, tmp_path: Path, text: str, message: str
) -> None:
    store, catalog, _ = live
    memory = UserMemory(store)
    n = memory.n_events("A1TINYUSER02")
    path = tmp_path / "bad.jsonl"
    # a good line first: it must not be written either
    path.write_text('{"user_id": "A1TINYUSER02", "item_id": "B000TINY01"}\n' + text)
    with pytest.raises(EventsError, match=message) as err:
        add_purchases(store, catalog, read_events(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert memory.n_events("A1TINYUSER02") == n


def test_join_gives_runs_their_next_purchase_and_counts_the_rest(live, tiny_dataset) -> None:
    store, catalog, events = live
    root = common_root(p.category for p in tiny_dataset.products.values())
    with_later = _record(store, "A1TINYUSER02", ["B000TINY06", "B000TINY05"], "nope")
    without = _record(store, "A1TINYUSER03", [], None)
    add_purchases(
        store,
        catalog,
        [(line.user_id, line) for _, line in read_events(events) if line.user_id != "A1TINYUSER03"],
    )
    result = join_outcomes([with_later, without], store)
    assert (result.joined, result.no_later, result.total) == (1, 1, 2)
    assert "1 of 2 runs have no later purchase yet; skipped" in result.summary()
    (joined,) = result.records
    assert joined.target is not None and joined.target.item_id == "B000TINY06"  # its last item
    product = tiny_dataset.products["B000TINY06"]
    assert joined.target.query == ground_truth_query(product.category, root)
    assert joined.target.title == product.title
    assert joined.run["outcome"]["after"] == with_later.run["memory"]["n_events"]
    metrics = live_metrics(result.records)
    assert metrics["runs"] == 1 and metrics["hit@10"]["mean"] == 1.0
    assert metrics["query_match"]["mean"] == 0.0


def test_rewards_score_a_logged_run_against_its_outcome(live) -> None:
    from training.rewards import item_reward, query_reward

    store, catalog, events = live
    record = _record(store, "A1TINYUSER02", ["B000TINY06"], None)
    add_purchases(store, catalog, read_events(events))
    (joined,) = join_outcomes([record], store).records
    assert joined.target is not None
    truth = joined.target.query
    hit = joined.model_copy(update={"final": joined.final.model_copy(update={"query": truth})})
    as_dict = json.loads(hit.to_json())
    assert query_reward(["c"], trajectory=[as_dict]) == [1.0]
    # the hit half (this record keeps no retrieved titles for the title half)
    assert item_reward(["c"], trajectory=[as_dict]) == [0.5]
    as_dict["final"]["product_ids"] = ["B000TINY01"]
    assert item_reward(["c"], trajectory=[as_dict]) == [0.0]


def test_a_rebuilt_memory_is_skipped_with_its_reason(live) -> None:
    store, catalog, events = live
    record = _record(store, "A1TINYUSER02", [], None)
    add_purchases(store, catalog, read_events(events))
    memory = UserMemory(store)
    old = memory.events("A1TINYUSER02")[0]
    # rewritten history: the first event is another item now
    memory.add_events([BehaviorEvent(**{**old.model_dump(), "item_id": "B000TINY12"})])
    result = join_outcomes([record], store)
    assert (result.joined, result.rebuilt) == (0, 1)
    assert any("memory was rebuilt" in line for line in result.summary())


def test_a_run_on_another_catalog_version_is_refused(live) -> None:
    store, _, _ = live
    record = _record(store, "A1TINYUSER02", [], None)
    record.run["catalog"]["version"] = "0123456789ab"
    with pytest.raises(OutcomeError, match="catalog version '0123456789ab'") as err:
        join_outcomes([record], store)
    assert "\n" not in str(err.value)


def test_outcomes_cli(live, tmp_path: Path, capsys) -> None:
    from training.cli import main

    store, catalog, events = live
    home = tmp_path / "home"
    runs = tmp_path / "runs.jsonl"
    records = [_record(store, u, [], None) for u in ("A1TINYUSER02", "A1TINYUSER03")]
    write_trajectories(runs, records, {"command": "test"})
    add_purchases(store, catalog, [x for x in read_events(events) if "03" not in x[1].user_id])
    out = tmp_path / "joined.jsonl"
    args = ["outcomes", "--from-trajectories", str(runs), "--home", str(home), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "1 of 2 runs have no later purchase yet; skipped" in text
    assert "logged runs (1 runs): hit@10 0.000" in text
    (joined,) = load_trajectories(out)
    assert joined.target is not None and joined.target.item_id == "B000TINY06"
    # another catalog version: one line, exit 2
    records[0].run["catalog"]["version"] = "ffffffffffff"
    write_trajectories(runs, records, {"command": "test"})
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("queryagent-train: error: 1 of 2 runs were logged on catalog version")
    assert "\n" not in err
