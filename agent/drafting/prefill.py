"""The prompts' keys and values before constrained decoding (``agent.drafting.constrained``).

A batch of chat prompts is tokenized and left-padded; every prompt but its last token runs once
here, and ``generate`` then runs the last token and the decoding steps over the cache this
returns. Prompts that extend rows kept before (``RowPrefixes``: a refinement extends its draft
prompt; a batch's prompts share the system message) run only the tokens after the kept part, and
every row is kept for the prompts that will extend it.

Layouts follow what ``generate`` gives a left-padded batch: positions are counted over the mask,
and a cache built from kept rows has each row right-aligned with zeros in the padding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.drafting.hf import cache_argument
from agent.drafting.prefix_cache import RowPrefixes
from agent.drafting.protocol import Messages

__all__ = ["KV", "MIN_COMMON_PREFIX", "PromptBatch", "prefill", "prompt_batch", "prompt_ids"]

KV = list[tuple[Any, Any]]  # per layer: keys and values of one row, [heads, tokens, head_dim]

# The shortest shared start of a batch's prompts worth running once for all of them (the draft
# prompt's system message and the user turn's first words: 52 of about 245 tokens).
MIN_COMMON_PREFIX = 16


def prompt_ids(tokenizer: Any, messages: Messages) -> list[int]:
    """The token ids of ``messages`` as a chat prompt that asks for the assistant's turn."""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    # The chat template already holds any bos token; adding special tokens would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class PromptBatch:
    """Prompts as one left-padded batch: ``ids`` per prompt, ``input_ids`` and ``mask`` as
    ``[prompts, width]`` tensors on the model's device, ``pad`` the padding token."""

    ids: list[list[int]]
    input_ids: Any
    mask: Any
    width: int
    pad: int


def prompt_batch(
    model: Any, tokenizer: Any, prompts: Sequence[Messages], eos_id: int
) -> PromptBatch:
    """Tokenize and left-pad ``prompts`` (padding with the tokenizer's pad token, else eos)."""
    # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
    import torch

    ids = [prompt_ids(tokenizer, m) for m in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    width = max(len(i) for i in ids)
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=model.device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=model.device)
    return PromptBatch(ids, input_ids, mask, width, pad)


def prefill(model: Any, batch: PromptBatch, prefixes: RowPrefixes | None) -> Any:
    """The cache of every prompt of ``batch`` but its last token (one row per prompt).

    The prompts run once, not once per beam: ``generate`` expands the input ids and the mask
    itself but hands a cache over as it is, so it then runs only the last prompt token and the
    decoding steps. With ``prefixes``, rows that extend a kept prompt run only their new tokens,
    and every row is kept. Call under ``torch.inference_mode()``."""
    ids, pad, width = batch.ids, batch.pad, batch.width
    if prefixes is not None:
        _keep_common_prefix(model, ids, prefixes, pad)
    hits = [prefixes.find(i) if prefixes is not None else None for i in ids]
    rows: list[KV] | None
    if any(hits):
        # Rows that extend a kept prompt run only their new tokens; every row's keys and
        # values are then laid out as one left-padded batch.
        computed: dict[int, KV] = {}
        for group in (
            [b for b, h in enumerate(hits) if h],
            [b for b, h in enumerate(hits) if not h],
        ):
            if group:
                done = _row_prefill(model, [ids[b] for b in group], [hits[b] for b in group], pad)
                computed.update(zip(group, done, strict=True))
        ordered = [computed[b] for b in range(len(ids))]
        cache = _left_padded_cache(model, ordered, width - 1)
        rows = ordered
    else:
        mask = batch.mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=batch.input_ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,  # only the cache is needed (all positions' logits: GBs at 100)
        )
        cache = getattr(out, cache_argument())
        rows = _cache_rows(cache, mask[:, :-1]) if prefixes is not None else None
    if prefixes is not None and rows is not None:
        for prompt, kv in zip(ids, rows, strict=True):
            prefixes.keep(prompt[:-1], kv)
    return cache


def _cache_rows(cache: Any, mask: Any) -> list[KV] | None:
    """Each row's keys/values at its real columns (no padding); None for a cache that cannot be
    cut into rows by column (a sliding window)."""
    layers = getattr(cache, "layers", None)
    if not layers or any(getattr(layer, "is_sliding", False) for layer in layers):
        return None
    rows = []
    for b in range(mask.shape[0]):
        cols = mask[b].nonzero().squeeze(-1)
        # Indexing with a tensor copies: the rows do not hold on to the batch's cache.
        rows.append([(layer.keys[b][:, cols], layer.values[b][:, cols]) for layer in layers])
    return rows


def _row_prefill(model: Any, ids: Sequence[list[int]], hits: Sequence[Any], pad: int) -> list[KV]:
    """Keys/values of each prompt but its last token, for rows that all extend a kept prompt
    (``hits[b]``: its length and keys/values) or none does. A row with a kept prefix runs only
    the tokens after it. Rows are laid out as
    [padding][kept prefix][padding][new tokens]: the mask hides the padding and the positions
    (counted over the mask, as ``generate`` counts them) skip it."""
    # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
    import torch

    if any(hits) and not all(hits):
        raise ValueError("_row_prefill takes rows that all extend a kept prompt, or none")
    kept = [h[0] if h else 0 for h in hits]
    head = max(kept)
    todo = [len(i) - 1 - k for i, k in zip(ids, kept, strict=True)]
    tail = max(todo)
    rows, masks = [], []
    for i, k, r in zip(ids, kept, todo, strict=True):
        rows.append([pad] * (head - k) + i[:k] + [pad] * (tail - r) + i[k:-1])
        masks.append([0] * (head - k) + [1] * k + [0] * (tail - r) + [1] * r)
    input_ids = torch.tensor(rows, device=model.device)
    mask = torch.tensor(masks, device=model.device)
    past = _left_padded_cache(model, [h[1] for h in hits], head) if head else None
    if tail == 0:
        cache = past
    else:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=input_ids[:, head:],
            attention_mask=mask,
            position_ids=positions[:, head:],
            use_cache=True,
            logits_to_keep=1,
            **({cache_argument(): past} if past is not None else {}),
        )
        cache = getattr(out, cache_argument())
    found = _cache_rows(cache, mask)
    assert found is not None  # kept rows came from a cache that could be cut the same way
    return found


def _keep_common_prefix(
    model: Any, ids: Sequence[list[int]], prefixes: RowPrefixes, pad: int
) -> None:
    """Keep the keys/values of the tokens every prompt of the batch starts with (computed once,
    one row), so each row's prefill runs only what follows them; later batches find it kept."""
    common = list(os.path.commonprefix([list(i[:-1]) for i in ids]))
    if len(ids) < 2 or len(common) < MIN_COMMON_PREFIX:
        return
    if common in prefixes:
        return
    hit = prefixes.find(common + [pad])  # a shorter kept start it extends
    [layers] = _row_prefill(model, [common + [pad]], [hit], pad)
    prefixes.keep(common, layers)


def _left_padded_cache(model: Any, rows: Sequence[KV], width: int) -> Any:
    """One cache of ``width`` columns with each row's keys/values right-aligned (zeros in the
    padding, which the mask hides): the layout ``generate`` expects of a left-padded batch."""
    # Local: transformers is a heavy optional import; ``agent.drafting`` loads without it.
    from transformers import DynamicCache

    layers = []
    for layer, (k0, v0) in enumerate(rows[0]):
        keys = k0.new_zeros((len(rows), k0.shape[0], width, k0.shape[2]))
        values = v0.new_zeros((len(rows), v0.shape[0], width, v0.shape[2]))
        for b, kv in enumerate(rows):
            length = kv[layer][0].shape[1]
            keys[b, :, width - length :] = kv[layer][0]
            values[b, :, width - length :] = kv[layer][1]
        layers.append((keys, values))
    return DynamicCache(layers, config=model.config)
