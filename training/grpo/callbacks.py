"""GRPO's trainer callbacks and the metrics file they append to: TRL's per-step logs with the
rollouts' own figures, and the held-out curve (the policy's greedy pick for fixed valid-split
shoppers, scored with the training rewards every ``--heldout_every`` steps).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from memory_store.files import atomic_write
from training.rollout import GraphRollout

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def metrics_callback(path: Path, rollout: GraphRollout) -> Any:
    from transformers import TrainerCallback  # transformers is heavy: loaded when training starts

    class MetricsFile(TrainerCallback):
        """Appends TRL's per-step logs (reward terms' mean/std, zero-spread groups, KL, loss)
        and the rollouts' own figures (mean refinements, distinct queries, turns left out of
        the rendered conversation) to a JSONL file."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if not logs or "loss" not in logs and not any(k.startswith("rewards/") for k in logs):
                return
            row: dict[str, Any] = {"step": state.global_step, **logs}
            with rollout._lock:
                recent, rollout.history[:] = list(rollout.history), []
            for key in recent[0] if recent else {}:
                row[key] = sum(h[key] for h in recent) / len(recent)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    return MetricsFile()


HELDOUT_CHUNK = 16  # held-out shoppers per graph.batch: one model call's prompts


def heldout_scores(
    rollout: GraphRollout,
    rows: list[dict[str, Any]],
    rewards: list[Any],
    model: Any,
    tokenizer: Any,
) -> dict[str, float]:
    """Mean of each reward term over the policy's greedy runs on ``rows``, and the share of
    distinct final queries: one point of the held-out curve."""
    import torch  # heavy: loaded when the curve is first scored

    records = []
    with torch.no_grad():
        for start in range(0, len(rows), HELDOUT_CHUNK):
            chunk = rows[start : start + HELDOUT_CHUNK]
            records += rollout.run(chunk, model, tokenizer, temperature=0.0)[0]
    trajectories = [rec.model_dump(mode="json") for rec in records]
    columns = {
        key: [row[key] for row in rows] for key in ("target_item", "target_query", "target_title")
    }
    scores: dict[str, float] = {}
    for reward in rewards:
        values = [
            v for v in reward([""] * len(rows), trajectory=trajectories, **columns) if v is not None
        ]
        scores[f"heldout/{reward.__name__}"] = sum(values) / len(values) if values else 0.0
    queries = [rec.final.query for rec in records]
    scores["heldout/distinct_queries"] = len(set(queries)) / len(queries)
    return scores


def heldout_callback(
    path: Path,
    rollout: GraphRollout,
    rows: list[dict[str, Any]],
    rewards: list[Any],
    every: int,
) -> Any:
    from transformers import TrainerCallback  # transformers is heavy: loaded when training starts

    class HeldOutCurve(TrainerCallback):
        """Scores the policy's greedy pick on fixed held-out shoppers before the first step and
        every ``every`` steps (the per-step rewards mix the policy with which shoppers the
        step drew; this curve holds the shoppers fixed), appending a row to the metrics file."""

        def _score(self, state: Any, model: Any, tokenizer: Any) -> None:
            was_training = model.training
            model.eval()
            try:
                row = {"step": state.global_step}
                row.update(heldout_scores(rollout, rows, rewards, model, tokenizer))
            finally:
                model.train(was_training)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            logger.info("held-out at step %d: %s", state.global_step, row)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not _scored_at(path, state.global_step):  # a resumed run scored it already
                self._score(state, kw["model"], kw["processing_class"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step % every == 0:
                self._score(state, kw["model"], kw["processing_class"])

    return HeldOutCurve()


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop the metrics rows logged after ``step`` (a run stopped between checkpoints logged
    steps its resumed run will log again); written atomically."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        atomic_write(path, "".join(line + "\n" for line in kept))


def _scored_at(path: Path, step: int) -> bool:
    if not path.exists():
        return False
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return any(r.get("step") == step and "heldout/query_reward" in r for r in rows)
