"""Free generation of a batch of prompts over their shared prefixes (``GroundedHFDrafter``).

A left-padded batch (``HFDrafter.generate``) runs every prompt in full. On a CPU the prompt's
prefill is most of a short completion's cost, and a batch's prompts share much of it: the query
text's prompts (``agent.prompts.write_messages``) share the system message and worked turns (277
of about 480 tokens on the bundled catalog), and a rewrite prompt extends its own write prompt.
One at a time, ``HFDrafter``'s ``PrefixCache`` already skips those tokens, so a plain batch ran
about twice the prefill of the same prompts one by one and lost to them (``graph.batch`` of 8
shoppers writing texts, 2 cores at load 0.8: 0.84x the throughput of one at a time). Here the
batch is prefilled as constrained beams are (``agent.drafting.prefill``: the shared start once,
rows that extend kept rows only over their new tokens, every row kept), and ``generate`` runs
the last prompt token and the decoding steps over that cache. Only the decoding steps get
cheaper per prompt in a batch; each prompt's own tokens cost the same arithmetic in a batch as
alone (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.drafting.hf import (
    _completion_ids,
    _cut_at_stop,
    _stop_on_text,
    cache_argument,
    completion_eos_ids,
    generate_kwargs,
)
from agent.drafting.prefill import prefill, prompt_batch
from agent.drafting.prefix_cache import RowPrefixes
from agent.drafting.protocol import Messages
from agent.records import Generation

__all__ = ["prefilled_generate"]


def prefilled_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    prefixes: RowPrefixes | None,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop: tuple[str, ...] = (),
) -> list[Generation]:
    """One ``Generation`` per prompt, as ``HFDrafter.generate`` returns them (same token ids,
    same eos and stop cuts), with the prompts prefilled over ``prefixes``. Call under the
    drafter's lock, in ``torch.inference_mode()``, seeded by the caller."""
    eos_ids = completion_eos_ids(model, tokenizer)
    batch = prompt_batch(model, tokenizer, prompts, min(eos_ids) if eos_ids else 0)
    cache = prefill(model, batch, prefixes)
    kwargs = generate_kwargs(max_new_tokens, batch.pad, eos_ids, temperature, top_p)
    if stop:
        kwargs["stopping_criteria"] = _stop_on_text(tokenizer, stop, batch.width)
    output = model.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.mask,
        **{cache_argument(): cache},
        **kwargs,
    )
    results: list[Generation] = []
    for i, prompt_ids in enumerate(batch.ids):
        completion_ids = _completion_ids(output[i, batch.width :].tolist(), eos_ids)
        if stop:
            completion_ids = _cut_at_stop(completion_ids, stop, tokenizer)
        text = str(tokenizer.decode(completion_ids, skip_special_tokens=True)).strip()
        results.append(
            Generation(text=text, prompt_token_ids=prompt_ids, completion_token_ids=completion_ids)
        )
    return results
