"""SFT cold start: teach the drafter to answer the graph's draft prompt with the real next query.

    queryagent-train sft --data data/amazon-scientific [--model ID_OR_PATH] [--out DIR] \
        [--max-steps N] [--epochs 1] [--limit N] [--lora | --full] [--lr LR] [--batch-size 8] \
        [--seed 0] [--home DIR] [--resume]

Pairs come from the training split (leave-one-out prefixes, so no valid or test target is seen):
the prompt is exactly the graph's draft prompt, ``agent.prompts.draft_messages`` of the profile the
memory builds from the shopper's events before the target (train/serve parity); the completion is
``Query: <ground-truth query>`` (``QueryOracle``: the target's category path minus the root).
Targets without a category are skipped and counted. Pairs are shuffled with ``--seed``;
``--limit`` keeps the first N.

Training is TRL's ``SFTTrainer`` on a conversational prompt-completion data set, so the loss covers
the completion tokens only (``completion_only_loss``, TRL's default for such data, set
explicitly here). LoRA (r 16, alpha 32, every linear layer) by default, ``--full`` for full
fine-tuning. Defaults (commented where set): learning rate 2e-4 with LoRA and 2e-5 in full, batch
8, one epoch. On CPU the run is fp32; on CUDA bf16 mixed precision.

Writes ``--out`` (default ``<home>/checkpoints/sft``): the adapter (or full model), the tokenizer
and ``queryagent.meta.json`` (command, settings, data, code version, base model, pairs, steps, wall
time, losses). The folder is written under a temporary name and renamed into place. Trainer
checkpoints go to ``<out>.work/`` every ``--save-steps`` steps; ``--resume`` continues from the
last of them, and a finished run deletes them. An adapter trained on the bundled model names
``agent.drafter.BASE_MODEL_SENTINEL`` as its base, which ``HFDrafter`` resolves to the local
converted copy on any machine::

    queryagent-train sft --data data/amazon-scientific --limit 2000
    queryagent-train eval --data data/amazon-scientific --model .queryagent/checkpoints/sft

Measured (2 CPU cores shared with an evaluation job, ``nice``; SmolLM2 + LoRA, batch 8,
pairs of ~400 tokens): about 130 s per optimizer step, so a CPU run is a smoke test and real
runs belong on a GPU. ``--max-steps 3 --limit 24``: loss 5.24 at step 1, 4.85 mean over 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.drafter import BASE_MODEL_SENTINEL, resolve_base_model
from graphs.runner import draft_prompt_at
from memory_store import Dataset, Example, queryagent_home, target_position
from training.queries import QueryOracle, common_root

__all__ = [
    "META_FILE",
    "SFTError",
    "SFTPair",
    "SFTSettings",
    "add_parser",
    "build_pairs",
    "completion_messages",
    "run_sft",
]

logger = logging.getLogger(__name__)

META_FILE = "queryagent.meta.json"
# LoRA shape of the cold start: small enough to train on a CPU, every linear layer adapted.
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.05
DEFAULT_LR_LORA = 2e-4  # the usual LoRA rate; adapters start at zero and need large steps
DEFAULT_LR_FULL = 2e-5  # TRL's SFT default for full fine-tuning


class SFTError(Exception):
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
                prompt=draft_prompt_at(dataset, ex.user_id, before)[1],
                completion=completion_messages(truth),
            )
        )
    return pairs, skipped


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class SFTSettings:
    """What one SFT run does; every field is a ``queryagent-train sft`` flag."""

    data: str = field(metadata={"help": "data-set folder (its training split is used)"})
    model: str | None = field(
        default=None,
        metadata={"help": "base model: HF id or folder; None for the bundled SmolLM2"},
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder; None for <home>/checkpoints/sft"}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "optimizer steps; overrides epochs when set"}
    )
    epochs: float = field(default=1.0, metadata={"help": "passes over the pairs"})
    limit: int | None = field(default=None, metadata={"help": "keep this many pairs"})
    lora: bool = field(default=True, metadata={"help": "LoRA adapter; False: full fine-tuning"})
    lr: float | None = field(
        default=None,
        metadata={"help": f"learning rate; None: {DEFAULT_LR_LORA} LoRA, {DEFAULT_LR_FULL} full"},
    )
    batch_size: int = field(default=8, metadata={"help": "pairs per optimizer step"})
    seed: int = field(default=0, metadata={"help": "shuffle and initialization seed"})
    home: str | None = field(default=None, metadata={"help": "QueryAgent home"})
    resume: bool = field(default=False, metadata={"help": "continue from <out>.work/"})
    # Bundled-set pairs are ~400 SmolLM2 tokens (median; 650 the longest of 2,000 sampled).
    # Truncation would cut the completion (TRL keeps the start), so longer pairs are refused.
    max_length: int = field(default=1024, metadata={"help": "longest tokenized pair"})
    save_steps: int = field(default=200, metadata={"help": "checkpoint every N steps"})
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of training (and save)"}
    )

    def __post_init__(self) -> None:
        if self.max_minutes is not None and not (
            self.max_minutes > 0 and math.isfinite(self.max_minutes)
        ):
            raise SFTError(f"--max-minutes must be a positive number, got {self.max_minutes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise SFTError(f"--max-steps must be >= 1, got {self.max_steps}")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise SFTError(f"--epochs must be a positive number, got {self.epochs}")
        if self.limit is not None and self.limit < 1:
            raise SFTError(f"--limit must be >= 1, got {self.limit}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise SFTError(f"--lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise SFTError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_length < 16:
            raise SFTError(f"--max-length must be >= 16, got {self.max_length}")
        if self.save_steps < 1:
            raise SFTError(f"--save-steps must be >= 1, got {self.save_steps}")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return DEFAULT_LR_LORA if self.lora else DEFAULT_LR_FULL

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else queryagent_home(self.home) / "checkpoints" / "sft"

    @property
    def work_dir(self) -> Path:
        return self.out_dir.with_name(self.out_dir.name + ".work")

    @property
    def default_base(self) -> bool:
        return self.model is None or self.model == BASE_MODEL_SENTINEL


# --------------------------------------------------------------------------- training


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _load_base(settings: SFTSettings) -> tuple[Any, Any, str]:
    """The base model (fp32), its tokenizer, and the folder or id they loaded from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_base_model(settings.model or BASE_MODEL_SENTINEL, settings.home)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise SFTError(f"cannot load model {settings.model!r}: {_first_line(err)}") from err
    if tokenizer.chat_template is None:
        raise SFTError(f"model {source!r} has no chat template; the draft prompt is a chat")
    return model, tokenizer, source


def _check_lengths(pairs: list[SFTPair], tokenizer: Any, max_length: int) -> int:
    """The longest tokenized pair; refuses pairs that truncation would cut into."""
    longest = 0
    for pair in pairs:
        ids = tokenizer.apply_chat_template(pair.prompt + pair.completion, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        longest = max(longest, len(ids))
    if longest > max_length:
        raise SFTError(
            f"a pair is {longest} tokens, longer than --max-length {max_length}; raise it"
        )
    return longest


def _last_checkpoint(work_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, replacing an earlier output; readers never see half a folder."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch": torch.__version__,
    }


def run_sft(settings: SFTSettings, dataset: Dataset, *, command: str | None = None) -> dict:
    """Build the pairs, train, save to ``settings.out_dir``; returns the sidecar's content."""
    import torch
    from datasets import Dataset as HFDataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from graphs.trajectories import code_version

    started = time.perf_counter()
    out = settings.out_dir
    if out.exists() and not out.is_dir():
        raise SFTError(f"--out {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / META_FILE).is_file():
        raise SFTError(f"--out {out} holds files this command did not write; pick another folder")
    checkpoint = None
    if settings.resume:
        checkpoint = _last_checkpoint(settings.work_dir)
        if checkpoint is None:
            raise SFTError(f"--resume: no checkpoint in {settings.work_dir} to resume from")

    pairs, skipped = build_pairs(dataset, seed=settings.seed, limit=settings.limit)
    if not pairs:
        raise SFTError(f"{dataset.root}: the training split has no target with a category")
    model, tokenizer, source = _load_base(settings)
    longest = _check_lengths(pairs, tokenizer, settings.max_length)
    train = HFDataset.from_list([{"prompt": p.prompt, "completion": p.completion} for p in pairs])

    cuda = torch.cuda.is_available()
    config = SFTConfig(
        output_dir=str(settings.work_dir),
        max_steps=settings.max_steps or -1,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        data_seed=settings.seed,
        completion_only_loss=True,
        max_length=settings.max_length,
        # Short sequences on a 135M model: recomputing activations would only cost time.
        gradient_checkpointing=False,  # (activation_checkpointing from transformers 5.2x on)
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        logging_steps=10,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=1,
        report_to="none",
        dataloader_num_workers=0,
    )
    peft_config = (
        LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=LORA_DROPOUT,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        if settings.lora
        else None
    )
    from training.callbacks import TimeBudget

    budget = TimeBudget(settings.max_minutes) if settings.max_minutes else None
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[budget] if budget else None,
    )
    assert trainer.model is not None
    trainable = sum(int(p.numel()) for p in trainer.model.parameters() if p.requires_grad)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    logged = [(row["step"], row["loss"]) for row in trainer.state.log_history if "loss" in row]
    wall_s = time.perf_counter() - started

    meta = {
        "made_by": "training.sft",
        "command": command or " ".join(sys.argv),
        "settings": asdict(settings),
        "training": {
            "method": "lora" if settings.lora else "full",
            "learning_rate": settings.learning_rate,
            "lora": (
                {
                    "r": LORA_R,
                    "alpha": LORA_ALPHA,
                    "dropout": LORA_DROPOUT,
                    "target_modules": "all-linear",
                }
                if settings.lora
                else None
            ),
            "completion_only_loss": True,
            "device": "cuda" if cuda else "cpu",
            "bf16": bool(config.bf16),
            "trainable_params": trainable,
        },
        "data": {
            "path": str(dataset.root),
            "name": dataset.name,
            "split": "train",
            "pairs": len(pairs),
            "skipped_no_category": skipped,
            "longest_tokens": longest,
        },
        "code_version": code_version(),
        "versions": _versions(),
        "base_model": BASE_MODEL_SENTINEL if settings.default_base else settings.model,
        "base_model_loaded_from": source,
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "stopped_by_time_budget": bool(budget and budget.stopped_at_step is not None),
        "resumed_from": checkpoint,
        "wall_s": round(wall_s, 1),
        "train_s": round(float(result.metrics.get("train_runtime", 0.0)), 1),
        "train_loss": round(float(result.training_loss), 4),  # mean over the run's steps
        # The last logged loss (every 10 steps, and the first) and its step.
        "final_loss": round(float(logged[-1][1]), 4) if logged else None,
        "final_loss_step": logged[-1][0] if logged else None,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        adapter_config = tmp / "adapter_config.json"
        if adapter_config.is_file() and settings.default_base:
            # The converted folder's path is machine-specific; the sentinel loads anywhere.
            config_json = json.loads(adapter_config.read_text())
            config_json["base_model_name_or_path"] = BASE_MODEL_SENTINEL
            adapter_config.write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the output is as readable as its parent
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(settings.work_dir, ignore_errors=True)
    return meta


# --------------------------------------------------------------------------- CLI


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _sft(args: argparse.Namespace) -> int:
    from memory_store import load_dataset

    settings = SFTSettings(
        data=str(args.data),
        model=args.model,
        out=str(args.out) if args.out else None,
        max_steps=args.max_steps,
        epochs=args.epochs,
        limit=args.limit,
        lora=args.lora,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        home=str(args.home) if args.home else None,
        resume=args.resume,
        max_length=args.max_length,
        save_steps=args.save_steps,
        max_minutes=args.max_minutes,
    )
    dataset = load_dataset(args.data)
    meta = run_sft(settings, dataset)
    print(
        f"wrote {settings.out_dir}: {meta['data']['pairs']} pairs, {meta['steps']} steps, "
        f"train loss {meta['train_loss']}, last loss {meta['final_loss']}, {meta['wall_s']} s"
    )
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``queryagent-train sft`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "sft", help="SFT cold start of the drafter on the training split's ground-truth queries"
    )
    p.add_argument("--data", type=Path, required=True, help="data set folder")
    p.add_argument(
        "--model", default=None, help="base model: HF id or folder (default: bundled SmolLM2)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <home>/checkpoints/sft)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides epochs)")
    p.add_argument("--epochs", type=_float, default=1.0, help="passes over the pairs")
    p.add_argument("--limit", type=int, default=None, help="train on this many (shuffled) pairs")
    method = p.add_mutually_exclusive_group()
    method.add_argument(
        "--lora",
        dest="lora",
        action="store_true",
        default=True,
        help=f"train a LoRA adapter (r {LORA_R}, alpha {LORA_ALPHA}; default)",
    )
    method.add_argument("--full", dest="lora", action="store_false", help="full fine-tuning")
    p.add_argument(
        "--lr",
        type=_float,
        default=None,
        help=f"learning rate (default {DEFAULT_LR_LORA} LoRA, {DEFAULT_LR_FULL} full)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", type=Path, default=None, help="QueryAgent home (converted models)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.work/ checkpoints")
    p.add_argument("--max-length", type=int, default=1024, help="longest tokenized pair")
    p.add_argument("--save-steps", type=int, default=200, help="checkpoint every N steps")
    p.add_argument(
        "--max-minutes",
        type=_float,
        default=None,
        help="stop training after this many minutes (the adapter is still saved)",
    )
    p.set_defaults(func=_sft)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.sft ...``: the same command without the other subcommands' imports
    (the evaluation's Chroma and metrics stack), e.g. on a GPU machine with a lean environment."""
    from memory_store import DataError

    parser = argparse.ArgumentParser(prog="python -m training.sft")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sft", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except (SFTError, DataError) as exc:
        print(f"sft: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
