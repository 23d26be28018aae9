"""What the trainers (``training.sft``, ``training.grpo``) share: the command line in TRL's
conventions, the starting model, the output folder and its sidecar and model card.

Command line: each trainer's settings are two dataclasses, its own script arguments and a
subclass of TRL's ``SFTConfig``/``GRPOConfig`` carrying the project's defaults, parsed together by
``trl.TrlParser``. So ``--config recipe.yaml`` (the shipped recipes are in ``recipes/``) and every
field of TRL's config work as flags (``--gradient_accumulation_steps 4``, ``--report_to
tensorboard``), ``--help`` shows each with its default, and a flag overrides the recipe.

Output: ``<out>`` (the adapter or full model, the tokenizer, ``queryagent.meta.json`` and a model
card, ``README.md``, written with ``huggingface_hub.ModelCard``) is written under a temporary
name and swapped into place; trainer checkpoints go to ``output_dir`` (default ``<out>.work``),
which a finished run deletes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from agent.drafting import DrafterError, ResolvedModel, load_model, resolve_model
from memory_store.files import atomic_folder, atomic_write
from memory_store.paths import queryagent_home

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "META_FILE",
    "TrainingError",
    "check_out",
    "check_training_args",
    "load_start_model",
    "model_card",
    "update_card_evaluation",
    "parse_command_line",
    "prepare_output",
    "resume_checkpoint",
    "save_output",
    "versions",
    "work_dir",
]

logger = logging.getLogger(__name__)

META_FILE = "queryagent.meta.json"
# TrainingArguments' own default for output_dir; left there, checkpoints go to <out>.work.
DEFAULT_OUTPUT_DIR = "trainer_output"
LICENSE = "apache-2.0"  # SmolLM2-135M-Instruct's licence, which an adapter on it inherits


class TrainingError(Exception):
    """A user-caused problem with a training run (one line for the CLI)."""


# --------------------------------------------------------------------------- command line


def parse_command_line(
    dataclass_types: Sequence[Any], argv: Sequence[str] | None, prog: str
) -> tuple[Any, ...]:
    """Parse ``argv`` (and a ``--config`` YAML file) into the dataclasses, TRL's way.

    Raises:
        TrainingError: a value a dataclass refuses (its ``__post_init__``), or an unknown key in
            the YAML file.
    """
    from trl import TrlParser  # trl is heavy (torch, transformers): loaded to parse a trainer

    parser = TrlParser(list(dataclass_types), prog=prog)
    try:
        return tuple(parser.parse_args_and_config(list(argv) if argv is not None else None))
    except TrainingError:
        raise
    except (ValueError, OSError) as err:  # TrainingArguments' checks, a missing --config file
        text = str(err).strip()
        raise TrainingError(text.splitlines()[0] if text else type(err).__name__) from None


def check_training_args(args: Any) -> None:
    """The checks TRL's configs leave to the trainer (where they fail with a traceback).

    Raises:
        TrainingError: naming the flag, what is wrong and the value given.
    """
    if args.max_steps != -1 and args.max_steps < 1:
        raise TrainingError(f"--max_steps must be >= 1 (or -1: epochs), got {args.max_steps}")
    if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)):
        raise TrainingError(f"--learning_rate must be a positive number, got {args.learning_rate}")
    if not (args.num_train_epochs > 0 and math.isfinite(args.num_train_epochs)):
        raise TrainingError(
            f"--num_train_epochs must be a positive number, got {args.num_train_epochs}"
        )
    if args.per_device_train_batch_size < 1:
        raise TrainingError(
            f"--per_device_train_batch_size must be >= 1, got {args.per_device_train_batch_size}"
        )
    if args.save_steps <= 0:
        raise TrainingError(f"--save_steps must be positive, got {args.save_steps}")


def bf16_default() -> bool:
    """bf16 mixed precision where it runs natively (CUDA with bf16), fp32 elsewhere."""
    import torch  # heavy: only a trainer asks

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def settings_dict(*objs: Any) -> dict[str, Any]:
    """The fields of the script arguments and those of TRL's config that differ from TRL's own
    defaults (what the sidecar records: the full config is ~200 fields)."""
    out: dict[str, Any] = {}
    for obj in objs:
        base = next((c for c in type(obj).__mro__[1:] if "__dataclass_fields__" in vars(c)), None)
        defaults = {f.name: f.default for f in fields(base)} if base is not None else {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.name in defaults and _jsonable(defaults[f.name]) == _jsonable(value):
                continue
            out[f.name] = _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


# --------------------------------------------------------------------------- folders


def default_out(out: str | None, home: str | None, kind: str) -> Path:
    """``out``, or ``<home>/checkpoints/<kind>``."""
    return Path(out) if out else queryagent_home(home) / "checkpoints" / kind


def work_dir(args: Any, out: Path) -> Path:
    """Where the trainer checkpoints: ``output_dir`` when given, else ``<out>.work``."""
    if args.output_dir and args.output_dir != DEFAULT_OUTPUT_DIR:
        return Path(args.output_dir)
    return out.with_name(out.name + ".work")


def check_out(out: Path) -> None:
    """Refuse an output that is a file or a folder this project did not write."""
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / META_FILE).is_file():
        raise TrainingError(f"--out {out} holds files this command did not write; pick another")


def prepare_output(
    config: Any, out: str | None, home: str | None, kind: str, resume: bool
) -> tuple[Path, Path, str | None]:
    """Check the settings and the output folder before any model work; point the trainer's
    checkpoints at the work folder.

    Returns:
        ``(out, work, checkpoint)``: the output folder, the checkpoint folder and the checkpoint
        to resume from (``None`` unless ``resume``).
    """
    check_training_args(config)
    out_dir = default_out(out, home, kind)
    check_out(out_dir)
    work = work_dir(config, out_dir)
    config.output_dir = str(work)
    return out_dir, work, resume_checkpoint(resume, work)


def resume_checkpoint(resume: bool, work: Path) -> str | None:
    """The last checkpoint in ``work`` when resuming (``None`` otherwise)."""
    if not resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint  # heavy: only a resumed run

    checkpoint = get_last_checkpoint(str(work)) if work.is_dir() else None
    if checkpoint is None:
        raise TrainingError(f"--resume: no checkpoint in {work} to resume from")
    return checkpoint


# --------------------------------------------------------------------------- model


def load_start_model(model: str | None, home: str | None) -> tuple[ResolvedModel, Any, Any]:
    """The model a trainer starts from (``agent.drafting.resolve_model``), fp32, and its
    tokenizer; an adapter stays a trainable ``PeftModel`` (training continues it)."""
    try:
        resolved = resolve_model(model, home)
        loaded, tokenizer = load_model(resolved, trainable=True)
    except DrafterError as err:
        raise TrainingError(str(err)) from None
    if tokenizer.chat_template is None:
        raise TrainingError(f"model {resolved.name!r} has no chat template; the prompt is a chat")
    return resolved, loaded, tokenizer


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a training run."""
    # The training libraries (heavy): loaded when a run's sidecar is written.
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


def model_card(
    *,
    resolved: ResolvedModel,
    adapter: bool,
    title: str,
    summary: str,
    data: str,
    command: str,
    tags: Sequence[str],
    evaluation: str | None = None,
) -> Any:
    """A ``huggingface_hub.ModelCard``: the standard YAML header (base model, library, licence,
    tags) and a body with the training data, the exact command and the evaluation."""
    data_card = ModelCardData(
        base_model=resolved.base_name,
        library_name="peft" if adapter else "transformers",
        license=LICENSE,
        pipeline_tag="text-generation",
        tags=["queryagent", "trl", *tags, *(["lora"] if adapter else [])],
    )
    evaluation = evaluation or (
        "Not evaluated yet. This command writes the table here:\n\n```bash\nqueryagent-train "
        "eval --data data/amazon-scientific --split test --limit 1000 --seed 0 --cards \\\n"
        "    --methods popular,last-category,llm-direct,agent --model <this folder>\n```"
    )
    body = (
        f"# {title}\n\n{summary}\n\n## Training data\n{data}\n\n"
        f"## Command\n```bash\n{command}\n```\n\n"
        f"`{META_FILE}` beside this card holds every setting, the versions and the losses.\n\n"
        f"## Evaluation\n{evaluation}\n"
    )
    return ModelCard(f"---\n{data_card.to_yaml()}\n---\n\n{body}")


def update_card_evaluation(folder: Path, evaluation: str) -> bool:
    """Replace the ``## Evaluation`` section of ``folder``'s model card (``README.md``, as
    ``model_card`` writes it) with ``evaluation``; the header and other sections stay.

    Returns:
        False (and writes nothing) when ``folder`` has no card with a YAML header.
    """
    path = folder / "README.md"
    if not path.is_file() or not path.read_text(encoding="utf-8").startswith("---"):
        return False
    card = ModelCard.load(path)
    head, found, rest = card.text.partition("\n## Evaluation\n")
    # The section runs to the next level-2 heading (or the end).
    _, next_heading, tail = rest.partition("\n## ") if found else ("", "", "")
    text = f"{head.rstrip()}\n\n## Evaluation\n{evaluation.strip()}\n"
    if next_heading:
        text += f"\n## {tail}"
    atomic_write(path, f"---\n{card.data.to_yaml()}\n---\n\n{text.lstrip()}")
    return True


def save_output(
    out: Path,
    *,
    trainer: Any,
    tokenizer: Any,
    resolved: ResolvedModel,
    meta: dict[str, Any],
    card: Any,
    work: Path | None = None,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Write the trained model, tokenizer, sidecar and card to ``out`` atomically.

    Logs a ``report_to`` integration wrote under the checkpoint folder ``work`` (TensorBoard's
    ``runs/``) are kept in ``out/runs``, since the checkpoint folder is deleted.

    An adapter's ``base_model_name_or_path`` is set to the base as the project names it (the
    hub id for the bundled base, whose local converted folder differs between machines), so it
    loads anywhere with plain PEFT.
    """
    with atomic_folder(out) as tmp:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        adapter_config = tmp / "adapter_config.json"
        if adapter_config.is_file():
            config = json.loads(adapter_config.read_text())
            config["base_model_name_or_path"] = resolved.base_name
            atomic_write(adapter_config, json.dumps(config, indent=2, sort_keys=True) + "\n")
        if work is not None and (work / "runs").is_dir():
            shutil.copytree(work / "runs", tmp / "runs")
        if extra is not None:
            extra(tmp)
        atomic_write(tmp / META_FILE, json.dumps(meta, indent=2) + "\n")
        card.save(tmp / "README.md")


def remove_work_dir(work: Path) -> None:
    """Delete a finished run's checkpoints."""
    shutil.rmtree(work, ignore_errors=True)


def command_line(prog: str, argv: Sequence[str] | None) -> str:
    """The command as typed (for the sidecar and the model card)."""
    return " ".join([prog, *(sys.argv[1:] if argv is None else argv)])
