"""GRPO's rows from live-logged runs: a run the rollout cannot replay as it ran is skipped with a
one-line note, and a log with nothing left to replay is refused in one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.prompts import grounded_messages
from graphs.record import TrajectoryRecord
from memory_store import UserProfile
from training.cli import main as train_main
from training.grpo.rows import _live_rows

PROFILE = {"user_id": "A1", "n_events": 2, "latent_identity": "Buys mostly Exam Gloves"}


def record(
    profile: dict[str, Any], messages: list[dict[str, str]] | None, user: str = "A1"
) -> dict[str, Any]:
    """A live run joined with its outcome, its draft written from ``messages`` (None: no model)."""
    steps = []
    if messages is not None:
        steps.append(
            {
                "turn": 0,
                "kind": "draft",
                "messages": messages,
                "completion": "Query: exam gloves",
                "prompt_token_ids": [1, 2],
                "completion_token_ids": [3],
                "query": "exam gloves",
                "sources": ["model"],
            }
        )
    return {
        "schema": "queryagent.trajectory/v3",
        "run_id": f"run-{user}",
        "thread_id": None,
        "user_id": user,
        "before": None,
        "model": "m",
        "created": "2026-12-07T00:00:00+00:00",
        "profile": profile,
        "steps": steps,
        "final": {"query": "exam gloves", "source": "model", "fit": 0.5, "product_ids": []},
        "target": {"item_id": "B1", "title": "Gloves", "query": "medical supplies gloves"},
        "run": {"refinements": 0, "memory": {"n_events": 2}, "outcome": {"item_id": "B1"}},
    }


def current() -> list[dict[str, str]]:
    return grounded_messages(UserProfile.model_validate(PROFILE))


def old_prompt() -> list[dict[str, str]]:
    return [{"role": "system", "content": "An older system prompt."}, current()[-1]]


def test_runs_that_cannot_be_replayed_are_skipped_with_a_note(capsys) -> None:
    records = [
        TrajectoryRecord.model_validate(r)
        for r in (
            record(PROFILE, current()),
            record(PROFILE, None, user="A2"),  # --no-model: no prompt to differ
            record(PROFILE, old_prompt(), user="A3"),
            record({"user_id": "A4", "n_events": -1}, current(), user="A4"),
        )
    ]
    rows = _live_rows(records)
    assert [r["user_id"] for r in rows] == ["A1", "A2"]
    assert rows[0]["before"] == 2 and rows[0]["target_query"] == "medical supplies gloves"
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "grpo: 1 of 4 runs cannot be replayed (their profile snapshot is not this version's); "
        "skipped",
        "grpo: 1 of 4 runs cannot be replayed (logged by another prompt version: their draft "
        "prompt is not this code's); skipped",
    ]


def test_grpo_refuses_in_one_line_when_no_run_can_be_replayed(tmp_path: Path, capsys) -> None:
    log = tmp_path / "joined.jsonl"
    log.write_text(json.dumps(record(PROFILE, old_prompt())) + "\n")
    args = ["grpo", "--from_trajectories", str(log), "--home", str(tmp_path / "home")]
    assert train_main([*args, "--out", str(tmp_path / "out"), "--report_to", "none"]) == 2
    captured = capsys.readouterr()
    assert "grpo: 1 of 1 runs cannot be replayed (logged by another prompt" in captured.out
    err = captured.err.strip()
    assert err.startswith("grpo: error: no prompt rows: no logged run both can be replayed")
    assert "\n" not in err and "Traceback" not in captured.err
