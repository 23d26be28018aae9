"""GRPO (or GDPO) on the training reward (``training.rewards``), the agent graph as the rollout.

    queryagent-train grpo --config recipes/grpo.yaml                # the shipped adapter's recipe
    queryagent-train grpo --data data/amazon-scientific --model models/smollm2-sft \
        --max_steps 50 --num_generations 4 [--single_turn] \
        [--multi_objective_aggregation normalize_then_sum|sum_then_normalize] \
        [--from_trajectories logged.jsonl] [--resume] [--out DIR]
    python -m training.grpo --help                                  # every flag, with its default

Settings are ``GRPOArguments`` (this script's) and ``QueryAgentGRPOConfig`` (TRL's ``GRPOConfig``
with this project's defaults), parsed by ``trl.TrlParser`` (see ``training.common``): every
``GRPOConfig`` field is a flag, and ``--config FILE.yaml`` sets any of them.
``per_device_train_batch_size`` counts completions: prompts per step x ``num_generations``.

Each prompt row is one shopper at one point of their history; each of its ``num_generations``
completions is one full run of the graph (draft -> retrieve -> check -> refine ...) with the
policy as the drafter (``training.rollout.GraphRollout``: ``graphs.offline.runner.OfflineRunner``, records
built from the graph's outputs) and rendered by ``training.rollout.render_conversation`` as one
conversation whose environment turns are masked
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

import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from agent.context import Context
from agent.drafting import BASE_MODEL_ID
from agent.prompts import grounded_messages
from graphs.offline.runner import profile_at
from memory_store import Dataset, UserProfile, target_position
from training.common import (
    TrainingError,
    bf16_default,
    command_line,
    default_out,
    load_start_model,
    model_card,
    parse_command_line,
    prepare_output,
    remove_work_dir,
    save_output,
    settings_dict,
    versions,
)
from training.queries import QueryOracle, common_root
from training.rewards import optimiser_kwargs
from training.rollout import GraphRollout

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# The optimiser's name (the paper's GDPO, or plain GRPO) for each of TRL's aggregations.
OPTIMISERS = {optimiser_kwargs(n)["multi_objective_aggregation"]: n for n in ("gdpo", "grpo")}


class GRPOError(TrainingError):
    """A user-caused problem with a GRPO run (one line for the CLI)."""


@dataclass(kw_only=True)
class GRPOArguments:
    """This script's own settings (TRL's are in ``QueryAgentGRPOConfig``)."""

    data: str | None = field(
        default=None,
        metadata={
            "help": "data-set folder: its memory and catalog are the environment (not needed "
            "with --from_trajectories of live-logged runs: their home is the environment)"
        },
    )
    model: str = field(
        default=BASE_MODEL_ID,
        metadata={"help": "policy to start from: Hugging Face id, folder or (SFT) adapter folder"},
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder (default: <home>/checkpoints/grpo)"}
    )
    from_trajectories: str | None = field(
        default=None,
        metadata={
            "help": "build prompts from a trajectory file: exported from a split, or logged live "
            "(recommend/precompute --log; each run is joined with the shopper's next purchase "
            "in --home, as `queryagent-train outcomes` does, or pass its joined file)"
        },
    )
    single_turn: bool = field(
        default=False, metadata={"help": "no refinement: the paper's ablation"}
    )
    max_refinements: int = field(default=2, metadata={"help": "refinement budget of each rollout"})
    rank_depth: int = field(
        default=1000,
        metadata={
            "help": "the dense rank reward's depth: 1/log2(1+rank) of the next item among the "
            "final query's first N products (training.rewards.RankReward); 0: the paper's four "
            "terms only"
        },
    )
    heldout: int = field(
        default=0,
        metadata={
            "help": "the curve to watch: every --heldout_every steps, the policy's greedy pick "
            "for this many fixed valid-split shoppers (never trained on) is scored with the "
            "rewards and logged as heldout/* (0: off; rows from a data set's train split only)"
        },
    )
    heldout_every: int = field(default=25, metadata={"help": "steps between held-out scorings"})
    trie_logps: bool = field(
        default=True,
        metadata={
            "help": "score trie-sampled completions under the trie-restricted softmax, the "
            "distribution they were sampled from (training.constrained_grpo); off: TRL's "
            "unconstrained log-probabilities"
        },
    )
    limit: int | None = field(default=None, metadata={"help": "keep this many prompt rows"})
    split: str = field(
        default="train",
        metadata={"help": "split whose examples become prompts", "choices": ["train", "valid"]},
    )
    home: str | None = field(
        default=None, metadata={"help": "QueryAgent home (default: $QUERYAGENT_HOME)"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of training (and save)"}
    )

    def __post_init__(self) -> None:
        if not self.data and not self.from_trajectories:
            raise GRPOError(
                "--data is required (or --from_trajectories with runs logged on --home)"
            )
        if self.max_minutes is not None and not (
            self.max_minutes > 0 and math.isfinite(self.max_minutes)
        ):
            raise GRPOError(f"--max_minutes must be a positive number, got {self.max_minutes}")
        if self.split not in ("train", "valid"):
            raise GRPOError(
                f"--split must be train or valid (test is held out), got {self.split!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise GRPOError(f"--limit must be >= 1, got {self.limit}")
        if self.max_refinements < 0:
            raise GRPOError(f"--max_refinements must be >= 0, got {self.max_refinements}")
        if self.heldout < 0 or self.heldout_every < 1:
            raise GRPOError("--heldout must be >= 0 and --heldout_every >= 1")
        if self.rank_depth < 0:
            raise GRPOError(f"--rank_depth must be >= 0 (0: no rank term), got {self.rank_depth}")


@dataclass
class QueryAgentGRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with this project's defaults (each shown by ``--help``)."""

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate"})
    beta: float = field(default=0.001, metadata={"help": "KL coefficient (paper prior: 0.001)"})
    temperature: float = field(default=0.8, metadata={"help": "rollout sampling temperature"})
    num_generations: int | None = field(
        default=4, metadata={"help": "graph runs per prompt (the group)"}
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "completions per step: prompts x num_generations"}
    )
    max_steps: int = field(default=50, metadata={"help": "optimizer steps"})
    max_completion_length: int | None = field(
        default=512, metadata={"help": "longest rendered rollout (all turns), in tokens"}
    )
    multi_objective_aggregation: str = field(
        default=optimiser_kwargs("gdpo")["multi_objective_aggregation"],
        metadata={
            "help": "normalize_then_sum: GDPO, each reward term normalized in its group (the "
            "paper's); sum_then_normalize: plain GRPO",
        },
    )
    # Short sequences on a 135M model: recomputing activations would only cost time. TRL turns
    # it on by default; None leaves it off without the deprecation warning an explicit False
    # draws from transformers 5.2x (where --activation_checkpointing is the new name).
    gradient_checkpointing: bool | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "deprecated name of --activation_checkpointing (off)"}
    )
    logging_steps: float = field(default=1, metadata={"help": "log every N steps"})
    save_steps: float = field(default=25, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=1, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "prompt shuffle and sampling seed"})
    bf16: bool | None = field(  # type: ignore[assignment]  # None: decided in __post_init__
        default=None, metadata={"help": "bf16 mixed precision (default: on CUDA with bf16)"}
    )

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = bf16_default()
        if self.num_generations is not None and self.num_generations < 2:
            raise GRPOError(
                f"--num_generations must be >= 2 (a group needs a spread), "
                f"got {self.num_generations}"
            )
        if self.beta < 0 or not (self.temperature > 0):
            raise GRPOError("--temperature must be positive and --beta >= 0")
        super().__post_init__()


# --------------------------------------------------------------------------- prompt rows


def _row(
    profile: UserProfile, before: int, target: str, dataset: Dataset, oracle: QueryOracle
) -> dict[str, Any] | None:
    query = oracle.of_item(target)
    if query is None:
        return None
    return {
        "prompt": grounded_messages(profile),
        "user_id": profile.user_id,
        "before": before,
        "target_item": target,
        "target_query": query,
        "target_title": dataset.products[target].title,
    }


def logged_records(settings: GRPOArguments) -> tuple[list[Any], bool]:
    """The ``--from_trajectories`` records, and whether they are live-logged runs
    (``training.outcomes.load_joined``)."""
    from training.outcomes import load_joined

    assert settings.from_trajectories is not None
    return load_joined(settings.from_trajectories, settings.home, prog="grpo")


def _live_rows(records: list[Any]) -> list[dict[str, Any]]:
    """Rows from joined live runs: the profile the run held, its outcome as the target."""
    rows = []
    for record in records:
        if record.target is None or not record.target.query or record.profile is None:
            continue
        profile = UserProfile.model_validate(record.profile)
        held = (record.run.get("memory") or {}).get("n_events")
        before = record.before if record.before is not None else held
        rows.append(
            {
                "prompt": grounded_messages(profile),
                "user_id": record.user_id,
                "before": int(before if before is not None else profile.n_events),
                "target_item": record.target.item_id,
                "target_query": record.target.query,
                "target_title": record.target.title,
            }
        )
    return rows


def build_rows(
    dataset: Dataset | None, settings: GRPOArguments, seed: int = 0
) -> list[dict[str, Any]]:
    """Prompt rows (see ``prompt_rows``)."""
    return prompt_rows(dataset, settings, seed)[0]


def prompt_rows(
    dataset: Dataset | None, settings: GRPOArguments, seed: int = 0
) -> tuple[list[dict[str, Any]], bool]:
    """Prompt rows: one shopper at one position, with the held-out item as the reward's target.

    From the data set's split (the profile is built from the items before the target), or from a
    trajectory file (its profile snapshots and targets: retraining on what the graph saw): runs
    exported from a split carry their target, live-logged runs get the shopper's next purchase
    recorded after them (``logged_records``). Shuffled with ``seed`` (the run's ``--seed``),
    then cut to ``settings.limit``.

    Returns:
        ``(rows, live)``: ``live`` when the rows come from live-logged runs (their home is the
        rollouts' environment).
    """
    rows: list[dict[str, Any]] = []
    if settings.from_trajectories:
        records, live = logged_records(settings)
        if live:
            rows = _live_rows(records)
            random.Random(seed).shuffle(rows)
            return (rows[: settings.limit] if settings.limit else rows), True
    if dataset is None:
        raise GRPOError("--data is required for rows from a split or from exported runs")
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    if settings.from_trajectories:
        for record in records:
            target = record.target.item_id if record.target else None
            if (
                target is None
                or target not in dataset.products
                or record.user_id not in dataset.sequences
            ):
                continue
            profile = UserProfile.model_validate(record.profile)
            before = record.before if record.before is not None else profile.n_events
            if (row := _row(profile, before, target, dataset, oracle)) is not None:
                rows.append(row)
    else:
        for ex in dataset.examples(settings.split):
            before = target_position(dataset, ex, settings.split)
            profile = profile_at(dataset, ex.user_id, before)
            if (row := _row(profile, before, ex.target, dataset, oracle)) is not None:
                rows.append(row)
    random.Random(seed).shuffle(rows)
    return (rows[: settings.limit] if settings.limit else rows), False


# --------------------------------------------------------------------------- rollout


# --------------------------------------------------------------------------- metrics


def _metrics_callback(path: Path, rollout: GraphRollout) -> Any:
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        """Appends TRL's per-step logs (reward terms' mean/std, zero-spread groups, KL, loss)
        and the rollouts' own figures (mean refinements, distinct queries) to a JSONL file."""

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


def heldout_rows(
    dataset: Dataset | None, settings: GRPOArguments, seed: int = 0
) -> list[dict[str, Any]]:
    """``settings.heldout`` fixed rows of the valid split (the items before each shopper's
    second-to-last purchase, that purchase the target), for a run on the train split of a data
    set; none otherwise (live runs and valid-split training have no split held out of them)."""
    if not settings.heldout or dataset is None or settings.from_trajectories:
        return []
    if settings.split != "train":
        return []
    valid = replace(settings, split="valid", limit=settings.heldout)
    return prompt_rows(dataset, valid, seed)[0]


def heldout_scores(
    rollout: GraphRollout,
    rows: list[dict[str, Any]],
    rewards: list[Any],
    model: Any,
    tokenizer: Any,
) -> dict[str, float]:
    """Mean of each reward term over the policy's greedy runs on ``rows``, and the share of
    distinct final queries: one point of the held-out curve."""
    import torch

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


def _heldout_callback(
    path: Path,
    rollout: GraphRollout,
    rows: list[dict[str, Any]],
    rewards: list[Any],
    every: int,
) -> Any:
    from transformers import TrainerCallback

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
    from memory_store.files import atomic_write

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


def plot_metrics(path: Path, out: Path) -> None:
    """One panel per figure over steps: reward terms, zero-spread groups, refinements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    keys = [k for k in rows[-1] if k.endswith("/mean") and k.startswith("rewards/")]
    # Terms that never move (format and tool are 1 for every run inside the trie) stay out of
    # the held-out panel, where they would squash the ones that do.
    heldout = sorted(
        k
        for k in {k for r in rows for k in r if k.startswith("heldout/")}
        if len({r[k] for r in rows if k in r}) > 1
    )
    panels = [
        ("reward terms (mean)", keys),
        *([("held-out shoppers, greedy pick", heldout)] if heldout else []),
        ("groups with zero reward spread", ["frac_reward_zero_std"]),
        (
            "rollouts",
            ["rollout/mean_refinements", "rollout/distinct_queries", "rollout/parsed_final"],
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for ax, (title, names) in zip(axes, panels, strict=True):
        for name in names:
            pts = [(r["step"], r[name]) for r in rows if name in r]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    marker=".",
                    label=name.removeprefix("rewards/").removesuffix("/mean"),
                )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- training


def _environment(
    args: GRPOArguments, dataset: Dataset | None, rows: list[dict[str, Any]], *, live: bool
) -> GraphRollout:
    """The rollout's world and the graph's knobs.

    Live-logged runs: the home they were logged on (its memory, cut at each run's held events by
    the row's ``before``; its catalog; its served fitted models). Otherwise the data set's memory
    (ingested as `queryagent ingest` does), the evaluation's catalog and its models fitted on the
    sequences cut before the held-out items.
    """
    context = Context(max_refinements=0 if args.single_turn else args.max_refinements)
    if live:
        from agent.catalog import ChromaCatalog
        from agent.ranking import load_served
        from memory_store import open_store

        return GraphRollout(
            rows=rows,
            catalog=ChromaCatalog.from_env(home=args.home),
            store=open_store(args.home),
            context=context,
            ranking=load_served(args.home),
        )
    from langgraph.store.memory import InMemoryStore

    from graphs.offline.ingest import ingest
    from graphs.offline.runner import offline_ranking
    from training.evaluation.runner import open_eval_catalog

    assert dataset is not None
    store = InMemoryStore()
    catalog = open_eval_catalog(dataset, args.home)
    ingest(dataset, store, catalog, progress=False)
    ranking = offline_ranking(dataset, catalog, args.split, args.home)
    return GraphRollout(rows=rows, catalog=catalog, store=store, context=context, ranking=ranking)


def _lora_config(continuing: bool) -> Any:
    """A fresh LoRA adapter, unless the policy already carries one (an SFT adapter)."""
    if continuing:
        return None
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")


def _save_metrics(metrics_path: Path) -> Any:
    """Copies the per-step metrics (and their plot) into the output folder."""

    def extra(folder: Path) -> None:
        if metrics_path.is_file():
            shutil.copy(metrics_path, folder / METRICS_FILE)
            plot_metrics(folder / METRICS_FILE, folder / "metrics.png")

    return extra


def _trainer(
    args: GRPOArguments,
    config: QueryAgentGRPOConfig,
    rows: list[dict[str, Any]],
    rollout: GraphRollout,
    reward_functions: list[Any],
    metrics_path: Path,
    heldout: list[dict[str, Any]] | None = None,
) -> tuple[Any, Any, Any, Any]:
    """The GRPO trainer on the policy; returns it, the resolved policy, tokenizer and budget."""
    from datasets import Dataset as HFDataset

    from training.callbacks import GracefulStop
    from training.constrained_grpo import ConstrainedGRPOTrainer

    resolved, model, tokenizer = load_start_model(args.model, args.home)
    budget = GracefulStop(args.max_minutes)
    trainer = ConstrainedGRPOTrainer(
        allowed_tokens=rollout.allowed_tokens if args.trie_logps and rollout.grounded else None,
        model=model,
        reward_funcs=reward_functions,
        args=config,
        train_dataset=HFDataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_lora_config(continuing=resolved.adapter),
        rollout_func=rollout,
        callbacks=[
            _metrics_callback(metrics_path, rollout),
            budget,
            *(
                [
                    _heldout_callback(
                        metrics_path, rollout, heldout, reward_functions, args.heldout_every
                    )
                ]
                if heldout
                else []
            ),
        ],
    )
    return trainer, resolved, tokenizer, budget


def _card(
    meta: dict[str, Any],
    args: GRPOArguments,
    config: QueryAgentGRPOConfig,
    resolved: Any,
    out: str,
) -> Any:
    groups = config.per_device_train_batch_size // (config.num_generations or 1)
    source = f", taken from `{args.from_trajectories}`" if args.from_trajectories else ""
    return model_card(
        resolved=resolved,
        adapter=True,
        title=f"{out}: {meta['optimiser'].upper()} on the training reward",
        summary=(
            f"A LoRA adapter on `{resolved.base_name}`, trained from `{resolved.name}` with TRL's "
            f"`GRPOTrainer` and the agent graph as the rollout: {meta['steps']} steps of "
            f"{groups} shoppers x {config.num_generations} graph runs, rewards "
            f"{', '.join(meta['rewards'])} ({config.multi_objective_aggregation})."
        ),
        data=(
            f"{meta['data']['prompt_rows']:,} prompt rows (shopper, position) "
            + (
                f"from live-logged runs joined with the shopper's next purchase{source}; "
                if meta["data"]["environment"] == "home"
                else f"from the {args.split} split of `{meta['data']['path']}` "
                f"({meta['data']['name']}){source}; "
            )
            + "each completion is a full graph run rendered as one conversation, the "
            "retrieved-products and check-feedback turns masked out of the loss. Per-step "
            f"metrics: `{METRICS_FILE}`, `metrics.png`."
        ),
        command=meta["command"],
        tags=["grpo", meta["optimiser"]],
    )


def run_grpo(
    args: GRPOArguments,
    config: QueryAgentGRPOConfig,
    dataset: Dataset | None,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Train, save the adapter to the output folder; returns the sidecar's content."""
    from graphs.record import code_version
    from training.rewards import training_rewards

    started = time.perf_counter()
    out, work, checkpoint = prepare_output(config, args.out, args.home, "grpo", args.resume)
    rows, live = prompt_rows(dataset, args, seed=config.seed)
    if not rows:
        raise GRPOError(
            "no prompt rows: no logged run has a later purchase with a category yet (record "
            "purchases with `queryagent events add`, then see `queryagent-train outcomes`)"
            if live
            else "no prompt rows: no example has a target with a category"
        )
    rollout = _environment(args, dataset, rows, live=live)
    work.mkdir(parents=True, exist_ok=True)
    metrics_path = work / METRICS_FILE
    if not args.resume:
        metrics_path.unlink(missing_ok=True)
    elif checkpoint is not None:
        keep_metrics_until(metrics_path, int(Path(checkpoint).name.rsplit("-", 1)[-1]))
    rewards = training_rewards(rollout.catalog, args.rank_depth)
    heldout = heldout_rows(dataset, args, seed=config.seed)
    trainer, resolved, tokenizer, budget = _trainer(
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
        card=_card(meta, args, config, resolved, out.name),
        work=work,
        extra=_save_metrics(metrics_path),
    )
    if not budget.keep_checkpoints():
        remove_work_dir(work)  # finished; a run stopped early keeps them for --resume
    return meta


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.grpo") -> int:
    """``queryagent-train grpo ...`` / ``python -m training.grpo ...``: parse, train, report.

    User errors print one line and return 2.
    """
    from agent.catalog import CatalogError
    from agent.ranking import RankingMissingError
    from graphs.record import TrajectoryError
    from memory_store import DataError, HomeError, StoreError, load_dataset

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


def reward_curve(path: Path) -> str:
    """``"1: 2.10, 2: 2.31, ..."``: each logged step's reward (the sum of the terms' means)."""
    if not path.is_file():
        return ""
    points = []
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        terms = [v for k, v in row.items() if k.startswith("rewards/") and k.endswith("/mean")]
        if terms:
            points.append(f"{row['step']}: {sum(terms):.2f}")
    return ", ".join(points)


if __name__ == "__main__":
    sys.exit(main())
