"""Grounded drafting: beam search constrained to the catalog's query trie, and candidate scoring.

Two operations on a loaded causal LM (any Hugging Face model and its tokenizer):

* ``constrained_beams``: ``generate(num_beams=N, prefix_allowed_tokens_fn=trie)`` returns N
  distinct queries of the served catalog and their log-probabilities in one call (a batch of
  prompts is left-padded; every beam follows the trie, so every draft is a valid query).
* ``score_completions``: the log-probability of given completions (candidates recalled from other
  sources) after one prompt. The prompt runs once; its keys and values are repeated over the
  candidates, which run together in one forward pass.

``GroundedDrafter`` wraps an ``HFDrafter`` (its model, tokenizer and lock) with both, so the graph
holds one model for free generation, beams and scoring.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agent.drafting.hf import cache_argument
from agent.drafting.prefix_cache import RowPrefixes
from agent.drafting.trie import QueryTrie, tries_per_prompt

__all__ = [
    "Beam",
    "GroundedDrafter",
    "GroundedHFDrafter",
    "constrained_beams",
    "score_completions",
]

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Beam:
    """One constrained completion: the query, its log-probability and its token ids."""

    query: str
    logprob: float
    completion_token_ids: tuple[int, ...]
    prompt_token_ids: tuple[int, ...] = ()


@runtime_checkable
class GroundedDrafter(Protocol):
    """What grounded drafting needs from a model. Implementations must be thread-safe."""

    name: str

    def beams(
        self,
        prompts: Sequence[Messages],
        trie: QueryTrie | Sequence[QueryTrie],
        n: int,
        temperature: float = 0.0,
    ) -> list[list[Beam]]:
        """Up to ``n`` distinct trie queries per prompt, best first (beam search; sampled inside
        the trie when ``temperature > 0``); one trie for all prompts or one per prompt."""
        ...

    def score(
        self, prompts: Sequence[Messages], completions: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[float]]:
        """Log-probability of each completion (token ids) after its prompt."""
        ...

    def trie(self, queries: Sequence[str]) -> QueryTrie:
        """The query trie of ``queries`` for this drafter's tokenizer."""
        ...


def _prompt_ids(tokenizer: Any, messages: Messages) -> list[int]:
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    # The chat template already holds any bos token; adding special tokens would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def constrained_beams(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    trie: QueryTrie | Sequence[QueryTrie],
    n: int,
    temperature: float = 0.0,
    prefixes: RowPrefixes | None = None,
    share_prompt: bool = True,
) -> list[list[Beam]]:
    """Beam search over the trie: ``n`` beams per prompt, returned as distinct queries. With
    ``temperature > 0``, ``n`` samples drawn inside the trie instead (GRPO's group of valid
    queries); their log-probabilities are under the sampling distribution. ``trie`` is one trie
    for every prompt or one per prompt (views of one trie, e.g. ``QueryTrie.without``: they must
    share the end-of-turn token). With ``prefixes``, a prompt that extends one run before
    (a refinement extends its draft) runs only its new tokens, and every prompt is kept there
    for the prompts that will extend it. ``share_prompt``: decode the ``n`` rows of a prompt over
    one copy of its keys and values (``agent.drafting.shared_prefix``)."""
    import torch

    from agent.drafting.shared_prefix import share_prompt_rows

    if not prompts:
        return []
    tries = tries_per_prompt(trie, len(prompts))
    if len(tries) != len(prompts) or len({t.eos_id for t in tries}) != 1:
        raise ValueError("constrained_beams needs one trie per prompt, all with one eos token")
    n = max(1, min(n, max(len(t) for t in tries)))
    eos_id = tries[0].eos_id
    ids = [_prompt_ids(tokenizer, m) for m in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    width = max(len(i) for i in ids)
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=model.device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=model.device)
    longest = max((len(s) for t in tries for s in t.sequences.values()), default=1)

    def allowed(batch_id: int, row: torch.Tensor) -> list[int]:
        return tries[batch_id].allowed(row[width:].tolist())

    # One draft without sampling is greedy search (generate returns no beam scores for it).
    greedy = temperature <= 0 and n == 1
    unset = {"temperature": None, "top_p": None, "top_k": None}
    if temperature > 0:
        decoding: dict[str, Any] = {"do_sample": True, "temperature": temperature, "top_k": 0}
    elif greedy:
        decoding = {"do_sample": False, **unset}
    else:
        decoding = {
            "num_beams": n,
            "length_penalty": 0.0,  # scores are plain sums of token log-probabilities
            "early_stopping": True,
            "do_sample": False,
            **unset,
        }
    with torch.inference_mode():
        # The prompts run once, not once per beam: their keys and values are computed here and
        # repeated over the ``n`` rows of each prompt (``generate`` expands the input ids and the
        # mask itself but hands a cache over as it is), so ``generate`` only runs the last
        # prompt token and the decoding steps. The positions are the ones ``generate`` gives a
        # left-padded batch.
        if prefixes is not None:
            _keep_common_prefix(model, ids, prefixes, pad)
        hits = [prefixes.find(i) if prefixes is not None else None for i in ids]
        if any(hits):
            # Rows that extend a kept prompt run only their new tokens; every row's keys and
            # values are then laid out as one left-padded batch.
            computed: dict[int, KV] = {}
            for group in (
                [b for b, h in enumerate(hits) if h],
                [b for b, h in enumerate(hits) if not h],
            ):
                if group:
                    done = _row_prefill(
                        model, [ids[b] for b in group], [hits[b] for b in group], pad
                    )
                    computed.update(zip(group, done, strict=True))
            ordered = [computed[b] for b in range(len(ids))]
            cache = _left_padded_cache(model, ordered, width - 1)
            rows: list[KV] | None = ordered
        else:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            prefill = model(
                input_ids=input_ids[:, :-1],
                attention_mask=mask[:, :-1],
                position_ids=positions[:, :-1],
                use_cache=True,
                logits_to_keep=1,  # only the cache is needed (all positions' logits: GBs at 100)
            )
            cache = getattr(prefill, cache_argument())
            rows = _cache_rows(cache, mask[:, :-1]) if prefixes is not None else None
        if prefixes is not None and rows is not None:
            for prompt, kv in zip(ids, rows, strict=True):
                prefixes.keep(prompt[:-1], kv)
        # Beams (or samples) of one prompt attend to one copy of its keys and values
        # (``shared_prefix``); where that does not apply, the rows are repeated per beam.
        if not (share_prompt and not greedy and share_prompt_rows(model, cache, n) is not None):
            cache.batch_repeat_interleave(n)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            **{cache_argument(): cache},
            num_return_sequences=n,
            max_new_tokens=longest,
            prefix_allowed_tokens_fn=allowed,
            output_scores=True,
            output_logits=greedy,
            return_dict_in_generate=True,
            pad_token_id=pad,
            eos_token_id=eos_id,
            **decoding,
        )
        if temperature > 0 or greedy:
            # Sampled: the log-probability under the distribution sampled from (the scores the
            # processors left: temperature, the trie). Greedy: under the model's own softmax
            # (its raw logits), the scale beam search's scores are on.
            steps = model.compute_transition_scores(
                out.sequences, out.logits if greedy else out.scores, normalize_logits=True
            )
            finite = torch.where(torch.isfinite(steps), steps, torch.zeros_like(steps))
            sample_scores = finite.sum(dim=1)
    results: list[list[Beam]] = []
    for b, prompt in enumerate(ids):
        seen: dict[str, Beam] = {}
        for j in range(n):
            row = out.sequences[b * n + j, width:].tolist()
            if eos_id in row:
                row = row[: row.index(eos_id) + 1]
            query = tries[b].query(row)
            if query is None or query in seen:
                continue  # an unfinished beam (max length) or a duplicate
            score = float(
                sample_scores[b * n + j]
                if temperature > 0 or greedy
                else out.sequences_scores[b * n + j]
            )
            seen[query] = Beam(query, score, tuple(row), tuple(prompt))
        results.append(sorted(seen.values(), key=lambda beam: -beam.logprob))
    return results


KV = list[tuple[Any, Any]]  # per layer: keys and values of one row, [heads, tokens, head_dim]


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


# The shortest shared start of a batch's prompts worth running once for all of them (the draft
# prompt's system message and the user turn's first words: 52 of about 245 tokens).
MIN_COMMON_PREFIX = 16


def _keep_common_prefix(
    model: Any, ids: Sequence[list[int]], prefixes: RowPrefixes, pad: int
) -> None:
    """Keep the keys/values of the tokens every prompt of the batch starts with (computed once,
    one row), so each row's prefill runs only what follows them; later batches find it kept."""
    import os

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


def score_completions(
    model: Any, tokenizer: Any, messages: Messages, completions: Sequence[Sequence[int]]
) -> list[float]:
    """Sum of token log-probabilities of each completion after ``messages``' prompt."""
    import torch

    if not completions:
        return []
    prompt = _prompt_ids(tokenizer, messages)
    with torch.inference_mode():
        out = model(
            input_ids=torch.tensor([prompt], device=model.device), use_cache=True, logits_to_keep=1
        )
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        scores = [float(first[c[0]]) for c in completions]
        rest = [list(c[1:]) for c in completions]
        longest = max(len(r) for r in rest)
        if longest == 0:
            return scores
        # Feed tokens 0..L-2 of each completion (right-padded) after the shared prompt cache;
        # the logits at step j predict token j+1.
        inputs = [list(c[:-1]) for c in completions]
        width = max(len(i) for i in inputs)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batch = torch.tensor([i + [pad] * (width - len(i)) for i in inputs], device=model.device)
        attn = torch.tensor(
            [[1] * len(prompt) + [1] * len(i) + [0] * (width - len(i)) for i in inputs],
            device=model.device,
        )
        cache = getattr(out, cache_argument())
        cache.batch_repeat_interleave(len(completions))
        logits = model(
            input_ids=batch, attention_mask=attn, use_cache=True, **{cache_argument(): cache}
        ).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for k, r in enumerate(rest):
            if r:
                idx = torch.tensor(r, device=model.device)
                scores[k] += float(logp[k, torch.arange(len(r), device=model.device), idx].sum())
    return scores


class GroundedHFDrafter:
    """Beams and scoring on an ``HFDrafter``'s model (loaded on first use, shared lock)."""

    def __init__(self, drafter: Any) -> None:
        self.drafter = drafter
        self.name = getattr(drafter, "name", "hf")
        # Rows' keys/values kept for the prompts that extend them (refinements), when the
        # wrapped drafter reuses prefixes at all (not for a model that changes between calls).
        self.prefixes = RowPrefixes() if getattr(drafter, "prefixes", None) is not None else None

    def __repr__(self) -> str:
        return f"GroundedHFDrafter({self.drafter!r})"

    @functools.cached_property
    def identity(self) -> str:
        """The model's content digest (``agent.model_identity``): what its learned weight in a
        catalog's check is kept under. Computed once per drafter: every check asks for it, and
        the digest stats the model's files. Empty for a model wrapped from memory (a policy in
        training): no stored weights to name, so no weight is learned or looked up for it."""
        from agent.model_identity import model_digest

        if getattr(self.drafter, "from_memory", False):
            return ""
        resolved = self.drafter.resolved
        return model_digest(resolved.name, resolved.home)

    def generate(self, prompts: Sequence[Messages], **kwargs: Any) -> Any:
        """Free generation (``Context(grounded=False)``): the wrapped drafter's."""
        return self.drafter.generate(prompts, **kwargs)

    def beams(
        self,
        prompts: Sequence[Messages],
        trie: QueryTrie | Sequence[QueryTrie],
        n: int,
        temperature: float = 0.0,
    ) -> list[list[Beam]]:
        model, tokenizer = self.drafter.model, self.drafter.tokenizer
        with self.drafter._lock:
            return constrained_beams(
                model, tokenizer, prompts, trie, n, temperature, prefixes=self.prefixes
            )

    def score(
        self, prompts: Sequence[Messages], completions: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[float]]:
        model, tokenizer = self.drafter.model, self.drafter.tokenizer
        with self.drafter._lock:
            return [
                score_completions(model, tokenizer, m, c)
                for m, c in zip(prompts, completions, strict=True)
            ]

    def trie(self, queries: Sequence[str]) -> QueryTrie:
        """The trie of ``queries`` for this drafter's tokenizer (cached per vocabulary)."""
        key = hash(tuple(queries))
        cached = getattr(self, "_trie", None)
        if cached is None or cached[0] != key:
            self._trie = (key, QueryTrie.build(self.drafter.tokenizer, queries))
        return self._trie[1]
