"""Trajectory files end to end: ``queryagent recommend --log`` with real Chroma, MiniLM and a tiny
local LM, and ``queryagent-train export`` with the scripted drafter in place of the model."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agent.drafting
import training.cli
import training.export
from agent.drafting import ScriptedDrafter
from graphs.cli import main as queryagent
from graphs.record import SCHEMA, load_trajectories, meta_path, read_meta
from memory_store import load_dataset
from training.rollout import model_turns

pytestmark = pytest.mark.integration


def _recommend(home: Path, model: Path, user: str, log: Path) -> list[str]:
    return [
        "recommend",
        "--user",
        user,
        "--json",
        "--model",
        str(model),
        "--home",
        str(home),
        "--max-refinements",
        "1",
        "--log",
        str(log),
    ]


def test_recommend_log_appends_one_record_per_call(
    ingested_home: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    log = tmp_path / "recommend.jsonl"
    assert queryagent(_recommend(ingested_home, tiny_model_dir, "A1TINYUSER01", log)) == 0
    out = json.loads(capsys.readouterr().out)  # --json output unchanged by --log
    assert queryagent(_recommend(ingested_home, tiny_model_dir, "A1TINYUSER04", log)) == 0
    capsys.readouterr()

    first, cold = load_trajectories(log)
    meta = read_meta(log)
    assert meta is not None and meta["record_count"] == 2 and meta["schema"] == SCHEMA
    assert meta["catalog"]["location"] and meta["config"]["user"] == "A1TINYUSER04"
    assert first.user_id == "A1TINYUSER01" and cold.user_id == "A1TINYUSER04"
    assert first.model == str(tiny_model_dir) and first.target is None
    assert first.memory_recalled and first.profile["user_id"] == "A1TINYUSER01"
    assert [s.kind for s in first.steps][0] == "draft"
    assert len(first.steps) == len(out["attempts"])
    for step, attempt in zip(first.steps, out["attempts"], strict=True):
        assert step.prompt_token_ids == attempt["prompt_token_ids"]  # the real tokenizer's ids
        assert step.completion_token_ids == attempt["completion_token_ids"]
    assert first.final.query == out["query"]
    assert first.final.product_ids == [p["item_id"] for p in out["products"]]
    assert cold.profile["n_events"] == 0


def _run_cli(*args: str, model: Path) -> subprocess.CompletedProcess[str]:
    # The model named: a checkout without the shipped writer would add its warning line
    # (every command imports graphs.query_agent, whose Studio graph resolves the default).
    return subprocess.run(
        [sys.executable, "-m", "graphs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QUERYAGENT_MODEL": str(model)},
    )


def test_recommend_log_user_errors_are_one_line(
    ingested_home: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "log.jsonl"
    proc = _run_cli(
        "recommend",
        "--user",
        "A1TINYUSER01",
        "--home",
        str(ingested_home),
        "--log",
        str(missing),
        model=tiny_model_dir,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "queryagent.trajectory/v1"}\n')
    proc = _run_cli(
        "recommend",
        "--user",
        "A1TINYUSER01",
        "--home",
        str(ingested_home),
        "--log",
        str(bad),
        model=tiny_model_dir,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "bad.jsonl:1:" in proc.stderr
    assert not meta_path(bad).exists()


# -- export -----------------------------------------------------------------------------------


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedDrafter]:
    made: list[ScriptedDrafter] = []

    def factory(model=None, **kwargs):
        drafter = ScriptedDrafter(["Query: duct tape", "Query: glass beaker set"])
        made.append(drafter)
        return drafter

    monkeypatch.setattr(agent.drafting, "HFDrafter", factory)
    monkeypatch.setattr(training.export, "HFDrafter", factory)  # imported at its top
    return made


@pytest.fixture()
def train_cli(monkeypatch: pytest.MonkeyPatch):
    """``queryagent-train``'s main, with ``export`` registered if training/cli.py does not
    register it yet (it is wired in separately)."""
    from training.export import add_parser

    build = training.cli.build_parser

    def build_with_export() -> argparse.ArgumentParser:
        parser = build()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "export" not in sub.choices:
            add_parser(sub)
        return parser

    monkeypatch.setattr(training.cli, "build_parser", build_with_export)
    return training.cli.main


def _export(data: Path, out: Path, home: Path, *extra: str) -> list[str]:
    return ["export", "--data", str(data), "--out", str(out), "--home", str(home), *extra]


def test_export_test_split_gives_one_record_per_user_with_targets(
    tmp_path: Path, tiny_recbole_dir: Path, scripted, train_cli
) -> None:
    out = tmp_path / "test.jsonl"
    args = _export(tiny_recbole_dir, out, tmp_path / "home", "--split", "test")
    assert train_cli([*args, "--batch-size", "4", "--max-refinements", "1"]) == 0
    dataset = load_dataset(tiny_recbole_dir)
    examples = dataset.examples("test")
    records = load_trajectories(out)
    assert [r.user_id for r in records] == [ex.user_id for ex in examples]  # input order
    for record, ex in zip(records, examples, strict=True):
        # the memory is cut just before the held-out item
        assert record.before == len(dataset.sequences[ex.user_id]) - 1
        assert record.profile["n_events"] == record.before
        assert record.target is not None and record.target.item_id == ex.target
        assert record.target.title == dataset.products[ex.target].title
        assert record.target.query  # HEM ground truth: the category path without its root
        assert record.model == "scripted" and record.steps[0].kind == "draft"
        # the model's turns (draft + at most one refinement); recalled candidates have no prompt
        assert 1 <= len(model_turns(record.steps)) <= 2
    meta = read_meta(out)
    assert meta is not None and meta["record_count"] == 6 and meta["split"] == "test"
    assert meta["config"]["max_refinements"] == 1 and meta["skipped_no_category"] == 0
    assert meta["catalog"]["collection"].startswith("eval-tiny-")


def test_export_train_split_cuts_memory_at_each_row(
    tmp_path: Path, tiny_recbole_dir: Path, scripted, train_cli
) -> None:
    out = tmp_path / "train.jsonl"
    args = _export(tiny_recbole_dir, out, tmp_path / "home", "--split", "train", "--limit", "5")
    assert train_cli([*args, "--max-refinements", "0"]) == 0
    dataset = load_dataset(tiny_recbole_dir)
    records = load_trajectories(out)
    assert len(records) == 5
    for record in records:
        sequence = dataset.sequences[record.user_id]
        assert record.target is not None and record.before is not None
        assert sequence[record.before] == record.target.item_id
        assert record.profile["n_events"] == record.before
        assert len(model_turns(record.steps)) == 1


def test_export_user_errors_are_one_line(
    tmp_path: Path, tiny_recbole_dir: Path, scripted, train_cli, capsys
) -> None:
    home = tmp_path / "home"
    assert train_cli(_export(tiny_recbole_dir, tmp_path / "x.jsonl", home, "--split", "dev")) == 2
    assert "split must be one of train, valid, test" in capsys.readouterr().err
    assert train_cli(_export(tiny_recbole_dir, tmp_path / "no" / "x.jsonl", home)) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_cli(_export(tmp_path / "absent", tmp_path / "x.jsonl", home)) == 2
    assert "data-set folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
