"""GRPO (or GDPO) on the consistency reward, with the agent graph as the rollout.

    queryagent-train grpo --data data/amazon-scientific --model ~/.queryagent/checkpoints/sft \
        --max-steps 50 --num-generations 4 [--single-turn] [--optimiser gdpo|grpo] \
        [--from-trajectories logged.jsonl] [--resume] [--out DIR]

Each prompt row is one shopper at one point of their history; each of its ``num_generations``
completions is one full run of the graph (draft -> retrieve -> check -> refine ...) with the
policy as the drafter (``training.rollout.GraphRollout``: ``graphs.runner.OfflineRunner``, records
built from the graph's outputs) and rendered by ``training.rollout.render_conversation`` as one
conversation whose environment turns are masked
out of the loss. Every member of a group sees the same profile and catalog. The four reward terms
of ``training.rewards`` score the recorded trajectory; GDPO normalizes each term within its group
before summing (``multi_objective_aggregation="normalize_then_sum"``), GRPO sums first.

Writes the adapter to ``--out`` with a ``queryagent.meta.json`` sidecar, and per-step metrics
(each reward term's mean and std, the fraction of groups with zero reward spread, mean
refinements, distinct queries) to ``metrics.jsonl`` and ``metrics.png`` beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.context import Context
from agent.prompts import draft_messages
from graphs.runner import profile_at
from memory_store import Dataset, UserProfile, target_position
from memory_store.paths import queryagent_home
from training.queries import QueryOracle, common_root
from training.rollout import GraphRollout
from training.sft import META_FILE, _replace_dir, _versions

METRICS_FILE = "metrics.jsonl"


class GRPOError(Exception):
    """A user-caused problem with a GRPO run (one line for the CLI)."""


@dataclass(frozen=True, kw_only=True)
class GRPOSettings:
    """What one GRPO run does; every field is a ``queryagent-train grpo`` flag."""

    data: str = field(
        metadata={"help": "data-set folder: its memory and catalog are the environment"}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "policy: HF id, folder or SFT adapter; None: bundled SmolLM2"},
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder; None: <home>/checkpoints/grpo"}
    )
    from_trajectories: str | None = field(
        default=None, metadata={"help": "build prompts from a logged trajectory file"}
    )
    max_steps: int = field(default=50, metadata={"help": "optimizer steps"})
    num_generations: int = field(default=4, metadata={"help": "graph runs per prompt (the group)"})
    prompts_per_step: int = field(
        default=2, metadata={"help": "prompts (groups) per optimizer step"}
    )
    single_turn: bool = field(
        default=False, metadata={"help": "no refinement: the paper's ablation"}
    )
    max_refinements: int = field(default=2, metadata={"help": "refinement budget of each rollout"})
    optimiser: str = field(
        default="gdpo", metadata={"help": "gdpo (per-term group normalization) or grpo"}
    )
    lr: float = field(default=1e-5, metadata={"help": "learning rate"})
    beta: float = field(default=0.001, metadata={"help": "KL coefficient (paper prior: 0.001)"})
    temperature: float = field(default=0.8, metadata={"help": "rollout sampling temperature"})
    limit: int | None = field(default=None, metadata={"help": "keep this many prompt rows"})
    split: str = field(default="train", metadata={"help": "split whose examples become prompts"})
    seed: int = field(default=0)
    home: str | None = field(default=None)
    resume: bool = field(default=False, metadata={"help": "continue from <out>.work/"})
    save_steps: int = field(default=25)
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of training (and save)"}
    )

    def __post_init__(self) -> None:
        if self.max_minutes is not None and not (
            self.max_minutes > 0 and math.isfinite(self.max_minutes)
        ):
            raise GRPOError(f"--max-minutes must be a positive number, got {self.max_minutes}")
        for name in ("max_steps", "prompts_per_step", "save_steps"):
            if getattr(self, name) < 1:
                raise GRPOError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.num_generations < 2:
            raise GRPOError(
                f"--num-generations must be >= 2 (a group needs a spread), "
                f"got {self.num_generations}"
            )
        if self.optimiser not in ("gdpo", "grpo"):
            raise GRPOError(f"--optimiser must be gdpo or grpo, got {self.optimiser!r}")
        if self.split not in ("train", "valid"):
            raise GRPOError(
                f"--split must be train or valid (test is held out), got {self.split!r}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.beta < 0 or self.temperature <= 0:
            raise GRPOError("--lr and --temperature must be positive and --beta >= 0")
        if self.limit is not None and self.limit < 1:
            raise GRPOError(f"--limit must be >= 1, got {self.limit}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else queryagent_home(self.home) / "checkpoints" / "grpo"

    @property
    def work_dir(self) -> Path:
        return self.out_dir.with_name(self.out_dir.name + ".work")


# --------------------------------------------------------------------------- prompt rows


def _row(
    profile: UserProfile, before: int, target: str, dataset: Dataset, oracle: QueryOracle
) -> dict[str, Any] | None:
    query = oracle.of_item(target)
    if query is None:
        return None
    return {
        "prompt": draft_messages(profile),
        "user_id": profile.user_id,
        "before": before,
        "target_item": target,
        "target_query": query,
        "target_title": dataset.products[target].title,
    }


def build_rows(dataset: Dataset, settings: GRPOSettings) -> list[dict[str, Any]]:
    """Prompt rows: one shopper at one position, with the held-out item as the reward's target.

    From the data set's split (the profile is built from the items before the target), or from a
    logged trajectory file (its profile snapshots and targets: retraining on what the graph saw).
    """
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    rows: list[dict[str, Any]] = []
    if settings.from_trajectories:
        from graphs.trajectories import load_trajectories

        for record in _records(load_trajectories(settings.from_trajectories)):
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
    random.Random(settings.seed).shuffle(rows)
    return rows[: settings.limit] if settings.limit else rows


def _records(result: Any) -> list[Any]:
    return list(result[0] if isinstance(result, tuple) else getattr(result, "records", result))


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


def plot_metrics(path: Path, out: Path) -> None:
    """One panel per figure over steps: reward terms, zero-spread groups, refinements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    keys = [k for k in rows[-1] if k.endswith("/mean") and k.startswith("rewards/")]
    panels = [
        ("reward terms (mean)", keys),
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


def _load_policy(settings: GRPOSettings) -> tuple[Any, Any, bool]:
    """The policy and tokenizer; ``True`` when it already carries a (trainable) LoRA adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.drafter import BASE_MODEL_SENTINEL, resolve_base_model

    name = settings.model or BASE_MODEL_SENTINEL
    adapter = Path(name) / "adapter_config.json"
    try:
        if adapter.is_file():
            from peft import PeftConfig, PeftModel

            base = resolve_base_model(
                PeftConfig.from_pretrained(name).base_model_name_or_path, settings.home
            )
            model = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(base), name, is_trainable=True
            )
            return model, AutoTokenizer.from_pretrained(name), True
        source = resolve_base_model(name, settings.home)
        return (
            AutoModelForCausalLM.from_pretrained(source),
            AutoTokenizer.from_pretrained(source),
            False,
        )
    except (OSError, ValueError) as err:
        raise GRPOError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from err


def run_grpo(
    settings: GRPOSettings, dataset: Dataset, *, command: str | None = None
) -> dict[str, Any]:
    """Train, save the adapter to ``settings.out_dir``; returns the sidecar's content."""
    import torch
    from datasets import Dataset as HFDataset
    from langgraph.store.memory import InMemoryStore
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from graphs.ingest import ingest
    from graphs.runner import offline_ranking
    from graphs.trajectories import code_version
    from training.evaluation.runner import open_eval_catalog
    from training.rewards import CONSISTENCY_REWARDS, optimiser_kwargs

    started = time.perf_counter()
    out = settings.out_dir
    checkpoint = None
    if settings.resume:
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = (
            get_last_checkpoint(str(settings.work_dir)) if settings.work_dir.is_dir() else None
        )
        if checkpoint is None:
            raise GRPOError(f"--resume: no checkpoint in {settings.work_dir} to resume from")
    rows = build_rows(dataset, settings)
    if not rows:
        raise GRPOError("no prompt rows: no example has a target with a category")

    # The environment, ingested as `queryagent ingest` does (memory and catalog statistics).
    store = InMemoryStore()
    catalog = open_eval_catalog(dataset, settings.home)
    ingest(dataset, store, catalog, progress=False)
    context = Context(max_refinements=0 if settings.single_turn else settings.max_refinements)
    ranking = offline_ranking(dataset, catalog, settings.split, settings.home)
    rollout = GraphRollout(
        rows=rows, catalog=catalog, store=store, context=context, ranking=ranking
    )
    model, tokenizer, has_adapter = _load_policy(settings)

    cuda = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=str(settings.work_dir),
        max_steps=settings.max_steps,
        learning_rate=settings.lr,
        beta=settings.beta,
        temperature=settings.temperature,
        num_generations=settings.num_generations,
        per_device_train_batch_size=settings.num_generations * settings.prompts_per_step,
        max_completion_length=512,
        # Short sequences on a 135M model: recomputing activations would only cost time.
        gradient_checkpointing=False,  # (activation_checkpointing from transformers 5.2x on)
        seed=settings.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        report_to="none",
        **optimiser_kwargs(settings.optimiser),  # type: ignore[arg-type]
    )
    peft_config = (
        None
        if has_adapter
        else LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = settings.work_dir / METRICS_FILE
    if not settings.resume:
        metrics_path.unlink(missing_ok=True)
    from training.callbacks import TimeBudget

    budget = TimeBudget(settings.max_minutes) if settings.max_minutes else None
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[*CONSISTENCY_REWARDS],
        args=config,
        train_dataset=HFDataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
        callbacks=[_metrics_callback(metrics_path, rollout), *([budget] if budget else [])],
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    wall_s = time.perf_counter() - started

    from agent.drafter import BASE_MODEL_SENTINEL

    meta = {
        "made_by": "training.grpo",
        "command": command or " ".join(sys.argv),
        "settings": asdict(settings),
        "optimiser": settings.optimiser,
        "rewards": [f.__name__ for f in CONSISTENCY_REWARDS],
        "data": {"path": str(dataset.root), "name": dataset.name, "prompt_rows": len(rows)},
        "device": "cuda" if cuda else "cpu",
        "code_version": code_version(),
        "versions": _versions(),
        "steps": trainer.state.global_step,
        "stopped_by_time_budget": bool(budget and budget.stopped_at_step is not None),
        "resumed_from": checkpoint,
        "wall_s": round(wall_s, 1),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        adapter_config = tmp / "adapter_config.json"
        if adapter_config.is_file():
            cfg = json.loads(adapter_config.read_text())
            from agent.drafter import resolve_base_model

            if cfg.get("base_model_name_or_path") == resolve_base_model(
                BASE_MODEL_SENTINEL, settings.home
            ):
                cfg["base_model_name_or_path"] = BASE_MODEL_SENTINEL  # loads on any machine
            adapter_config.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        if metrics_path.is_file():
            shutil.copy(metrics_path, tmp / METRICS_FILE)
            plot_metrics(tmp / METRICS_FILE, tmp / "metrics.png")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        tmp.chmod(0o755)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


# --------------------------------------------------------------------------- CLI


def _grpo(args: argparse.Namespace) -> int:
    from memory_store import load_dataset

    settings = GRPOSettings(
        **{k: v for k, v in vars(args).items() if k in GRPOSettings.__dataclass_fields__}
    )
    meta = run_grpo(settings, load_dataset(settings.data))
    print(f"grpo: {meta['steps']} steps in {meta['wall_s']} s -> {settings.out_dir}")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "grpo", help="GRPO/GDPO on the consistency reward, the graph as the rollout"
    )
    p.add_argument("--data", required=True)
    p.add_argument(
        "--model",
        default=None,
        help="policy: HF id, folder or SFT adapter (default: bundled SmolLM2)",
    )
    p.add_argument("--out", default=None)
    p.add_argument(
        "--from-trajectories", default=None, help="prompts from a logged trajectory JSONL"
    )
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--single-turn", action="store_true", help="no refinement (ablation)")
    p.add_argument("--max-refinements", type=int, default=2)
    p.add_argument("--optimiser", choices=["gdpo", "grpo"], default="gdpo")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.001)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--split", choices=["train", "valid"], default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--save-steps", type=int, default=25)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop training after this many minutes (the adapter is still saved)",
    )
    p.set_defaults(func=_grpo)
