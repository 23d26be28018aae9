"""Scoring given completions: their log-probability after one prompt, in one forward pass.

Candidates recalled from other sources (the memory, the transitions, the next-item model) are
scored by the language model as completions of the draft prompt (``GroundedDrafter.score``): the
prompt runs once, and its keys and values are repeated over the candidates, which then run
together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.drafting.hf import cache_argument
from agent.drafting.prefill import prompt_ids
from agent.drafting.protocol import Messages

__all__ = ["score_completions"]


def score_completions(
    model: Any, tokenizer: Any, messages: Messages, completions: Sequence[Sequence[int]]
) -> list[float]:
    """Sum of token log-probabilities of each completion after ``messages``' prompt."""
    # Local: torch is a heavy optional import; ``agent.drafting`` loads without it.
    import torch

    if not completions:
        return []
    prompt = prompt_ids(tokenizer, messages)
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
