"""Decoding ``n`` rows per prompt over one copy of the prompt's keys and values.

Beam search (and GRPO's ``n`` samples) decodes ``n`` rows per prompt. Transformers' caches hold
one row of keys/values per decoded row, so the prompt's (hundreds of tokens, the same for the
``n`` rows) is copied ``n`` times, and every decoding step reads all copies in attention and
copies them again when the cache grows by a token (``torch.cat``). Measured on the 2-core CPU
(64 rows = 16 prompts x 4 beams, 520 tokens of context, bfloat16): a step's attention and cache
copy were three quarters of its time.

Here the prompt's keys and values stay one row per prompt (``SharedPrefixLayer.prefix_*``, kept
in float32 for the scores) and only the generated tokens' are per decoded row; attention
(``shared_prefix_attention``) scores each row's query against its prompt's one copy and its own
generated tokens, and takes one softmax over both. The result is the same attention (float32
sums in another order: equal beams in float32, see the tests). Beam search's reordering only
ever moves a row among the ``n`` rows of its own prompt, so the prompt part never moves.

``share_prompt_rows(model, cache, n)`` turns a prompt cache (one row per prompt) into such a
cache, or returns ``None`` when the model does not use PyTorch's SDPA attention (the only one
this replaces; the caller then repeats the rows as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

__all__ = ["ATTENTION", "SharedKV", "SharedPrefixLayer", "share_prompt_rows"]

ATTENTION = "sdpa_shared_prefix"


@dataclass
class SharedKV:
    """One layer's keys (or values): ``prefix`` [prompts, kv heads, P, d] (float32) shared by
    ``n`` consecutive rows, and ``suffix`` [prompts x n, kv heads, S, d] per row."""

    prefix: torch.Tensor
    suffix: torch.Tensor
    n: int


class SharedPrefixLayer(DynamicLayer):
    """A cache layer whose prompt part is one row per prompt (see the module doc)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, n: int) -> None:
        super().__init__()
        self.prefix_keys = keys.float()
        self.prefix_values = values.float()
        self.n = n
        self.prefix_length = keys.shape[-2]
        self.device = keys.device
        rows, heads, _, dim = keys.shape
        self.keys = keys.new_zeros((rows * n, heads, 0, dim))
        self.values = values.new_zeros((rows * n, heads, 0, dim))
        self.is_initialized = True

    def _own(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' own (generated) keys and values."""
        assert self.keys is not None and self.values is not None  # set in __init__
        return self.keys, self.values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        keys, values = self._own()
        self.keys = torch.cat([keys, key_states], dim=-2)
        self.values = torch.cat([values, value_states], dim=-2)
        return (
            SharedKV(self.prefix_keys, self.keys, self.n),
            SharedKV(self.prefix_values, self.values, self.n),
        )

    def get_seq_length(self) -> int:
        return self.prefix_length + self._own()[0].shape[-2]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        rows = torch.arange(beam_idx.numel(), device=beam_idx.device)
        if not bool(torch.equal(beam_idx // self.n, rows // self.n)):
            raise RuntimeError("a beam moved to another prompt's rows: the prompt cache is shared")
        keys, values = self._own()
        self.keys = keys.index_select(0, beam_idx.to(keys.device))
        self.values = values.index_select(0, beam_idx.to(values.device))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a shared-prefix cache cannot be cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a shared-prefix cache already spans its rows")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("a shared-prefix cache cannot drop rows")


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: Any,
    value: Any,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention; for ``SharedKV`` keys/values, one softmax over the shared prompt part and
    each row's own part. Returns ``[batch, q, heads, d]`` as ``sdpa_attention_forward`` does."""
    if not isinstance(key, SharedKV):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    rows, heads, q_len, dim = query.shape
    prompts, kv_heads, p_len, _ = key.prefix.shape
    n, rep = key.n, heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    q = query.float()
    # The prompt part: each prompt's n rows x rep query heads against one copy of its keys.
    grouped = (
        q.view(prompts, n, kv_heads, rep, q_len, dim)
        .permute(0, 2, 1, 3, 4, 5)
        .reshape(prompts, kv_heads, n * rep * q_len, dim)
    )
    scores_p = torch.matmul(grouped, key.prefix.transpose(-1, -2)) * scale
    scores_p = (
        scores_p.view(prompts, kv_heads, n, rep, q_len, p_len)
        .permute(0, 2, 1, 3, 4, 5)
        .reshape(rows, heads, q_len, p_len)
    )
    # Each row's generated part.
    own_k = repeat_kv(key.suffix, rep).float()
    scores_s = torch.matmul(q, own_k.transpose(-1, -2)) * scale
    scores = torch.cat([scores_p, scores_s], dim=-1)
    if attention_mask is not None:
        mask = attention_mask[..., : scores.shape[-1]]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1)
    probs_p = (
        probs[..., :p_len]
        .reshape(prompts, n, kv_heads, rep, q_len, p_len)
        .permute(0, 2, 1, 3, 4, 5)
        .reshape(prompts, kv_heads, n * rep * q_len, p_len)
    )
    out_p = (
        torch.matmul(probs_p, value.prefix)
        .view(prompts, kv_heads, n, rep, q_len, dim)
        .permute(0, 2, 1, 3, 4, 5)
        .reshape(rows, heads, q_len, dim)
    )
    out_s = torch.matmul(probs[..., p_len:], repeat_kv(value.suffix, rep).float())
    out = (out_p + out_s).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, shared_prefix_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def share_prompt_rows(model: Any, cache: Any, n: int) -> Any | None:
    """``cache`` (a ``DynamicCache`` of one row per prompt) made to serve ``n`` decoded rows per
    prompt without copies; ``None`` where this does not apply (attention other than SDPA, a
    sliding-window layer, ``n`` = 1). Switches the model to ``ATTENTION`` (SDPA for every call
    that does not pass shared keys/values)."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    layers = getattr(cache, "layers", None)
    if n < 2 or impl not in ("sdpa", ATTENTION) or not layers:
        return None
    if any(type(layer) is not DynamicLayer for layer in layers):
        return None
    if impl != ATTENTION:
        try:
            model.set_attn_implementation(ATTENTION)
        except (AttributeError, ValueError):  # a wrapper without it, or a refusal
            return None
    cache.layers = [SharedPrefixLayer(layer.keys, layer.values, n) for layer in layers]
    return cache
