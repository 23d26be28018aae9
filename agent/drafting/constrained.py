"""Grounded drafting: beam search constrained to the catalog's query trie, and candidate scoring.

Two operations on a loaded causal LM (any Hugging Face model and its tokenizer):

* ``constrained_beams``: ``generate(num_beams=N, prefix_allowed_tokens_fn=trie)`` returns N
  distinct queries of the served catalog and their log-probabilities in one call (a batch of
  prompts is left-padded; every beam follows the trie, so every draft is a valid query).
* ``score_completions`` (``agent.drafting.scoring``): the log-probability of given completions
  (candidates recalled from other sources) after one prompt.

``GroundedHFDrafter`` wraps an ``HFDrafter`` (its model, tokenizer and lock) with both, so the graph
holds one model for free generation, beams and scoring.

``constrained_beams`` does its jobs in turn, one function each: check the tries
(``_one_eos``), tokenize and pad the prompts (``agent.drafting.prefill.prompt_batch``), choose
the decoding (``_decoding``), run the prompts once (``agent.drafting.prefill.prefill``), lay the
cache out for the ``n`` rows of each prompt (``_expand``), decode (``_generate``) and read the
distinct queries back (``_collect``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from agent.drafting.batched_generate import prefilled_generate
from agent.drafting.hf import cache_argument
from agent.drafting.prefill import PromptBatch, prefill, prompt_batch
from agent.drafting.prefix_cache import RowPrefixes
from agent.drafting.protocol import Beam, GroundedDrafter, Messages
from agent.drafting.scoring import score_completions
from agent.drafting.trie import QueryTrie, tries_per_prompt
from agent.model_identity import model_digest
from agent.records import Generation

__all__ = [
    "Beam",
    "GroundedDrafter",
    "GroundedHFDrafter",
    "constrained_beams",
    "score_completions",
]


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
    # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
    import torch

    if not prompts:
        return []
    tries = tries_per_prompt(trie, len(prompts))
    eos_id = _one_eos(tries, len(prompts))
    n = max(1, min(n, max(len(t) for t in tries)))
    batch = prompt_batch(model, tokenizer, prompts, eos_id)
    decoding = _decoding(temperature, n)
    with torch.inference_mode():
        cache = prefill(model, batch, prefixes)
        _expand(model, cache, n, share_prompt and not _greedy(temperature, n))
        sequences, scores = _generate(model, batch, tries, cache, n, eos_id, temperature, decoding)
    return _collect(sequences, scores, batch, tries, n, eos_id)


def _one_eos(tries: Sequence[QueryTrie], prompts: int) -> int:
    """The end-of-turn token every trie shares (one trie per prompt)."""
    if len(tries) != prompts or len({t.eos_id for t in tries}) != 1:
        raise ValueError("constrained_beams needs one trie per prompt, all with one eos token")
    return tries[0].eos_id


def _greedy(temperature: float, n: int) -> bool:
    """One draft without sampling is greedy search (generate returns no beam scores for it)."""
    return temperature <= 0 and n == 1


def _decoding(temperature: float, n: int) -> dict[str, Any]:
    """``generate``'s decoding arguments: sampling, greedy search or beam search."""
    unset = {"temperature": None, "top_p": None, "top_k": None}
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_k": 0}
    if _greedy(temperature, n):
        return {"do_sample": False, **unset}
    return {
        "num_beams": n,
        "length_penalty": 0.0,  # scores are plain sums of token log-probabilities
        "early_stopping": True,
        "do_sample": False,
        **unset,
    }


def _expand(model: Any, cache: Any, n: int, share: bool) -> None:
    """Lay the prompt cache (one row per prompt) out for ``n`` decoded rows per prompt: over one
    copy of each prompt's keys and values (``shared_prefix``) when ``share`` and the model
    allows it, else the rows repeated per beam."""
    # Local: shared_prefix imports torch and transformers at its top (heavy, optional).
    from agent.drafting.shared_prefix import share_prompt_rows

    if not (share and share_prompt_rows(model, cache, n) is not None):
        cache.batch_repeat_interleave(n)


def _generate(
    model: Any,
    batch: PromptBatch,
    tries: Sequence[QueryTrie],
    cache: Any,
    n: int,
    eos_id: int,
    temperature: float,
    decoding: dict[str, Any],
) -> tuple[Any, Any]:
    """Decode inside the tries: the ``n`` sequences of each prompt (prompt columns included) and
    each one's log-probability (a tensor, one per sequence)."""
    # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
    import torch

    width = batch.width
    greedy = _greedy(temperature, n)
    longest = max((len(s) for t in tries for s in t.sequences.values()), default=1)

    def allowed(batch_id: int, row: torch.Tensor) -> list[int]:
        return tries[batch_id].allowed(row[width:].tolist())

    out = model.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.mask,
        **{cache_argument(): cache},
        num_return_sequences=n,
        max_new_tokens=longest,
        prefix_allowed_tokens_fn=allowed,
        output_scores=True,
        output_logits=greedy,
        return_dict_in_generate=True,
        pad_token_id=batch.pad,
        eos_token_id=eos_id,
        **decoding,
    )
    if not (temperature > 0 or greedy):
        return out.sequences, out.sequences_scores
    # Sampled: the log-probability under the distribution sampled from (the scores the
    # processors left: temperature, the trie). Greedy: under the model's own softmax (its raw
    # logits), the scale beam search's scores are on.
    steps = model.compute_transition_scores(
        out.sequences, out.logits if greedy else out.scores, normalize_logits=True
    )
    finite = torch.where(torch.isfinite(steps), steps, torch.zeros_like(steps))
    return out.sequences, finite.sum(dim=1)


def _collect(
    sequences: Any,
    scores: Any,
    batch: PromptBatch,
    tries: Sequence[QueryTrie],
    n: int,
    eos_id: int,
) -> list[list[Beam]]:
    """Each prompt's distinct finished queries, best first."""
    results: list[list[Beam]] = []
    for b, prompt in enumerate(batch.ids):
        seen: dict[str, Beam] = {}
        for j in range(n):
            row = sequences[b * n + j, batch.width :].tolist()
            if eos_id in row:
                row = row[: row.index(eos_id) + 1]
            query = tries[b].query(row)
            if query is None or query in seen:
                continue  # an unfinished beam (max length) or a duplicate
            seen[query] = Beam(query, float(scores[b * n + j]), tuple(row), tuple(prompt))
        results.append(sorted(seen.values(), key=lambda beam: -beam.logprob))
    return results


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
        if getattr(self.drafter, "from_memory", False):
            return ""
        resolved = self.drafter.resolved
        return model_digest(resolved.name, resolved.home)

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
        """Free generation (the query text; ``Context(grounded=False)``): one prompt is the
        wrapped drafter's (its ``PrefixCache``); a batch (the micro-batcher's) is prefilled over
        the rows kept here (``agent.drafting.batched_generate``), in the wrapped drafter's
        chunks."""
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        if len(prompts) < 2 or self.prefixes is None:
            return self.drafter.generate(prompts, seed=seed, stop=stop, **options)  # type: ignore[no-any-return]
        if max_new_tokens < 1 or temperature < 0:
            raise ValueError(f"need max_new_tokens >= 1 and temperature >= 0, got {options}")
        # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
        import torch

        model, tokenizer = self.drafter.model, self.drafter.tokenizer
        size = getattr(self.drafter, "batch_size", len(prompts))
        with self.drafter._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out: list[Generation] = []
            for start in range(0, len(prompts), size):
                out += prefilled_generate(
                    model,
                    tokenizer,
                    prompts[start : start + size],
                    self.prefixes,
                    stop=tuple(stop),
                    **options,
                )
            return out

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
