"""GRPO for the writer: the model writes the query text for the check's intent, rewarded by what
the text retrieves (``training.rewards.writer_rewards``).

    queryagent-train write-grpo --config recipes/writer-grpo-cpu.yaml       # the shipped recipe
    queryagent-train write-grpo --data data/amazon-scientific --model models/smollm2-writer \
        --max_steps 300 --max_minutes 50 [--resume] [--out DIR]
    python -m training.writer.grpo --help                                   # every flag

Settings are ``WriterGRPOArguments`` (this script's) and ``WriterGRPOConfig`` (TRL's
``GRPOConfig`` with this role's defaults), parsed by ``trl.TrlParser``: every ``GRPOConfig``
field is a flag and ``--config FILE.yaml`` sets any of them.

A prompt row is one training-split shopper at one position, the intent their next purchase's
category query (``training.writer.rows``); a completion is one written text (about 10 tokens),
so a step is cheap and hundreds fit on a CPU, in sittings with ``--resume``. The reward is the
weighted sum (TRL's ``reward_weights``, ``WRITER_REWARD_WEIGHTS``) of the next purchase's rank in
the text's results, the share of them in the intent's category and brevity.

Against collapse and for small groups, from what TRL offers: ``scale_rewards="batch"`` (a group
of 4 has a noisy std of its own; the batch's is steadier), ``loss_type="dapo"`` (token-level
normalization, no length bias), ``epsilon_high`` 0.28 (DAPO's clip-higher, which keeps
exploration from collapsing), a small KL (``beta`` 0.001, which also gives the KL curve), one
iteration per generation (``num_iterations`` 1), sampled groups at temperature 1.0.

Every ``--heldout_every`` steps (and before the first) the policy's greedy texts for
``--heldout`` fixed ``valid`` shoppers are scored with the same terms, each with a 95% bootstrap
interval (``training.writer.heldout``), beside the intent's own text. The per-step reward, KL,
entropy and the held-out curve go to ``metrics.jsonl`` and ``metrics.png`` beside the adapter.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.catalog import CatalogError
from agent.drafting import DrafterError, resolve_model
from graphs.record import code_version
from memory_store import DataError, Dataset, HomeError, StoreError, load_dataset
from memory_store.files import atomic_write
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
from training.grpo.callbacks import METRICS_FILE, keep_metrics_until
from training.grpo.config import QueryAgentGRPOConfig
from training.rewards import WRITER_REWARD_WEIGHTS, TextResults, writer_rewards
from training.writer.heldout import OpenWriterSearch, greedy_texts, score_texts
from training.writer.rows import WriterRow, item_queries, writer_rows

WRITER_MODEL = "models/smollm2-writer"


class WriterGRPOError(TrainingError):
    """A user error in the writer's GRPO command."""


@dataclass(kw_only=True)
class WriterGRPOArguments:
    """This script's own settings (TRL's are in ``WriterGRPOConfig``)."""

    data: str = field(metadata={"help": "data-set folder (its training split is used)"})
    model: str = field(
        default=WRITER_MODEL, metadata={"help": "policy to start from: the SFT writer adapter"}
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder (default: <home>/checkpoints/write-grpo)"}
    )
    home: str | None = field(
        default=None, metadata={"help": "QueryAgent home (default: $QUERYAGENT_HOME)"}
    )
    limit: int | None = field(
        default=None, metadata={"help": "prompt rows drawn from the training split (all)"}
    )
    heldout: int = field(default=500, metadata={"help": "valid shoppers in the held-out curve"})
    heldout_every: int = field(default=50, metadata={"help": "steps between held-out points"})
    rank_depth: int = field(default=100, metadata={"help": "results read by the rank term"})
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of training (and save)"}
    )

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise WriterGRPOError(f"--limit must be >= 1, got {self.limit}")
        if self.heldout < 0 or self.heldout_every < 1:
            raise WriterGRPOError("--heldout must be >= 0 and --heldout_every >= 1")
        if self.rank_depth < 1:
            raise WriterGRPOError(f"--rank_depth must be >= 1, got {self.rank_depth}")
        if self.max_minutes is not None and not (
            self.max_minutes > 0 and math.isfinite(self.max_minutes)
        ):
            raise WriterGRPOError(
                f"--max_minutes must be a positive number, got {self.max_minutes}"
            )


@dataclass
class WriterGRPOConfig(QueryAgentGRPOConfig):
    """The project's GRPO config (``training.grpo.config``) with the writer's defaults."""

    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of groups"})
    num_generations: int | None = field(default=4, metadata={"help": "texts per prompt"})
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "completions per step: prompts x num_generations"}
    )
    max_steps: int = field(default=300, metadata={"help": "optimizer steps"})
    max_completion_length: int | None = field(
        default=16, metadata={"help": "longest written text, in tokens"}
    )
    scale_rewards: str = field(  # type: ignore[assignment]
        default="batch", metadata={"help": "group | batch | none: the advantages' std"}
    )
    loss_type: str = field(default="dapo", metadata={"help": "TRL's loss normalization"})
    epsilon_high: float | None = field(
        default=0.28, metadata={"help": "upper clip (DAPO's clip-higher)"}
    )
    multi_objective_aggregation: str = field(
        default="sum_then_normalize",
        metadata={"help": "sum_then_normalize (GRPO) or normalize_then_sum (GDPO)"},
    )
    reward_weights: list[float] | None = field(
        default_factory=lambda: list(WRITER_REWARD_WEIGHTS),
        metadata={"help": "weights of rank, share, brevity"},
    )


def _rows_dataset(rows: Sequence[WriterRow]) -> list[dict[str, Any]]:
    return [{"prompt": r.prompt, "target_item": r.target, "intent": r.intent} for r in rows]


def _heldout_row(step: int, scores: dict[str, Any], prefix: str = "heldout") -> dict[str, Any]:
    row: dict[str, Any] = {"step": step}
    for key, value in scores.items():
        if isinstance(value, dict):
            row.update({f"{prefix}/{key}/{k}": v for k, v in value.items()})
        elif key != "per_row":
            row[f"{prefix}/{key}"] = value
    return row


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _scored_at(path: Path, step: int) -> bool:
    if not path.is_file():
        return False
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return any(r.get("step") == step and "heldout/reward/mean" in r for r in rows)


def _callbacks(
    path: Path,
    heldout: Sequence[WriterRow],
    results: TextResults,
    item_query: dict[str, str],
    every: int,
) -> list[Any]:
    from transformers import TrainerCallback  # transformers is heavy: loaded when training starts

    class MetricsFile(TrainerCallback):
        """Appends TRL's per-step logs (reward terms, reward, KL, entropy, loss) to the file."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if logs and ("loss" in logs or "reward" in logs):
                _append(path, {"step": state.global_step, **logs})

    class HeldOut(TrainerCallback):
        """The policy's greedy texts for the fixed held-out shoppers, scored before the first
        step and every ``every`` steps."""

        def _score(self, state: Any, model: Any, tokenizer: Any) -> None:
            texts = greedy_texts(model, tokenizer, heldout)
            scores = score_texts(heldout, texts, results, item_query)
            _append(path, _heldout_row(state.global_step, scores))

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if heldout and not _scored_at(path, state.global_step):
                self._score(state, kw["model"], kw["processing_class"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if heldout and state.global_step % every == 0:
                self._score(state, kw["model"], kw["processing_class"])

    return [MetricsFile(), HeldOut()]


def plot_writer_metrics(path: Path, out: Path) -> None:
    """Four panels over steps: reward (per step and held out, with its interval), KL, entropy,
    the held-out hit@10 beside the intent's own text."""
    # matplotlib is an optional training dependency and slow to import: loaded only to draw.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "reward" in r]
    held = [r for r in rows if "heldout/reward/mean" in r]
    intent = next((r for r in rows if "intent/reward/mean" in r), None)
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    ax = axes[0]
    if steps:
        ax.plot([r["step"] for r in steps], [r["reward"] for r in steps], lw=0.6, label="per step")
    for key, label, colour in (("reward", "held out", "C1"),):
        xs = [r["step"] for r in held]
        ax.errorbar(
            xs,
            [r[f"heldout/{key}/mean"] for r in held],
            yerr=[
                [r[f"heldout/{key}/mean"] - r[f"heldout/{key}/low"] for r in held],
                [r[f"heldout/{key}/high"] - r[f"heldout/{key}/mean"] for r in held],
            ],
            fmt="o-",
            color=colour,
            capsize=3,
            label=f"{label} ({held[0]['heldout/shoppers'] if held else 0} valid shoppers)",
        )
    if intent:
        ax.axhline(intent["intent/reward/mean"], color="grey", ls="--", label="intent's own text")
    ax.set_title("reward")
    ax.legend(fontsize=7)
    for ax, key in zip(axes[1:3], ("kl", "entropy"), strict=True):
        pts = [r for r in steps if key in r]
        ax.plot([r["step"] for r in pts], [r[key] for r in pts], lw=0.8)
        ax.set_title(key)
    ax = axes[3]
    ax.plot([r["step"] for r in held], [r["heldout/hit@10/mean"] for r in held], "o-")
    if intent:
        ax.axhline(intent["intent/hit@10/mean"], color="grey", ls="--", label="intent's own text")
        ax.legend(fontsize=7)
    ax.set_title("held-out hit@10")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _card(meta: dict[str, Any], resolved: Any, out: Path) -> Any:
    first, last = meta.get("heldout_first"), meta.get("heldout_last")
    curve = (
        f" Held-out reward ({meta['data']['heldout']} valid shoppers, greedy): "
        f"{first['mean']} [{first['low']}, {first['high']}] at the start, "
        f"{last['mean']} [{last['low']}, {last['high']}] at step {meta['heldout_last_step']}; "
        f"the intent's own text scores {meta['intent_reward']['mean']}."
        if first and last
        else ""
    )
    return model_card(
        resolved=resolved,
        adapter=True,
        title=f"{out.name}: QueryAgent's writer after GRPO",
        summary=(
            "A LoRA adapter for the writer role (`agent.writing`: the query text the shopper "
            f"sees for the intent the check picked), GRPO with TRL from `{meta['started_from']}`: "
            f"{meta['steps']} steps on {meta['device']} in {meta['wall_s']} s.{curve}"
        ),
        data=(
            f"Prompt rows from the training split of `{meta['data']['path']}`: the next purchase's "
            "category query as the intent, the graph's writing prompt; rewards read the fused "
            "search fitted before the valid targets (`training.writer`)."
        ),
        command=meta["command"],
        tags=["grpo", "writer"],
    )


def run_writer_grpo(
    args: WriterGRPOArguments,
    config: WriterGRPOConfig,
    dataset: Dataset,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Train, save the adapter to the output folder; returns the sidecar's content."""
    from datasets import Dataset as HFDataset  # heavy (pyarrow): loaded when a run starts
    from trl import GRPOTrainer  # trl's trainer modules are heavy: loaded when a run starts

    started = time.perf_counter()
    out, work, checkpoint = prepare_output(config, args.out, args.home, "write-grpo", args.resume)
    try:  # before any work: the policy must be a writer adapter
        start = resolve_model(args.model, args.home)
    except DrafterError as err:
        raise WriterGRPOError(str(err)) from None
    if not start.adapter:
        raise WriterGRPOError(
            f"--model {args.model}: start from the SFT writer adapter (`queryagent-train sft "
            "--role write`), not a bare model"
        )
    rows, _ = writer_rows(dataset, "train", limit=args.limit, seed=config.seed)
    if not rows:
        raise WriterGRPOError(f"{dataset.root}: the training split has no target with a category")
    heldout, _ = (
        writer_rows(dataset, "valid", limit=args.heldout, seed=0) if args.heldout else ([], 0)
    )
    queries = item_queries(dataset)
    results = TextResults(OpenWriterSearch(str(dataset.root), args.home), depth=args.rank_depth)
    work.mkdir(parents=True, exist_ok=True)
    metrics_path = work / METRICS_FILE
    if not args.resume:
        metrics_path.unlink(missing_ok=True)
    elif checkpoint is not None:
        keep_metrics_until(metrics_path, int(Path(checkpoint).name.rsplit("-", 1)[-1]))
    if heldout and not any(
        "intent/reward/mean" in line for line in _lines(metrics_path)
    ):  # the reference line: what the agent shows without a writer
        intent = score_texts(heldout, [r.intent for r in heldout], results, queries)
        _append(metrics_path, _heldout_row(0, intent, prefix="intent"))
    resolved, model, tokenizer = load_start_model(args.model, args.home)
    budget = GracefulStop(args.max_minutes)
    reward_funcs: list[Any] = list(writer_rewards(results, queries))  # TRL's list is invariant
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=HFDataset.from_list(_rows_dataset(rows)),
        processing_class=tokenizer,
        callbacks=[
            budget,
            *_callbacks(metrics_path, heldout, results, queries, args.heldout_every),
        ],
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    lines = [json.loads(line) for line in _lines(metrics_path)]
    held = [r for r in lines if "heldout/reward/mean" in r]
    intent_row: dict[str, Any] = next((r for r in lines if "intent/reward/mean" in r), {})

    def interval(row: dict[str, Any]) -> dict[str, float]:
        return {k: row[f"heldout/reward/{k}"] for k in ("mean", "low", "high")}

    meta = {
        "made_by": "training.writer.grpo",
        "role": "write",
        "command": command or command_line("queryagent-train write-grpo", None),
        "settings": settings_dict(args, config),
        "rewards": ["text_rank_reward", "text_share_reward", "text_brevity_reward"],
        "reward_weights": list(config.reward_weights or []),
        "data": {
            "path": str(dataset.root),
            "name": dataset.name,
            "prompt_rows": len(rows),
            "heldout": len(heldout),
        },
        "device": str(trainer.args.device.type),
        "code_version": code_version(),
        "versions": versions(),
        "base_model": resolved.base_name,
        "started_from": resolved.name,
        "steps": trainer.state.global_step,
        "heldout_first": interval(held[0]) if held else None,
        "heldout_last": interval(held[-1]) if held else None,
        "heldout_last_step": held[-1]["step"] if held else None,
        "intent_reward": {"mean": intent_row.get("intent/reward/mean")},
        "stopped_by_time_budget": budget.reason == "time",
        "stopped_by_interrupt": budget.reason == "interrupt",
        "resumed_from": checkpoint,
        "wall_s": round(time.perf_counter() - started, 1),
    }

    def extra(folder: Path) -> None:
        atomic_write(folder / METRICS_FILE, metrics_path.read_text())
        plot_writer_metrics(folder / METRICS_FILE, folder / "metrics.png")

    save_output(
        out,
        trainer=trainer,
        tokenizer=tokenizer,
        resolved=resolved,
        meta=meta,
        card=_card(meta, resolved, out),
        work=work,
        extra=extra,
    )
    if not budget.keep_checkpoints():
        remove_work_dir(work)  # finished; a run stopped early keeps them for --resume
    return meta


def _lines(path: Path) -> list[str]:
    return (
        [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.writer.grpo") -> int:
    """``queryagent-train write-grpo ...``: parse, train, report. User errors print one line
    and return 2."""
    try:
        args, config = parse_command_line((WriterGRPOArguments, WriterGRPOConfig), argv, prog)
        dataset = load_dataset(args.data)
        meta = run_writer_grpo(args, config, dataset, command=command_line(prog, argv))
    except (TrainingError, DataError, StoreError, HomeError, CatalogError) as exc:
        print(f"write-grpo: error: {exc}", file=sys.stderr)
        return 2
    out = default_out(args.out, args.home, "write-grpo")
    print(f"write-grpo: {meta['steps']} steps in {meta['wall_s']} s -> {out}")
    if meta["heldout_first"] and meta["heldout_last"]:
        print(
            f"write-grpo: held-out reward {meta['heldout_first']} -> {meta['heldout_last']} "
            f"(intent's own text {meta['intent_reward']['mean']})"
        )
    if meta.get("stopped_by_time_budget") or meta.get("stopped_by_interrupt"):
        why = "--max_minutes" if meta.get("stopped_by_time_budget") else "Ctrl-C"
        print(f"write-grpo: stopped on {why} at step {meta['steps']}: add --resume to continue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
