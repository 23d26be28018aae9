"""GRPO whose log-probabilities are those of the distribution the rollout sampled from.

The rollout samples each query token inside the catalog's query trie: the policy's softmax
renormalized over the tokens the trie allows at that point (``agent.drafting.constrained``).
TRL's ``GRPOTrainer`` scores completions under the unconstrained softmax, so its ratio and KL
see a different distribution from the one sampled: the gradient also pushes probability onto
tokens the trie never allows, and the KL term measures drift on them. On the 2-core CPU, masking
the forced tokens out of the loss cut the KL spikes (57,277 -> 1,699) but the per-token KL median
still grew (0.10 -> 0.6-0.9), which is that drift.

``ConstrainedGRPOTrainer`` overrides TRL 1.16's ``_get_per_token_logps_and_entropies`` (the one
place the policy, the old policy and the reference are scored): for every completion the rollout
wrote inside a trie, the logits at each model token are restricted to the tokens allowed there
before the log-softmax; everything else is TRL's. The override computes the logits of the
completion positions (TRL's fused LM head gives log-probabilities only), so a batch costs
``batch x completion length x vocabulary`` floats: small for single-turn queries, about 0.6 GB
for 8 multi-turn completions of 400 tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from trl import GRPOTrainer

__all__ = ["ConstrainedGRPOTrainer", "restricted_logps"]

AllowedTokens = Callable[[Sequence[int]], "list[list[int] | None] | None"]

# Disallowed logits are set to this, not -inf: the entropy's p * log p is then 0, not nan.
_FLOOR = -1e9


def restricted_logps(
    logits: Any,
    completion_ids: Any,
    completion_mask: Any,
    allowed_tokens: AllowedTokens,
    temperature: float = 1.0,
    compute_entropy: bool = False,
) -> tuple[Any, Any]:
    """Per-token log-probabilities (and entropies) of ``completion_ids`` under ``logits``
    (``[batch, length, vocabulary]``, position j predicting token j), divided by
    ``temperature``, where each row's ``allowed_tokens`` (called on the row's unpadded
    completion) restricts the softmax at its positions; positions it leaves ``None`` and rows it
    knows nothing about keep the full softmax."""
    # torch and trl's helpers are heavy: loaded at the first training step.
    import torch
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    logits = logits.float() / temperature
    restriction = torch.zeros_like(logits)
    for i in range(logits.size(0)):
        length = int(completion_mask[i].sum())
        allowed = allowed_tokens(completion_ids[i, :length].tolist())
        for j, tokens in enumerate(allowed or []):
            if tokens is not None:
                restriction[i, j].fill_(_FLOOR)
                restriction[i, j, tokens] = 0.0
    logits = logits + restriction
    logps = selective_log_softmax(logits, completion_ids)
    entropies = entropy_from_logits(logits) if compute_entropy else None
    return logps, entropies


class ConstrainedGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
    """``GRPOTrainer`` that scores trie-sampled completions under the trie-restricted softmax.

    Args:
        allowed_tokens: for a completion (token ids, unpadded), the tokens allowed at each of its
            positions (``None`` where unrestricted), or ``None`` for a completion it did not
            write (``training.rollout.GraphRollout.allowed_tokens``). Without it, TRL's scoring.
    """

    def __init__(self, *args: Any, allowed_tokens: AllowedTokens | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.allowed_tokens = allowed_tokens

    def _get_per_token_logps_and_entropies(  # type: ignore[override]
        self,
        model: Any,
        input_ids: Any,
        attention_mask: Any,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **multimodal: Any,
    ) -> tuple[Any, Any, Any]:
        import torch  # heavy: loaded at the first training step

        if (
            self.allowed_tokens is None
            or compute_aux_loss
            or any(v is not None for v in multimodal.values())
        ):
            return super()._get_per_token_logps_and_entropies(  # type: ignore[no-any-return]
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **multimodal,
            )
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start : start + batch_size]
            mask = attention_mask[start : start + batch_size]
            with self.accelerator.autocast():
                # The model's own forward (TRL's patched one without ``fused_lm_head``): the
                # logits of the completion positions and the one before them.
                logits = model(
                    input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1
                ).logits[:, :-1]
            logps, entropies = restricted_logps(
                logits,
                ids[:, -logits_to_keep:],
                mask[:, -logits_to_keep:],
                self.allowed_tokens,
                self.temperature,
                compute_entropy,
            )
            all_logps.append(logps)
            if entropies is not None:
                all_entropies.append(entropies)
        return (
            torch.cat(all_logps, dim=0),
            torch.cat(all_entropies, dim=0) if compute_entropy else None,
            None,
        )
