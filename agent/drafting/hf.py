"""``HFDrafter``: a causal LM from Hugging Face transformers as a ``QueryDrafter``.

Batched, left-padded generation that keeps the token ids as generated; single prompts reuse the
keys/values of prefixes seen before (``PrefixCache``). The model is named as every caller names
one (``agent.drafting.resolve``) and loads on the first ``generate``::

    from agent.drafting import HFDrafter
    drafter = HFDrafter()                     # the shipped adapter; nothing loads yet
    [g] = drafter.generate([[{"role": "user", "content": "A search query for running shoes"}]])
    g.text, g.prompt_token_ids, g.completion_token_ids
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.drafting.prefix_cache import PrefixCache
from agent.drafting.protocol import DrafterError, Messages
from agent.drafting.resolve import ResolvedModel, load_model, resolve_model
from agent.records import Generation

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["HFDrafter"]

logger = logging.getLogger(__name__)


def completion_eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a completion: the generation config's, else the tokenizer's eos."""
    eos = model.generation_config.to_dict().get("eos_token_id")
    if eos is None:
        eos = tokenizer.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}


def generate_kwargs(
    max_new_tokens: int, pad: int | None, eos_ids: set[int], temperature: float, top_p: float
) -> dict[str, Any]:
    """``model.generate``'s settings for one call: greedy at temperature 0, else sampled
    (``top_k`` 0: nucleus sampling alone)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad,
        "eos_token_id": sorted(eos_ids) or None,
    }
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def _stop_on_text(tokenizer: Any, stop: tuple[str, ...], prompt_len: int) -> Any:
    """A stopping criterion that ends each row once its decoded completion holds a stop string.

    Written here rather than using ``generate(stop_strings=..., tokenizer=...)``: transformers'
    ``StopStringCriteria`` (5.24) pre-computes every vocabulary token's string with a probe that
    prepends a fixed prefix and cuts it off again (``clean_tokenizer_vocab``), which raises
    "ValueError: substring not found" on word-level tokenizers such as the tests' tiny model
    (tests/helpers/tiny_models.py), whose decoder joins words with spaces. (It builds fine for
    SmolLM2's BPE tokenizer; the drafter takes any causal LM, so it keeps the criterion that
    works for both.) Decoding the few generated tokens per step costs nothing next to the model.
    """
    # Local: torch and transformers are heavy; ``agent.drafting`` loads without them.
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


DTYPE_ENV = "QUERYAGENT_DTYPE"
DTYPES = ("auto", "float32", "bfloat16")


def dtype_setting(dtype: str | None = None) -> str:
    """The dtype name asked for: ``dtype``, else ``$QUERYAGENT_DTYPE``, else ``auto``."""
    name = dtype or os.environ.get(DTYPE_ENV) or "auto"
    if name not in DTYPES:
        raise DrafterError(f"unknown dtype {name!r} (${DTYPE_ENV}): use one of {', '.join(DTYPES)}")
    return name


def inference_dtype(name: str, device: str) -> Any:
    """The torch dtype for ``name`` on ``device`` (see ``HFDrafter``'s ``dtype``)."""
    # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        # oneDNN runs bfloat16 matrix products natively on AVX512-BF16 / AMX CPUs; elsewhere
        # they are emulated and slower than float32. oneDNN's own flag is true on any AVX-512
        # CPU (emulated): on an AVX-512 Xeon without BF16 the writer took 2.1 s a prompt in
        # bfloat16 against 1.3 s in float32, and 2.0 against 0.42 in a batch of 32
        # (bench/writer_dtype.py), so the CPU's own bfloat16 units decide (torch.cpu's probes).
        units = [
            getattr(torch.cpu, f"_is_{u}_supported", None) for u in ("avx512_bf16", "amx_tile")
        ]
        if all(probe is None for probe in units):  # a torch without the probes: oneDNN's flag
            native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
        else:
            native = any(probe() for probe in units if probe is not None)
        native = native and getattr(torch.backends.mkldnn, "is_available", lambda: False)()
        return torch.bfloat16 if native else torch.float32
    return getattr(torch, name)


def inference_dtype_name(dtype: str | None = None, device: str | None = None) -> str:
    """The dtype an ``HFDrafter(dtype=dtype, device=device)`` would run in, by name."""
    # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return str(inference_dtype(dtype_setting(dtype), device)).removeprefix("torch.")


class HFDrafter:
    """A causal LM from Hugging Face transformers, loaded on the first ``generate``.

    Args:
        model: a model argument as ``resolve_model`` takes it (``None``: ``$QUERYAGENT_MODEL``,
            else the shipped adapter; a folder, an adapter folder, a Hugging Face id), or one
            already resolved. An adapter is merged into its base for generation.
        home: QueryAgent home (see ``memory_store.paths``).
        device: torch device; ``None`` picks CUDA when available, else CPU.
        batch_size: prompts per forward pass; bigger lists are generated in chunks.
        prefix_cache: reuse the attention keys/values of prompt prefixes seen before when one
            prompt is generated alone (see ``PrefixCache``); off for models that change
            between calls (``from_loaded``).
        dtype: the weights' dtype for inference: ``"float32"``, ``"bfloat16"``, or ``"auto"``
            (bfloat16 on a GPU and on a CPU with native bfloat16 arithmetic, where it about
            halves the time of a forward pass; float32 elsewhere). ``None`` reads
            ``$QUERYAGENT_DTYPE`` (default ``auto``).
    """

    def __init__(
        self,
        model: str | ResolvedModel | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int = 16,
        prefix_cache: bool = True,
        dtype: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dtype = dtype_setting(dtype)
        self.prefixes: PrefixCache | None = PrefixCache() if prefix_cache else None
        self.resolved = model if isinstance(model, ResolvedModel) else resolve_model(model, home)
        self._device = device
        self.batch_size = batch_size
        self.name = self.resolved.name
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        # One lock for loading and generating: generate() is not re-entrant on a shared model,
        # and torch.manual_seed is process-global.
        self._lock = threading.RLock()
        # Wrapped from memory (``from_loaded``): its weights are not those of any stored folder.
        self.from_memory = False

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, name: str = "loaded") -> HFDrafter:
        """Wrap a model already in memory (e.g. the policy a trainer is optimizing).

        The tokenizer is switched to left padding (batched generation needs it) and given a pad
        token if it has none; the model is used as it is, on its own device.
        """
        # A trainer changes the weights between calls: cached keys/values would go stale.
        drafter = cls(
            ResolvedModel(name),
            device=str(next(model.parameters()).device),
            prefix_cache=False,
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        drafter._model, drafter._tokenizer = model, tokenizer
        drafter.from_memory = True
        return drafter

    def __repr__(self) -> str:
        return f"HFDrafter({self.name!r}, loaded={self._model is not None})"

    # ----------------------------------------------------------------- loading

    @property
    def model_name_or_path(self) -> str:
        """The id or folder the weights load from (resolving the bundled base converts it)."""
        return self.resolved.source

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
            # Local: torch is a heavy optional import; nothing loads before the first call.
            import torch

            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            started = time.perf_counter()
            model, tokenizer = load_model(self.resolved, merge=True)
            # Batched generation appends to the right end of every row, so prompts are padded
            # on the left; models without a pad token pad with eos (masked out anyway).
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.to(device=device, dtype=inference_dtype(self.dtype, device))
            model.eval()
            logger.info(
                "loaded %s on %s in %.1f s", self.name, device, time.perf_counter() - started
            )
            self._tokenizer = tokenizer
            self._model = model

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
        # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
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
        eos_ids = completion_eos_ids(model, tokenizer)
        kwargs = generate_kwargs(
            max_new_tokens, tokenizer.pad_token_id, eos_ids, temperature, top_p
        )
        if stop:
            kwargs["stopping_criteria"] = _stop_on_text(
                tokenizer, stop, batch["input_ids"].shape[1]
            )
        if self.prefixes is not None and len(prompts) == 1:
            ids = batch["input_ids"][0].tolist()
            name = cache_argument()
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
def cache_argument() -> str:
    """``generate``'s name for a cache: ``cache`` in recent transformers (where the old name
    still works but warns), ``past_key_values`` before (e.g. a GPU image's older release)."""
    # Local: transformers is heavy; ``agent.drafting`` loads without it.
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    names = {f.name for f in dataclasses.fields(GenerateDecoderOnlyOutput)}
    return "cache" if "cache" in names else "past_key_values"
