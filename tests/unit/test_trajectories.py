"""Trajectory records built from the graph's output, and the v3 file format (v1, v2 still load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.drafting import MicroBatchingDrafter, ScriptedDrafter
from graphs.query_agent import Deps, build_graph
from graphs.record import (
    SCHEMA,
    SCHEMA_V1,
    SCHEMA_V2,
    TrajectoryError,
    TrajectoryRecord,
    append_trajectories,
    check_appendable,
    load_trajectories,
    meta_path,
    read_meta,
    record_from_output,
    write_trajectories,
)
from tests.helpers.contexts import drafting
from tests.helpers.fakes import FakeCatalog

FIXTURE = Path(__file__).parents[1] / "fixtures" / "trajectories-v1.jsonl"
FIXTURE_V2 = Path(__file__).parents[1] / "fixtures" / "trajectories-v2.jsonl"
FILAMENT_USER = "A1TINYUSER01"  # bought filament (x3) then beakers


@pytest.fixture()
def compile_graph(tiny_models):
    def compile_(tiny_dataset, store, drafter, **kw):
        catalog = FakeCatalog(tiny_dataset.products.values())
        deps = Deps(drafter=drafter, catalog=catalog, ranking=tiny_models)
        return build_graph(deps).compile(store=store, **kw)

    return compile_


@pytest.fixture()
def refined(tiny_dataset, store, compile_graph) -> tuple[TrajectoryRecord, dict]:
    """A run whose draft does not fit ("duct tape" for a filament and beaker buyer) and whose
    refinement does, recorded from its output (the drafting role, asked for since issue 27)."""
    drafter = ScriptedDrafter(["Query: duct tape", "Query: glass beaker set"])
    graph = compile_graph(tiny_dataset, store, drafter)
    inputs = {"user_id": FILAMENT_USER, "before": 5}
    out = graph.invoke(
        inputs,
        {"run_id": "0190e6d2-0000-7000-8000-000000000001"},
        context=drafting(max_refinements=2),
    )
    record = record_from_output(
        out,
        inputs,
        model="scripted",
        run_id="0190e6d2-0000-7000-8000-000000000001",
        thread_id="t-1",
    )
    return record, out


def test_output_carries_the_profile_the_run_used(refined, store) -> None:
    _, out = refined
    assert out["profile"].user_id == FILAMENT_USER and out["profile"].n_events == 5
    # the draft prompt was written from that snapshot
    assert "Beaker" in out["attempts"][0].messages[-1]["content"]


def test_record_steps_are_the_outputs_attempts(refined) -> None:
    record, out = refined
    assert len(out["attempts"]) >= 2  # the model's draft and recalled candidates, at least
    assert len(record.steps) == len(out["attempts"])
    for step, attempt in zip(record.steps, out["attempts"], strict=True):
        # every attempt field, as the graph dumped it: ids untouched (never re-tokenized),
        # retrieved products, the check's report and any other field included
        assert step.model_dump() == attempt.model_dump(mode="json")
    drafted = [s for s in record.steps if s.messages]
    assert drafted and drafted[0].completion == "Query: duct tape"
    assert drafted[0].completion_token_ids == list(b"Query: duct tape")
    assert all(s.check is not None for s in record.steps)


def test_record_header_profile_and_final(refined) -> None:
    record, out = refined
    assert record.schema_ == SCHEMA == "queryagent.trajectory/v3"
    assert record.user_id == FILAMENT_USER and record.before == 5
    assert record.thread_id == "t-1" and record.model == "scripted"
    assert record.run_id == "0190e6d2-0000-7000-8000-000000000001"
    assert record.memory_recalled and record.profile == out["profile"].model_dump(mode="json")
    assert record.final.query == out["query"] and record.final.source == out["source"]
    assert record.final.fit == out["fit"]
    assert record.final.product_ids == [p.item_id for p in out["products"]]
    assert record.run["refinements"] == out["refinements"]
    assert record.target is None


def test_new_attempt_fields_flow_through(refined) -> None:
    """A field the agent adds to QueryAttempt reaches the record and the file unchanged."""
    _, out = refined
    attempts = [
        {**a.model_dump(mode="json"), "candidates": [{"query": "x", "score": 0.5}]}
        for a in out["attempts"]
    ]
    record = record_from_output({**out, "attempts": attempts}, {"user_id": FILAMENT_USER})
    again = TrajectoryRecord.model_validate_json(record.to_json())
    assert again.steps[0].candidates == [{"query": "x", "score": 0.5}]
    assert again.steps[1].model_dump() == attempts[1]


def test_unparsed_draft_is_a_step_with_its_error(tiny_dataset, store, compile_graph) -> None:
    graph = compile_graph(tiny_dataset, store, ScriptedDrafter(["..."]))
    inputs = {"user_id": FILAMENT_USER}
    out = graph.invoke(inputs, context=drafting(max_refinements=0))
    record = record_from_output(out, inputs)
    [step] = [s for s in record.steps if s.messages]  # the model's one (unparsed) draft
    assert step.query is None and step.error and step.products == []
    assert step.completion == "..." and step.check is not None
    assert record.thread_id is None and record.before is None


def test_batch_outputs_are_in_input_order(tiny_dataset, store, compile_graph) -> None:
    """graph.batch returns outputs in input order: output i is input i's run, no key matching."""

    def reply(messages: list[dict[str, str]]) -> str:
        # the answer depends on the shopper's prompt, so runs mixed up between users would show
        return "Query: " + ("beaker" if "Beaker" in messages[-1]["content"] else "tape measure")

    drafter = MicroBatchingDrafter(ScriptedDrafter(reply), max_batch=3)
    graph = compile_graph(tiny_dataset, store, drafter)
    inputs = [
        {"user_id": u, "before": b}
        for u, b in [("A1TINYUSER01", 5), ("A1TINYUSER02", None), ("A1TINYUSER01", 2)]
    ]
    outs = graph.batch(inputs, config={"max_concurrency": 3}, context=drafting(max_refinements=1))
    records = [record_from_output(o, i) for o, i in zip(outs, inputs, strict=True)]
    assert [(r.user_id, r.before) for r in records] == [
        ("A1TINYUSER01", 5),
        ("A1TINYUSER02", None),
        ("A1TINYUSER01", 2),
    ]
    assert [r.profile["n_events"] for r in records] == [5, 4, 2]
    assert len({r.run_id for r in records}) == 3


def test_not_an_agent_output_is_one_line() -> None:
    with pytest.raises(TrajectoryError, match="cannot record"):
        record_from_output({"user_id": "u", "attempts": [{"turn": "zero"}]}, {"user_id": "u"})


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
    data["steps"][0]["turn"] = "0"  # no silent coercion
    with pytest.raises(ValueError, match="steps.0.turn"):
        TrajectoryRecord.model_validate_json(json.dumps(data))
    data = json.loads(record.to_json())
    data["schema"] = "queryagent.trajectory/v4"
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
    regenerated: if this fails, the change broke v1 files. They load converted to v3."""
    records = load_trajectories(FIXTURE)
    assert len(records) == 3 and records.skipped == 0
    meta = read_meta(FIXTURE, readable=True)
    assert meta is not None and meta["record_count"] == 3 and meta["schema"] == SCHEMA_V1

    live, unparsed, held_out = records
    assert all(r.schema_ == SCHEMA and r.run == {"converted_from": SCHEMA_V1} for r in records)
    assert live.user_id == "A1TINYUSER01" and live.thread_id == "fixture-thread-1"
    assert live.before is None and live.target is None and live.memory_recalled
    assert live.profile is not None and live.profile["n_events"] == 5
    # v1's node and superstep are kept as extra step fields
    assert [(s.node, s.step, s.kind, s.query) for s in live.steps] == [
        ("draft_query", 2, "draft", "duct tape"),
        ("refine_query", 5, "refine", "glass beaker set"),
    ]
    assert live.steps[1].completion == "Query: glass beaker set"
    assert live.steps[1].completion_token_ids == list(b"Query: glass beaker set")
    assert len(live.steps[0].prompt_token_ids) > 100
    # v1 "retrieved" is v2 "products" (the attempt's own name)
    top = live.steps[1].products[0]
    assert top["item_id"] == "B000TINY04" and top["rank"] == 1 and top["score"] == 1.0
    # v1's check report is v3's ``check`` (``score`` is ``fit``; its product scores kept)
    assert live.steps[1].check["fit"] == 0.7919
    assert live.steps[1].check["products"][0]["item_id"] == "B000TINY04"
    assert live.final.fit == 0.7919
    assert live.final.query == "glass beaker set" and live.final.source == "model"
    assert live.final.product_ids[:2] == ["B000TINY04", "B000TINY06"]

    [step] = unparsed.steps
    assert step.query is None and step.error == "no query text in completion"
    assert step.products == [] and unparsed.final.source == "fallback"
    assert unparsed.final.fit is None

    assert held_out.before == 5 and len(held_out.steps) == 3
    assert held_out.target is not None
    assert held_out.target.item_id == "B000TINY10"
    assert held_out.target.title == "Fluke 117 Electricians True RMS Multimeter"
    assert held_out.target.query == (
        "test measure inspect electrical testing multimeters analyzers digital"
    )


def test_frozen_v2_fixture_loads_as_v3(tmp_path: Path) -> None:
    """``trajectories-v2.jsonl`` was written by 129d606 (schema v2, the check's report named
    ``consistency``) and is never regenerated: it loads with the v3 names, and is never
    appended to."""
    records = load_trajectories(FIXTURE_V2)
    assert len(records) == 3 and records.skipped == 0
    assert read_meta(FIXTURE_V2, readable=True)["schema"] == SCHEMA_V2  # type: ignore[index]
    raw = [json.loads(line) for line in FIXTURE_V2.read_text().splitlines()]
    for record, old in zip(records, raw, strict=True):
        assert record.schema_ == SCHEMA and record.run["converted_from"] == SCHEMA_V2
        assert record.run["refinements"] == old["run"]["refinements"]
        assert record.final.fit == old["final"]["consistency"]
        assert record.final.query == old["final"]["query"]
        for step, old_step in zip(record.steps, old["steps"], strict=True):
            assert step.query == old_step["query"]
            assert step.check == {
                "fit": old_step["consistency"]["score"],
                "feedback": old_step["consistency"]["feedback"],
            }
            assert "consistency" not in step.model_dump()
            assert step.products == old_step["products"]
    copy = tmp_path / "v2.jsonl"
    copy.write_text(FIXTURE_V2.read_text())
    meta_path(copy).write_text(meta_path(FIXTURE_V2).read_text())
    with pytest.raises(TrajectoryError, match="trajectory/v2"):
        check_appendable(copy)


def test_v1_fixture_round_trips_as_v3_and_refuses_appends(tmp_path: Path) -> None:
    records = load_trajectories(FIXTURE)
    path = tmp_path / "converted.jsonl"
    write_trajectories(path, records, {"command": "convert"})
    assert load_trajectories(path) == records
    assert read_meta(path)["schema"] == SCHEMA  # type: ignore[index]
    # a v1 file is read, never appended to (its sidecar says v1)
    copy = tmp_path / "v1.jsonl"
    copy.write_text(FIXTURE.read_text())
    meta_path(copy).write_text(meta_path(FIXTURE).read_text())
    with pytest.raises(TrajectoryError, match="trajectory/v1"):
        append_trajectories(copy, records[:1], {})
    with pytest.raises(TrajectoryError, match="trajectory/v1"):
        check_appendable(copy)
    # v1 lines without a sidecar are refused for appending too
    meta_path(copy).unlink()
    with pytest.raises(TrajectoryError, match=r"v1\.jsonl:1:"):
        check_appendable(copy)
