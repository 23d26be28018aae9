"""The loop from the command line on the tiny data set: a home ingested from the data cut before
each shopper's last purchase, runs logged by precompute, the held-back purchases recorded with
`queryagent events add`, outcomes joined, and a GRPO step on the live-logged runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from graphs.cli import main
from graphs.record import load_trajectories
from memory_store import UserMemory, load_dataset, open_store
from memory_store.holdout import hold_out

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def loop(tmp_path_factory, tiny_recbole_dir):
    """A home ingested from the cut, and the runs precompute logged on it (no model)."""
    root = tmp_path_factory.mktemp("loop")
    home, runs, events = root / "home", root / "runs.jsonl", root / "next.jsonl"
    hold_out(load_dataset(tiny_recbole_dir), root / "cut", events)
    assert main(["ingest", "--data", str(root / "cut"), "--home", str(home)]) == 0
    code = main(["precompute", "--home", str(home), "--no-model", "--log", str(runs)])
    assert code == 0
    return SimpleNamespace(root=root, home=home, runs=runs, events=events)


def _cli(*args: str, model: Path) -> subprocess.CompletedProcess[str]:
    # The model named: a checkout without the shipped writer would add its warning line
    # (every command imports graphs.query_agent, whose Studio graph resolves the default).
    return subprocess.run(
        [sys.executable, "-m", "graphs.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "QUERYAGENT_MODEL": str(model)},
    )


def test_precompute_log_stamps_each_run_with_its_memory(loop) -> None:
    records = load_trajectories(loop.runs)
    assert len(records) == 7  # every shopper, the cold-start one too
    memory = UserMemory(open_store(loop.home))
    for record in records:
        assert record.target is None
        assert record.run["memory"]["n_events"] == memory.n_events(record.user_id)
        assert record.run["catalog"]["version"]


def test_recommend_log_stamps_the_run(loop, tiny_model_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "one.jsonl"
    home = str(loop.home)
    args = ["recommend", "--user", "A1TINYUSER05", "--home", home, "--log", str(log)]
    assert main([*args, "--model", str(tiny_model_dir), "--max-refinements", "0"]) == 0
    (record,) = load_trajectories(log)
    memory = UserMemory(open_store(loop.home))
    assert record.run["memory"]["n_events"] == memory.n_events("A1TINYUSER05") == 6
    assert record.run["memory"]["digest"] and record.run["catalog"]["generation"] == 1


def test_events_add_bad_input_is_one_line_and_writes_nothing(
    loop, tmp_path: Path, tiny_model_dir: Path
) -> None:
    memory = UserMemory(open_store(loop.home))
    before = memory.n_events("A1TINYUSER02")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"user_id": "A1TINYUSER02", "item_id": "B000TINY01"}\n'
        '{"user_id": "A1TINYUSER02", "item_id": "B000NOPE"}\n'
    )
    for args in (
        ["events", "add", "--file", str(bad)],
        ["events", "add", "--user", "A1TINYUSER02", "--item", "B000NOPE"],
        ["events", "add", "--user", "A1TINYUSER02"],
    ):
        result = _cli(*args, "--home", str(loop.home), model=tiny_model_dir)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("queryagent: error: ")
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert memory.n_events("A1TINYUSER02") == before


def test_trainers_refuse_bad_logs_in_one_line(loop, tmp_path: Path, capsys) -> None:
    from training.cli import main as train_main

    other = tmp_path / "other.jsonl"  # the same runs, logged on another catalog version
    other.write_text(
        "".join(
            line.replace('"version":"', '"version":"0ther') + "\n"
            for line in loop.runs.read_text().splitlines()
        )
    )
    for trainer in ("grpo", "sft"):
        for log, message in ((tmp_path / "missing.jsonl", "no such"), (other, "catalog version")):
            args = [trainer, "--from_trajectories", str(log), "--home", str(loop.home)]
            if trainer == "sft":  # the logged runs' drafts: the draft role
                args += ["--data", str(loop.root / "cut"), "--role", "draft"]
            assert train_main(args) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"{trainer}: error: ") and message in err and "\n" not in err


def test_outcomes_then_grpo_on_live_logged_runs(
    loop, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from training.cli import main as train_main

    # what happened next, except for one shopper, whose run stays without an outcome
    held = [json.loads(line) for line in loop.events.read_text().splitlines()]
    partial = tmp_path / "next.jsonl"
    partial.write_text(
        "".join(json.dumps(h) + "\n" for h in held if h["user_id"] != "A1TINYUSER03")
    )
    assert main(["events", "add", "--file", str(partial), "--home", str(loop.home)]) == 0
    assert "recorded 5 purchases of 5 shoppers (0 new" in capsys.readouterr().out
    memory = UserMemory(open_store(loop.home))
    assert [e.item_id for e in memory.events("A1TINYUSER02")] == load_dataset(
        loop.root / "cut"
    ).sequences["A1TINYUSER02"] + ["B000TINY06"]

    joined = tmp_path / "joined.jsonl"
    home = str(loop.home)
    code = train_main(
        ["outcomes", "--from-trajectories", str(loop.runs), "--home", home, "--out", str(joined)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "5 of 7 runs joined with the shopper's next purchase" in text
    assert "2 of 7 runs have no later purchase yet; skipped" in text  # A1TINYUSER03, and 04
    assert "logged runs (5 runs): hit@10" in text and "query_match" in text
    assert all(r.target is not None for r in load_trajectories(joined))

    # SFT pairs from the same live log (joined inside) and from the joined file agree
    from training.sft import trajectory_pairs

    pairs, skipped = trajectory_pairs(str(loop.runs), home)
    capsys.readouterr()
    assert pairs == trajectory_pairs(str(joined), home)[0] and skipped >= 0
    assert all(p.completion[0]["content"] == f"Query: {p.truth}" for p in pairs)

    # GRPO straight from the live log: the join happens inside, the home is the environment
    out = tmp_path / "grpo"
    code = train_main(
        [
            "grpo",
            "--from_trajectories",
            str(loop.runs),
            "--home",
            home,
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--max_steps",
            "1",
            "--num_generations",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--max_refinements",
            "0",
            "--report_to",
            "none",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "grpo: reward per step (sum of the terms' means;" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "rewards/item_reward/mean" in rows[-1] and "rewards/query_reward/mean" in rows[-1]
    meta = json.loads((out / "queryagent.meta.json").read_text())
    assert meta["data"]["environment"] == "home" and meta["data"]["prompt_rows"] >= 1

    # before/after on the same shoppers: replayed at the memory each run held
    code = train_main(
        [
            "outcomes",
            "--from-trajectories",
            str(joined),
            "--home",
            home,
            "--out",
            str(tmp_path / "again.jsonl"),
            "--replay-model",
            str(tiny_model_dir),
            "--replay-model",
            str(out),
            "--replay-limit",
            "2",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "logged runs, the replayed ones (2 runs): hit@10" in text
    assert f"replayed with {tiny_model_dir} (2 runs)" in text and f"replayed with {out}" in text
