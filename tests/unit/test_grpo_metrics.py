"""The GRPO metrics file across a resumed run."""

from __future__ import annotations

import json

from training.grpo import keep_metrics_until


def test_resuming_drops_the_rows_logged_after_the_checkpoint(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 0.1 * s} for s in range(0, 30, 3)] + [{"step": 20, "heldout/x": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keep_metrics_until(path, 20)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in kept] == [0, 3, 6, 9, 12, 15, 18, 20]
    keep_metrics_until(path, 20)  # nothing past it: unchanged
    assert [json.loads(line) for line in path.read_text().splitlines()] == kept
    keep_metrics_until(tmp_path / "none.jsonl", 5)  # no file yet: nothing to do
    assert not (tmp_path / "none.jsonl").exists()
