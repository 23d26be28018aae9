"""GRPO (or GDPO) on the training reward (``training.rewards``), the agent graph as the rollout.

    queryagent-train grpo --data data/amazon-scientific --model DRAFTER_ADAPTER \
        --max_steps 50 --num_generations 4 [--single_turn] \
        [--multi_objective_aggregation normalize_then_sum|sum_then_normalize] \
        [--from_trajectories logged.jsonl] [--resume] [--out DIR]
    python -m training.grpo --help                                  # every flag, with its default

Settings are ``GRPOArguments`` (this script's) and ``QueryAgentGRPOConfig`` (TRL's ``GRPOConfig``
with this project's defaults), parsed by ``trl.TrlParser`` (see ``training.common``): every
``GRPOConfig`` field is a flag, and ``--config FILE.yaml`` sets any of them.
``per_device_train_batch_size`` counts completions: prompts per step x ``num_generations``.

Each prompt row is one shopper at one point of their history (``training.grpo.rows``); each of
its ``num_generations`` completions is one full run of the graph (draft -> retrieve -> check ->
refine ...) with the policy as the drafter (``training.rollout.GraphRollout``:
``graphs.offline.runner.OfflineRunner``, records built from the graph's outputs) and rendered by
``training.rollout.render_conversation`` as one conversation whose environment turns are masked
out of the loss. Every member of a group sees the same profile and catalog. The paper's four
reward terms of ``training.rewards`` and a dense rank term (the next item's 1/log2(1 + rank)
under the final query, ``--rank_depth``; 0 leaves it out) score the recorded trajectory; GDPO
normalizes each term within its group before summing
(``multi_objective_aggregation="normalize_then_sum"``, the default), GRPO sums first
(``sum_then_normalize``).

Writes the adapter to ``--out`` with a ``queryagent.meta.json`` sidecar and a model card, and
per-step metrics (each reward term's mean and std, the fraction of groups with zero reward
spread, mean refinements, distinct queries) to ``metrics.jsonl`` and ``metrics.png`` beside it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.catalog import CatalogError
from agent.ranking import RankingMissingError
from graphs.query_agent import served_search
from graphs.record import TrajectoryError, code_version
from memory_store import DataError, Dataset, HomeError, StoreError, load_dataset
from training.common import (
    TrainingError,
    command_line,
    default_out,
    parse_command_line,
    prepare_output,
    remove_work_dir,
    save_output,
    settings_dict,
    versions,
)
from training.grpo.callbacks import METRICS_FILE, keep_metrics_until
from training.grpo.card import grpo_card
from training.grpo.config import OPTIMISERS, GRPOArguments, GRPOError, QueryAgentGRPOConfig
from training.grpo.plots import reward_curve
from training.grpo.rows import heldout_rows, prompt_rows
from training.grpo.trainer import build_trainer, environment, save_metrics
from training.rewards import training_rewards


def run_grpo(
    args: GRPOArguments,
    config: QueryAgentGRPOConfig,
    dataset: Dataset | None,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Train, save the adapter to the output folder; returns the sidecar's content."""
    started = time.perf_counter()
    out, work, checkpoint = prepare_output(config, args.out, args.home, "grpo", args.resume)
    rows, live = prompt_rows(dataset, args, seed=config.seed)
    if not rows:
        raise GRPOError(
            "no prompt rows: no logged run both can be replayed and has a later purchase with a "
            "category yet (record purchases with `queryagent events add`, then see "
            "`queryagent-train outcomes`)"
            if live
            else "no prompt rows: no example has a target with a category"
        )
    rollout = environment(args, dataset, rows, live=live)
    work.mkdir(parents=True, exist_ok=True)
    metrics_path = work / METRICS_FILE
    if not args.resume:
        metrics_path.unlink(missing_ok=True)
    elif checkpoint is not None:
        keep_metrics_until(metrics_path, int(Path(checkpoint).name.rsplit("-", 1)[-1]))
    # The rank term ranks with the search the rollouts' products come from (the one the
    # catalog's models were fitted on: the fused search by default).
    search = served_search(rollout.catalog, rollout.ranking)
    rewards = training_rewards(rollout.catalog, args.rank_depth, search=search)
    heldout = heldout_rows(dataset, args, seed=config.seed)
    trainer, resolved, tokenizer, budget = build_trainer(
        args, config, rows, rollout, rewards, metrics_path, heldout
    )
    trainer.train(resume_from_checkpoint=checkpoint)

    meta = {
        "made_by": "training.grpo",
        "command": command or command_line("queryagent-train grpo", None),
        "settings": settings_dict(args, config),
        "optimiser": OPTIMISERS.get(config.multi_objective_aggregation, "custom"),
        "rewards": [f.__name__ for f in rewards],
        "data": {
            "path": str(dataset.root) if dataset is not None else None,
            "name": dataset.name if dataset is not None else "live-logged runs",
            "prompt_rows": len(rows),
            "from_trajectories": args.from_trajectories,
            "environment": "home" if live else "data set",
        },
        "device": str(trainer.args.device.type),
        "code_version": code_version(),
        "versions": versions(),
        "base_model": resolved.base_name,
        "started_from": resolved.name,
        "steps": trainer.state.global_step,
        "stopped_by_time_budget": budget.reason == "time",
        "stopped_by_interrupt": budget.reason == "interrupt",
        "resumed_from": checkpoint,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    save_output(
        out,
        trainer=trainer,
        tokenizer=tokenizer,
        resolved=resolved,
        meta=meta,
        card=grpo_card(meta, args, config, resolved, out.name),
        work=work,
        extra=save_metrics(metrics_path),
    )
    if not budget.keep_checkpoints():
        remove_work_dir(work)  # finished; a run stopped early keeps them for --resume
    return meta


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.grpo") -> int:
    """``queryagent-train grpo ...`` / ``python -m training.grpo ...``: parse, train, report.

    User errors print one line and return 2.
    """
    try:
        args, config = parse_command_line((GRPOArguments, QueryAgentGRPOConfig), argv, prog)
        dataset = load_dataset(args.data) if args.data else None
        meta = run_grpo(args, config, dataset, command=command_line(prog, argv))
    except (
        TrainingError,
        DataError,
        TrajectoryError,
        StoreError,
        HomeError,
        CatalogError,
        RankingMissingError,
    ) as exc:
        print(f"grpo: error: {exc}", file=sys.stderr)
        return 2
    out = default_out(args.out, args.home, "grpo")
    print(f"grpo: {meta['steps']} steps in {meta['wall_s']} s -> {out}")
    if meta.get("stopped_by_time_budget") or meta.get("stopped_by_interrupt"):
        why = "--max_minutes" if meta.get("stopped_by_time_budget") else "Ctrl-C"
        print(f"grpo: stopped on {why} at step {meta['steps']}: add --resume to continue")
    curve = reward_curve(out / METRICS_FILE)
    if curve:
        print(f"grpo: reward per step (sum of the terms' means; {out / 'metrics.png'}): {curve}")
    return 0
