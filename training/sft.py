"""SFT cold start: teach the drafter to answer the graph's draft prompt with the real next query.

    queryagent-train sft --config recipes/sft.yaml                 # the shipped adapter's recipe
    queryagent-train sft --data data/amazon-scientific --max_steps 3 --limit 24 --out /tmp/sft
    python -m training.sft --help                                  # every flag, with its default

Settings are ``SFTArguments`` (this script's) and ``QueryAgentSFTConfig`` (TRL's ``SFTConfig``
with this project's defaults), parsed by ``trl.TrlParser``: every ``SFTConfig`` field is a flag
(``--learning_rate``, ``--gradient_accumulation_steps``, ``--report_to tensorboard``), and
``--config FILE.yaml`` sets any of them (flags given too win).

Pairs come from the training split (leave-one-out prefixes, so no valid or test target is seen):
the prompt is exactly the graph's grounded draft prompt, ``agent.prompts.grounded_messages`` of the
profile the
memory builds from the shopper's events before the target (train/serve parity; the worked turns
of the free prompt are gone, since constrained decoding needs no examples of the answer form); the
completion is ``Query: <ground-truth query>``, the path the constrained decoder takes through the
catalog's query trie (``QueryOracle``: the target's category path minus the root).
Targets without a category are skipped and counted. Pairs are shuffled with ``--seed``;
``--limit`` keeps the first N.

Training is TRL's ``SFTTrainer`` on a conversational prompt-completion data set, so the loss covers
the completion tokens only (``completion_only_loss``, set explicitly). LoRA (r 16, alpha 32, every
linear layer) by default, ``--full`` for full fine-tuning (give it a smaller ``--learning_rate``,
e.g. 2e-5, TRL's default for full fine-tuning); an adapter as ``--model`` is trained further. On
CPU the run is fp32; on CUDA bf16 mixed precision.

Writes ``--out`` (default ``<home>/checkpoints/sft``): the adapter (or full model), the tokenizer,
``queryagent.meta.json`` (command, settings, data, code version, base model, steps, losses) and a
model card; see ``training.common``. ``--resume`` continues from the last checkpoint in
``output_dir`` (default ``<out>.work``). An adapter names its base by the Hugging Face id, so it
loads with plain PEFT wherever that base can be had.

Measured (2 CPU cores shared with an evaluation job, ``nice``; SmolLM2 + LoRA, batch 8,
pairs of ~400 tokens): about 130 s per optimizer step, so a CPU run is a smoke test and real
runs belong on a GPU. ``--max_steps 3 --limit 24``: loss 5.24 at step 1, 4.85 mean over 3.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from agent.drafting import BASE_MODEL_ID, ResolvedModel
from agent.prompts import grounded_messages
from graphs.offline.runner import profile_at
from graphs.trajectories import TrajectoryError, code_version
from memory_store import (
    DataError,
    Dataset,
    Example,
    HomeError,
    StoreError,
    UserProfile,
    load_dataset,
    target_position,
)
from training.callbacks import GracefulStop
from training.common import (
    META_FILE,
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
from training.outcomes import load_joined
from training.queries import QueryOracle, common_root

__all__ = [
    "META_FILE",
    "QueryAgentSFTConfig",
    "SFTArguments",
    "SFTError",
    "SFTPair",
    "build_pairs",
    "completion_messages",
    "main",
    "run_sft",
]

logger = logging.getLogger(__name__)

# LoRA shape of the cold start: small enough to train on a CPU, every linear layer adapted.
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.05


class SFTError(TrainingError):
    """A user error in the SFT command (bad number, empty training split, unloadable model)."""


# --------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class SFTPair:
    """One training pair: the draft prompt the graph would send for ``user_id`` with the memory
    cut at ``before`` events, and the answer naming the real next query."""

    user_id: str
    target: str
    before: int
    truth: str
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]


def completion_messages(truth: str) -> list[dict[str, str]]:
    """The assistant turn the drafter should write: the form ``agent.parsing`` expects."""
    return [{"role": "assistant", "content": f"Query: {truth}"}]


def build_pairs(
    dataset: Dataset, *, seed: int = 0, limit: int | None = None
) -> tuple[list[SFTPair], int]:
    """The SFT pairs of the training split, shuffled with ``seed``, at most ``limit`` of them.

    Returns:
        ``(pairs, skipped)``: ``skipped`` counts training targets without a category (no
        ground-truth query), over the whole split.
    """
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    kept: list[tuple[Example, str]] = []
    skipped = 0
    for ex in dataset.examples("train"):
        truth = oracle.of_item(ex.target)
        if truth is None:
            skipped += 1
        else:
            kept.append((ex, truth))
    random.Random(seed).shuffle(kept)
    if limit is not None:
        kept = kept[:limit]
    pairs = []
    # Profiles are built only for the kept pairs: the bundled split has 34k examples.
    for ex, truth in kept:
        before = target_position(dataset, ex, "train")
        pairs.append(
            SFTPair(
                user_id=ex.user_id,
                target=ex.target,
                before=before,
                truth=truth,
                prompt=grounded_messages(profile_at(dataset, ex.user_id, before)),
                completion=completion_messages(truth),
            )
        )
    return pairs, skipped


def trajectory_pairs(
    path: str, home: str | None, *, seed: int = 0, limit: int | None = None
) -> tuple[list[SFTPair], int]:
    """SFT pairs from a trajectory file: the draft prompt of the profile each run held, and the
    query of its target (the outcome of a live run, joined in ``home``).

    Returns:
        ``(pairs, skipped)``: ``skipped`` counts records whose target has no category query.
    """
    records, _ = load_joined(path, home, prog="sft")
    usable = [r for r in records if r.target and r.target.query and r.profile is not None]
    skipped = len(records) - len(usable)
    random.Random(seed).shuffle(usable)
    pairs = []
    for record in usable[:limit] if limit is not None else usable:
        assert record.target is not None and record.target.query is not None
        profile = UserProfile.model_validate(record.profile)
        pairs.append(
            SFTPair(
                user_id=record.user_id,
                target=record.target.item_id,
                before=record.before if record.before is not None else profile.n_events,
                truth=record.target.query,
                prompt=grounded_messages(profile),
                completion=completion_messages(record.target.query),
            )
        )
    return pairs, skipped


# --------------------------------------------------------------------------- settings


@dataclass(kw_only=True)
class SFTArguments:
    """This script's own settings (TRL's are in ``QueryAgentSFTConfig``)."""

    data: str = field(metadata={"help": "data-set folder (its training split is used)"})
    model: str = field(
        default=BASE_MODEL_ID,
        metadata={"help": "model to start from: Hugging Face id, folder or adapter folder"},
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder (default: <home>/checkpoints/sft)"}
    )
    limit: int | None = field(default=None, metadata={"help": "train on this many shuffled pairs"})
    full: bool = field(
        default=False,
        metadata={"help": f"full fine-tuning instead of a LoRA adapter (r {LORA_R}, {LORA_ALPHA})"},
    )
    home: str | None = field(
        default=None, metadata={"help": "QueryAgent home (default: $QUERYAGENT_HOME)"}
    )
    from_trajectories: str | None = field(
        default=None,
        metadata={
            "help": "train on a trajectory file instead of the training split: each run's "
            "profile -> the query of what the shopper bought next (exported runs' target; "
            "live-logged runs are joined with the next purchase in --home first, as "
            "`queryagent-train outcomes` does)"
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of training (and save)"}
    )

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise SFTError(f"--limit must be >= 1, got {self.limit}")
        if self.max_minutes is not None and not (
            self.max_minutes > 0 and math.isfinite(self.max_minutes)
        ):
            raise SFTError(f"--max_minutes must be a positive number, got {self.max_minutes}")


@dataclass
class QueryAgentSFTConfig(SFTConfig):
    """TRL's ``SFTConfig`` with this project's defaults (each shown by ``--help``)."""

    learning_rate: float = field(
        default=2e-4,
        metadata={"help": "AdamW learning rate: the usual LoRA rate (adapters start at zero)"},
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "passes over the pairs"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "pairs per step"})
    # Bundled-set pairs are ~400 SmolLM2 tokens (median; 658 the longest). Truncation would cut
    # the completion (TRL keeps the start), so longer pairs are refused instead.
    max_length: int | None = field(default=1024, metadata={"help": "longest tokenized pair"})
    completion_only_loss: bool | None = field(
        default=True, metadata={"help": "loss on the completion tokens only"}
    )
    # Short sequences on a 135M model: recomputing activations would only cost time. TRL turns
    # it on by default; None leaves it off without the deprecation warning an explicit False
    # draws from transformers 5.2x (where --activation_checkpointing is the new name).
    gradient_checkpointing: bool | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "deprecated name of --activation_checkpointing (off)"}
    )
    logging_steps: float = field(default=10, metadata={"help": "log every N steps"})
    logging_first_step: bool = field(default=True, metadata={"help": "log the first step"})
    save_steps: float = field(default=200, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=1, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "shuffle and initialization seed"})
    bf16: bool | None = field(  # type: ignore[assignment]  # None: decided in __post_init__
        default=None, metadata={"help": "bf16 mixed precision (default: on CUDA with bf16)"}
    )

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = bf16_default()
        if self.data_seed is None:
            self.data_seed = self.seed
        super().__post_init__()


# --------------------------------------------------------------------------- training


def _check_lengths(pairs: list[SFTPair], tokenizer: Any, max_length: int | None) -> int:
    """The longest tokenized pair; refuses pairs that truncation would cut into."""
    longest = 0
    for pair in pairs:
        ids = tokenizer.apply_chat_template(pair.prompt + pair.completion, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        longest = max(longest, len(ids))
    if max_length is not None and longest > max_length:
        raise SFTError(
            f"a pair is {longest} tokens, longer than --max_length {max_length}; raise it"
        )
    return longest


def _lora_config(args: SFTArguments, continuing: bool) -> Any:
    """A fresh LoRA adapter, unless training full weights or an adapter given as ``--model``."""
    if args.full or continuing:
        return None
    from peft import LoraConfig  # peft is heavy (torch): loaded when a run starts

    return LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


@dataclass
class _Run:
    """What one training run produced, for the sidecar and the model card."""

    resolved: ResolvedModel
    trainer: Any
    result: Any
    budget: Any
    checkpoint: str | None
    pairs: int
    skipped: int
    longest: int
    trainable: int


def _train(
    args: SFTArguments, config: QueryAgentSFTConfig, dataset: Dataset, checkpoint: str | None
) -> tuple[_Run, Any]:
    """Build the pairs, load the model, train; returns the run and the tokenizer."""
    from datasets import Dataset as HFDataset  # heavy (pyarrow): loaded when a run starts
    from trl import SFTTrainer  # trl's trainer modules are heavy: loaded when a run starts

    if args.from_trajectories:
        pairs, skipped = trajectory_pairs(
            args.from_trajectories, args.home, seed=config.seed, limit=args.limit
        )
        if not pairs:
            raise SFTError(
                f"{args.from_trajectories}: no run has a target (or a later purchase) with a "
                "category; see `queryagent-train outcomes`"
            )
    else:
        pairs, skipped = build_pairs(dataset, seed=config.seed, limit=args.limit)
    if not pairs:
        raise SFTError(f"{dataset.root}: the training split has no target with a category")
    resolved, model, tokenizer = load_start_model(args.model, args.home)
    longest = _check_lengths(pairs, tokenizer, config.max_length)
    train = HFDataset.from_list([{"prompt": p.prompt, "completion": p.completion} for p in pairs])
    budget = GracefulStop(args.max_minutes)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=_lora_config(args, continuing=resolved.adapter),
        callbacks=[budget],
    )
    assert trainer.model is not None
    trainable = sum(int(p.numel()) for p in trainer.model.parameters() if p.requires_grad)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    run = _Run(
        resolved, trainer, result, budget, checkpoint, len(pairs), skipped, longest, trainable
    )
    return run, tokenizer


def _meta(
    run: _Run, args: SFTArguments, config: QueryAgentSFTConfig, dataset: Dataset, command: str
) -> dict[str, Any]:
    """The sidecar: command, settings, data, versions, base model, steps, losses."""
    state, resolved = run.trainer.state, run.resolved
    logged = [(row["step"], row["loss"]) for row in state.log_history if "loss" in row]
    lora = {"r": LORA_R, "alpha": LORA_ALPHA, "dropout": LORA_DROPOUT}
    return {
        "made_by": "training.sft",
        "command": command,
        "settings": settings_dict(args, config),
        "training": {
            "method": "full" if args.full else "lora",
            "learning_rate": config.learning_rate,
            "lora": lora | {"target_modules": "all-linear"}
            if not args.full and not resolved.adapter
            else None,
            "continued_adapter": resolved.name if resolved.adapter else None,
            "completion_only_loss": config.completion_only_loss,
            "device": str(run.trainer.args.device.type),
            "bf16": bool(config.bf16),
            "trainable_params": run.trainable,
        },
        "data": {
            "path": str(dataset.root),
            "name": dataset.name,
            "split": "train",
            "pairs": run.pairs,
            "skipped_no_category": run.skipped,
            "longest_tokens": run.longest,
        },
        "code_version": code_version(),
        "versions": versions(),
        "base_model": resolved.base_name,
        "base_model_loaded_from": resolved.base_source,
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0.0), 4),
        "stopped_by_time_budget": run.budget.reason == "time",
        "stopped_by_interrupt": run.budget.reason == "interrupt",
        "resumed_from": run.checkpoint,
        "train_s": round(float(run.result.metrics.get("train_runtime", 0.0)), 1),
        "train_loss": round(float(run.result.training_loss), 4),  # mean over the run's steps
        # The last logged loss (every logging_steps steps, and the first) and its step.
        "final_loss": round(float(logged[-1][1]), 4) if logged else None,
        "final_loss_step": logged[-1][0] if logged else None,
    }


def _card(run: _Run, args: SFTArguments, dataset: Dataset, meta: dict[str, Any], out: str) -> Any:
    adapter = not args.full
    return model_card(
        resolved=run.resolved,
        adapter=adapter,
        title=f"{out}: SFT cold start of QueryAgent's drafter",
        summary=(
            f"{'A LoRA adapter' if adapter else 'A fully fine-tuned model'} on "
            f"`{run.resolved.base_name}`, trained with TRL's `SFTTrainer` to answer the agent "
            f"graph's draft prompt with the shopper's real next query: {meta['steps']} steps, "
            f"train loss {meta['train_loss']} (last logged {meta['final_loss']})."
        ),
        data=(
            f"The training split of `{dataset.root}` ({dataset.name}): {run.pairs:,} (draft "
            "prompt -> `Query: <ground-truth query>`) pairs, one per training row whose target "
            f"has a category ({run.skipped:,} without one skipped). The prompt is exactly the "
            "graph's draft prompt (the shopper's memory built from the items before the "
            "target); the ground-truth query is the target's category path without its root. "
            f"Loss on the completion only. Longest pair: {run.longest} tokens."
        ),
        command=meta["command"],
        tags=["sft"],
    )


def run_sft(
    args: SFTArguments,
    config: QueryAgentSFTConfig,
    dataset: Dataset,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Build the pairs, train, save to the output folder; returns the sidecar's content."""
    started = time.perf_counter()
    out, work, checkpoint = prepare_output(config, args.out, args.home, "sft", args.resume)
    run, tokenizer = _train(args, config, dataset, checkpoint)
    meta = _meta(run, args, config, dataset, command or command_line("queryagent-train sft", None))
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    save_output(
        out,
        trainer=run.trainer,
        tokenizer=tokenizer,
        resolved=run.resolved,
        meta=meta,
        card=_card(run, args, dataset, meta, out.name),
        work=work,
    )
    if not run.budget.keep_checkpoints():
        remove_work_dir(work)  # finished; a run stopped early keeps them for --resume
    return meta


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.sft") -> int:
    """``queryagent-train sft ...`` / ``python -m training.sft ...``: parse, train, report.

    User errors (a bad value, a missing data folder, an unloadable model) print one line and
    return 2.
    """
    try:
        args, config = parse_command_line((SFTArguments, QueryAgentSFTConfig), argv, prog)
        dataset = load_dataset(args.data)
        meta = run_sft(args, config, dataset, command=command_line(prog, argv))
    except (TrainingError, DataError, TrajectoryError, StoreError, HomeError) as exc:
        print(f"sft: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {default_out(args.out, args.home, 'sft')}: {meta['data']['pairs']} pairs, "
        f"{meta['steps']} steps, train loss {meta['train_loss']}, last loss "
        f"{meta['final_loss']}, {meta['wall_s']} s"
    )
    if meta.get("stopped_by_time_budget") or meta.get("stopped_by_interrupt"):
        why = "--max_minutes" if meta.get("stopped_by_time_budget") else "Ctrl-C"
        print(f"stopped on {why} at step {meta['steps']}: add --resume to continue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
