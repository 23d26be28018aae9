"""SFT cold start of the model's role: the writer (``--role write``, the default; the pairs are
``training.writer``'s, see ``writer_pairs``) or the drafter (``--role draft``, described below).

    queryagent-train sft --config recipes/writer-sft.yaml          # stage 1 of `make train`
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

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.drafting import DrafterError, ResolvedModel, resolve_model
from graphs.record import TrajectoryError, code_version
from memory_store import DataError, Dataset, HomeError, StoreError, load_dataset
from training.callbacks import GracefulStop
from training.common import (
    TrainingError,
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
from training.sft.config import (
    LORA_ALPHA,
    LORA_DROPOUT,
    LORA_R,
    WRITER_LORA_LAYERS,
    WRITER_LORA_MODULES,
    QueryAgentSFTConfig,
    SFTArguments,
    SFTError,
)
from training.sft.pairs import SFTPair, build_pairs, trajectory_pairs, writer_pairs


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


def _lora_config(args: SFTArguments, continuing: bool, layers: int) -> Any:
    """A fresh LoRA adapter, unless training full weights or an adapter given as ``--model``.
    The writer's adapts only the top ``WRITER_LORA_LAYERS`` of the ``layers`` decoder layers:
    the backward pass then stops there, which halves a CPU step (its completions are a few
    words; the drafter's role adapts every layer)."""
    if args.full or continuing:
        return None
    from peft import LoraConfig  # peft is heavy (torch): loaded when a run starts

    top = list(range(max(0, layers - WRITER_LORA_LAYERS), layers)) if args.role == "write" else None
    return LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        # "all-linear" by name: PEFT takes a layer range only with a list of module names.
        target_modules="all-linear" if top is None else list(WRITER_LORA_MODULES),
        layers_to_transform=top,
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

    try:  # a model that cannot load is one line before any pair is built
        resolve_model(args.model, args.home)
    except DrafterError as err:
        raise SFTError(str(err)) from None
    if args.from_trajectories:
        pairs, skipped = trajectory_pairs(
            args.from_trajectories, args.home, seed=config.seed, limit=args.limit
        )
        if not pairs:
            raise SFTError(
                f"{args.from_trajectories}: no run has a target (or a later purchase) with a "
                "category; see `queryagent-train outcomes`"
            )
    elif args.role == "write":
        pairs, skipped = writer_pairs(dataset, args.home, seed=config.seed, limit=args.limit)
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
        peft_config=_lora_config(
            args, continuing=resolved.adapter, layers=model.config.num_hidden_layers
        ),
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
        "role": args.role,
        "command": command,
        "settings": settings_dict(args, config),
        "training": {
            "method": "full" if args.full else "lora",
            "learning_rate": config.learning_rate,
            "lora": lora
            | {"target_modules": "all-linear"}
            | ({"top_layers": WRITER_LORA_LAYERS} if args.role == "write" else {})
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
    if args.role == "write":
        return model_card(
            resolved=run.resolved,
            adapter=adapter,
            title=f"{out}: SFT cold start of QueryAgent's writer",
            summary=(
                f"{'A LoRA adapter' if adapter else 'A fully fine-tuned model'} on "
                f"`{run.resolved.base_name}`, trained with TRL's `SFTTrainer` for the writer role "
                "(`agent.writing`): it writes the query text the shopper sees for the intent the "
                f"check picked. {meta['steps']} steps on {meta['training']['device']}, "
                f"{meta['train_s']} s, train loss {meta['train_loss']} (last logged "
                f"{meta['final_loss']})."
            ),
            data=(
                f"The training split of `{dataset.root}` ({dataset.name}): {run.pairs:,} (writing "
                "prompt -> `Query: <text>`) pairs; the intent is the next purchase's category "
                "query, the text the history-supported one (the intent's last words, alone or "
                "led by one of the shopper's brands) whose fused-search results rank the real "
                f"next purchase highest (`training.writer.rows`). {run.skipped:,} rows without "
                f"a category skipped. Longest pair: {run.longest} tokens."
            ),
            command=meta["command"],
            tags=["sft", "writer"],
        )
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
