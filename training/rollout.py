"""The graph as GRPO's rollout: each generation of a group is one full run of the agent graph,
rendered as one conversation for the policy-gradient loss.

    [draft prompt] [draft completion] [env: retrieved products + check feedback] [refinement] ...
     prompt_ids    '----------------------- completion_ids -------------------------------'
                   env_mask:  1 ... 1             0 ... 0                         1 ... 1

Model tokens are the ids recorded at generation time (never re-tokenized); the environment turns
between them (end of the assistant turn, the user's observation, the next assistant header) are
the chat template's rendering of the refine prompt minus what came before, tokenized, and masked
out of the loss (``env_mask`` 0), which TRL's ``GRPOTrainer`` reads from a ``rollout_func``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class RolloutError(RuntimeError):
    """A trajectory could not be rendered as one conversation."""


@dataclass
class RenderedRollout:
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]  # 1: a model token (trained on), 0: an environment token (masked)

    @property
    def turns(self) -> int:
        return 1 + sum(
            1 for a, b in zip(self.env_mask, self.env_mask[1:], strict=False) if a == 0 and b == 1
        )


def _render(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    return str(
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    )


def render_conversation(steps: Sequence[dict[str, Any]], tokenizer: Any) -> RenderedRollout:
    """Join a trajectory's steps (draft, then refinements) into one token sequence with its mask.

    Args:
        steps: attempts or trajectory steps in turn order, each with ``messages``, ``completion``,
            ``prompt_token_ids`` and ``completion_token_ids``.
        tokenizer: the policy's tokenizer (its chat template renders the environment turns).
    """
    if not steps:
        raise RolloutError("a trajectory needs at least one step")
    first = steps[0]
    prompt_ids = list(first["prompt_token_ids"])
    completion_ids = list(first["completion_token_ids"])
    env_mask = [1] * len(completion_ids)
    eos = tokenizer.eos_token or ""
    for prev, cur in zip(steps, steps[1:], strict=False):
        before = _render(tokenizer, prev["messages"])
        after = _render(tokenizer, cur["messages"])
        if not after.startswith(before):
            raise RolloutError(
                f"turn {cur.get('turn')}: its prompt does not extend the previous one"
            )
        rest = after[len(before) :]
        reply = prev["completion"]
        if not rest.startswith(reply):
            raise RolloutError(f"turn {cur.get('turn')}: the previous reply is not in its prompt")
        env_text = rest[len(reply) :]
        # A reply that ended with eos already holds the template's end-of-turn token.
        ended = (
            bool(prev["completion_token_ids"])
            and prev["completion_token_ids"][-1] == tokenizer.eos_token_id
        )
        if ended and eos and env_text.startswith(eos):
            env_text = env_text[len(eos) :]
        env_ids = list(tokenizer(env_text, add_special_tokens=False)["input_ids"])
        model_ids = list(cur["completion_token_ids"])
        completion_ids += env_ids + model_ids
        env_mask += [0] * len(env_ids) + [1] * len(model_ids)
    return RenderedRollout(prompt_ids, completion_ids, env_mask)


def prompt_key(prompt: Any) -> str:
    """A stable key for a dataset prompt (conversational or plain), to find its row again."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)
