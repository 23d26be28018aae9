"""The trajectory recorder on the graph with fakes, and the v1 file format."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.context import Context
from agent.drafting import MicroBatchingDrafter, ScriptedDrafter
from graphs.query_agent import Deps, build_graph
from graphs.trajectories import (
    SCHEMA,
    TrajectoryError,
    TrajectoryRecord,
    TrajectoryRecorder,
    append_trajectories,
    check_appendable,
    load_trajectories,
    meta_path,
    read_meta,
    write_trajectories,
)
from memory_store import UnknownUserError
from tests.helpers.fakes import FakeCatalog

FIXTURE = Path(__file__).parents[1] / "fixtures" / "trajectories-v1.jsonl"
FILAMENT_USER = "A1TINYUSER01"  # bought filament (x3) then beakers


def compile_graph(tiny_dataset, store, drafter, **kw):
    catalog = FakeCatalog(tiny_dataset.products.values())
    return build_graph(Deps(drafter=drafter, catalog=catalog)).compile(store=store, **kw)


@pytest.fixture()
def refined(tiny_dataset, store) -> tuple[TrajectoryRecord, dict]:
    """A run whose draft does not fit ("duct tape" for a filament and beaker buyer) and whose
    refinement does, recorded with a thread id."""
    drafter = ScriptedDrafter(["Query: duct tape", "Query: glass beaker set"])
    graph = compile_graph(tiny_dataset, store, drafter, checkpointer=InMemorySaver())
    recorder = TrajectoryRecorder(model="scripted")
    out = graph.invoke(
        {"user_id": FILAMENT_USER, "before": 5},
        {"callbacks": [recorder], "configurable": {"thread_id": "t-1"}},
        context=Context(max_refinements=2),
    )
    assert recorder.errors == [] and len(recorder.records) == 1
    return recorder.records[0], out


def test_draft_and_refine_are_recorded_as_steps(refined) -> None:
    record, out = refined
    assert [a["kind"] for a in out["attempts"]] == ["draft", "refine"]  # the scenario holds
    assert [s.node for s in record.steps] == ["draft_query", "refine_query"]
    assert [(s.turn, s.kind) for s in record.steps] == [(0, "draft"), (1, "refine")]
    # LangGraph supersteps: recall 1, draft 2, retrieve 3, check 4, refine 5
    assert [s.step for s in record.steps] == [2, 5]
    for step, attempt in zip(record.steps, out["attempts"], strict=True):
        # the ids recorded at generation time, carried through untouched (never re-tokenized)
        assert step.prompt_token_ids == attempt["prompt_token_ids"]
        assert step.completion_token_ids == attempt["completion_token_ids"]
        assert step.completion_token_ids == list(attempt["completion"].encode())
        assert [m.model_dump() for m in step.messages] == attempt["messages"]
        assert step.query == attempt["query"] and step.error is None
        assert [(p.item_id, p.rank, p.score) for p in step.retrieved] == [
            (p["item_id"], p["rank"], p["score"]) for p in attempt["products"]
        ]
        assert step.consistency is not None
        assert step.consistency.model_dump() == attempt["consistency"]
    assert record.steps[0].consistency.score < 0.55 <= record.steps[1].consistency.score


def test_record_header_profile_and_final(refined) -> None:
    record, out = refined
    assert record.schema_ == SCHEMA
    assert record.user_id == FILAMENT_USER and record.before == 5
    assert record.thread_id == "t-1" and record.model == "scripted"
    assert record.memory_recalled
    assert record.profile["user_id"] == FILAMENT_USER and record.profile["n_events"] == 5
    assert record.final.query == out["query"] == "glass beaker set"
    assert record.final.source == "model"
    assert record.final.consistency == out["consistency"]
    assert record.final.product_ids == [p["item_id"] for p in out["products"]]
    assert record.target is None


def test_unparsed_draft_is_a_step_with_its_error(tiny_dataset, store) -> None:
    graph = compile_graph(tiny_dataset, store, ScriptedDrafter(["..."]))
    recorder = TrajectoryRecorder()
    graph.invoke(
        {"user_id": FILAMENT_USER}, {"callbacks": [recorder]}, context=Context(max_refinements=0)
    )
    [record] = recorder.records
    [step] = record.steps
    assert step.query is None and step.error and step.retrieved == []
    assert step.consistency is not None and step.consistency.score == 0.0
    assert record.final.source == "fallback" and record.thread_id is None


def test_batch_with_one_shared_recorder_keeps_runs_apart(tiny_dataset, store) -> None:
    def reply(messages: list[dict[str, str]]) -> str:
        # the answer depends on the shopper's prompt, so runs mixed up between users would show
        return "Query: " + ("beaker" if "Beaker" in messages[-1]["content"] else "tape measure")

    drafter = MicroBatchingDrafter(ScriptedDrafter(reply), max_batch=3)
    graph = compile_graph(tiny_dataset, store, drafter)
    done: list[str] = []
    recorder = TrajectoryRecorder(on_record=lambda r: done.append(r.user_id))
    users = ["A1TINYUSER01", "A1TINYUSER02", "A1TINYUSER03"]
    outs = graph.batch(
        [{"user_id": u} for u in users],
        config={"callbacks": [recorder], "max_concurrency": 3},
        context=Context(max_refinements=1),
    )
    assert sorted(done) == users
    by_user = {r.user_id: r for r in recorder.records}
    assert sorted(by_user) == users and len({r.run_id for r in recorder.records}) == 3
    for user, out in zip(users, outs, strict=True):
        record = by_user[user]
        assert record.profile["user_id"] == user
        assert record.final.query == out["query"]
        assert len(record.steps) == len(out["attempts"])
        assert [s.prompt_token_ids for s in record.steps] == [
            a["prompt_token_ids"] for a in out["attempts"]
        ]
    assert recorder._runs == {} and recorder._root_of == {} and recorder._nodes == {}
    drained = recorder.drain()
    assert len(drained) == 3 and recorder.records == []


def test_stream_and_ainvoke_are_recorded_too(tiny_dataset, store) -> None:
    graph = compile_graph(tiny_dataset, store, ScriptedDrafter(["Query: duct tape"]))
    recorder = TrajectoryRecorder()
    inp, config = {"user_id": FILAMENT_USER}, {"callbacks": [recorder]}
    ctx = Context(max_refinements=1)
    for _ in graph.stream(inp, config, stream_mode="updates", context=ctx):
        pass
    asyncio.run(graph.ainvoke(inp, config, context=ctx))
    streamed, awaited = recorder.records
    for record in (streamed, awaited):
        assert [s.node for s in record.steps] == ["draft_query", "refine_query"]
        assert record.final.query == "duct tape" and record.final.product_ids
        assert all(s.consistency is not None for s in record.steps)


def test_failed_run_leaves_no_record(tiny_dataset, store) -> None:
    graph = compile_graph(tiny_dataset, store, ScriptedDrafter(["Query: x"]))
    recorder = TrajectoryRecorder()
    with pytest.raises(UnknownUserError):
        graph.invoke({"user_id": "NOBODY"}, {"callbacks": [recorder]})
    assert recorder.records == [] and recorder.failed_runs == 1
    assert recorder._runs == {} and recorder._root_of == {}


# -- files ------------------------------------------------------------------------------------


def test_write_then_load_round_trips(tmp_path: Path, refined) -> None:
    record, _ = refined
    other = record.model_copy(update={"user_id": "A1TINYUSER02", "before": None})
    path = tmp_path / "t.jsonl"
    write_trajectories(path, [record, other], {"command": "test", "config": {"k": 1}})
    loaded = load_trajectories(path)
    assert loaded == [record, other] and loaded.skipped == 0
    assert json.loads(path.read_text().splitlines()[0])["schema"] == SCHEMA
    meta = read_meta(path)
    assert meta is not None
    assert meta["schema"] == SCHEMA and meta["record_count"] == 2
    assert meta["command"] == "test" and meta["config"] == {"k": 1}
    assert meta["code_version"] and "created" in meta and "catalog" in meta
    assert {p.name for p in tmp_path.iterdir()} == {"t.jsonl", "t.jsonl.meta.json"}  # no temp


def test_bad_line_is_named_or_skipped(tmp_path: Path, refined) -> None:
    record, _ = refined
    good = record.to_json()
    extra = json.loads(good)
    extra["surprise"] = 1  # strict: an unknown key is an error
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good, good, json.dumps(extra), "", "{not json", good]) + "\n")
    with pytest.raises(TrajectoryError, match=r"bad\.jsonl:3: surprise"):
        load_trajectories(path)
    loaded = load_trajectories(path, skip_invalid=True)
    assert len(loaded) == 3 and loaded.skipped == 2
    assert loaded.problems[0].endswith("bad.jsonl:3: surprise: Extra inputs are not permitted")
    assert ":5: " in loaded.problems[1]


def test_strict_types_and_missing_file(tmp_path: Path, refined) -> None:
    record, _ = refined
    data = json.loads(record.to_json())
    data["steps"][0]["step"] = "2"  # no silent coercion
    with pytest.raises(ValueError, match="steps.0.step"):
        TrajectoryRecord.model_validate_json(json.dumps(data))
    data = json.loads(record.to_json())
    data["schema"] = "queryagent.trajectory/v2"
    with pytest.raises(ValueError, match="schema"):
        TrajectoryRecord.model_validate_json(json.dumps(data))
    with pytest.raises(TrajectoryError, match="no such trajectory file"):
        load_trajectories(tmp_path / "absent.jsonl")


def test_append_creates_then_grows_and_refuses_bad_logs(tmp_path: Path, refined) -> None:
    record, _ = refined
    log = tmp_path / "log.jsonl"
    assert check_appendable(log) == 0
    assert append_trajectories(log, [record], {"command": "one"}) == 1
    first = read_meta(log)
    assert first is not None and first["record_count"] == 1
    assert append_trajectories(log, [record], {"command": "two"}) == 2
    meta = read_meta(log)
    assert meta is not None and meta["record_count"] == 2 and meta["command"] == "two"
    assert meta["created"] == first["created"] and "updated" in meta
    assert load_trajectories(log) == [record, record] and check_appendable(log) == 2

    with pytest.raises(TrajectoryError, match="does not exist"):
        append_trajectories(tmp_path / "nowhere" / "log.jsonl", [record], {})
    with pytest.raises(TrajectoryError, match="does not exist"):
        check_appendable(tmp_path / "nowhere" / "log.jsonl")

    broken = tmp_path / "broken.jsonl"
    broken.write_text(record.to_json() + "\nnot a record\n")
    with pytest.raises(TrajectoryError, match=r"broken\.jsonl:2:"):
        append_trajectories(broken, [record], {})
    assert broken.read_text().count("\n") == 2 and not meta_path(broken).exists()

    other = tmp_path / "other.jsonl"
    meta_path(other).write_text(json.dumps({"schema": "someone.else/v3"}))
    with pytest.raises(TrajectoryError, match="someone.else/v3"):
        append_trajectories(other, [record], {})
    assert not other.exists()


def test_frozen_v1_fixture_stays_loadable() -> None:
    """tests/fixtures/trajectories-v1.jsonl was written once by the v1 recorder and is never
    regenerated: if this fails, the change broke v1 files; make a v2 schema instead."""
    records = load_trajectories(FIXTURE)
    assert len(records) == 3 and records.skipped == 0
    meta = read_meta(FIXTURE)
    assert meta is not None and meta["record_count"] == 3 and meta["schema"] == SCHEMA

    live, unparsed, held_out = records
    assert live.user_id == "A1TINYUSER01" and live.thread_id == "fixture-thread-1"
    assert live.before is None and live.target is None and live.memory_recalled
    assert [(s.node, s.step, s.kind, s.query) for s in live.steps] == [
        ("draft_query", 2, "draft", "duct tape"),
        ("refine_query", 5, "refine", "glass beaker set"),
    ]
    assert live.steps[1].completion == "Query: glass beaker set"
    assert live.steps[1].completion_token_ids == list(b"Query: glass beaker set")
    assert len(live.steps[0].prompt_token_ids) > 100
    assert live.steps[1].retrieved[0].item_id == "B000TINY04"
    assert live.steps[1].retrieved[0].rank == 1 and live.steps[1].retrieved[0].score == 1.0
    assert live.steps[1].consistency is not None and live.steps[1].consistency.score == 0.7919
    assert live.final.query == "glass beaker set" and live.final.source == "model"
    assert live.final.product_ids[:2] == ["B000TINY04", "B000TINY06"]

    [step] = unparsed.steps
    assert step.query is None and step.error == "no query text in completion"
    assert step.retrieved == [] and unparsed.final.source == "fallback"
    assert unparsed.final.consistency is None

    assert held_out.before == 5 and len(held_out.steps) == 3
    assert held_out.target is not None
    assert held_out.target.item_id == "B000TINY10"
    assert held_out.target.title == "Fluke 117 Electricians True RMS Multimeter"
    assert held_out.target.query == (
        "test measure inspect electrical testing multimeters analyzers digital"
    )
