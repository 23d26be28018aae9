"""Rendering a trajectory as one conversation: model tokens kept, environment tokens masked."""

from __future__ import annotations

import pytest

from tests.helpers.tiny_models import build_tiny_tokenizer
from training.rollout import RolloutError, conversation_path, render_conversation

SYSTEM = {"role": "system", "content": "you are a shopping assistant"}
USER = {"role": "user", "content": "write a search query for the yoga mat"}
FEEDBACK = "products retrieved did not match profile"


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def step(tok, messages, reply: str, turn: int) -> dict:
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return {
        "turn": turn,
        "messages": messages,
        "completion": reply,
        "prompt_token_ids": ids(tok, prompt),
        # as generated: the reply, then eos
        "completion_token_ids": ids(tok, reply) + [tok.eos_token_id],
    }


REFINE_MESSAGES = [
    SYSTEM,
    USER,
    {"role": "assistant", "content": "yoga mat"},
    {"role": "user", "content": FEEDBACK},
]


def two_turns(tok) -> tuple[dict, dict]:
    """A draft ("yoga mat") and, after the feedback, its refinement ("running shoes women")."""
    return step(tok, [SYSTEM, USER], "yoga mat", 0), step(
        tok, REFINE_MESSAGES, "running shoes women", 1
    )


def test_two_turns_render_as_the_full_conversation(tok) -> None:
    draft, refine = two_turns(tok)
    out = render_conversation([draft, refine], tok)

    assert out.prompt_ids == draft["prompt_token_ids"]
    # prompt + completion is exactly the template's rendering of the whole conversation
    full = tok.apply_chat_template(
        REFINE_MESSAGES + [{"role": "assistant", "content": "running shoes women"}],
        tokenize=False,
    )
    assert out.prompt_ids + out.completion_ids == ids(tok, full)
    # the model's tokens are the generated ones, unmasked; the feedback turn is masked
    n0 = len(draft["completion_token_ids"])
    n1 = len(refine["completion_token_ids"])
    assert (
        out.completion_ids[:n0] == draft["completion_token_ids"] and out.env_mask[:n0] == [1] * n0
    )
    assert (
        out.completion_ids[-n1:] == refine["completion_token_ids"]
        and out.env_mask[-n1:] == [1] * n1
    )
    env = [t for t, m in zip(out.completion_ids, out.env_mask, strict=True) if m == 0]
    assert tok.decode(env).split() == [
        "<|im_start|>",
        "user",
        *FEEDBACK.split(),
        "<|im_end|>",
        "<|im_start|>",
        "assistant",
    ]
    assert len(out.env_mask) == len(out.completion_ids)
    assert out.turns == 2


def test_single_turn_has_no_masked_tokens(tok) -> None:
    draft = step(tok, [SYSTEM, USER], "yoga mat", 0)
    out = render_conversation([draft], tok)
    assert out.completion_ids == draft["completion_token_ids"] and set(out.env_mask) == {1}


def test_decided_masks_each_turns_own_tokens_only(tok) -> None:
    """With a trie's ``choices``, tokens it forced leave the loss; the environment stays 0."""
    draft, refine = two_turns(tok)

    def first_only(model_ids):  # as if only each turn's first token were a choice
        return [1] + [0] * (len(model_ids) - 1)

    out = render_conversation([draft, refine], tok, first_only)
    plain = render_conversation([draft, refine], tok)
    assert out.completion_ids == plain.completion_ids
    n0, n1 = len(draft["completion_token_ids"]), len(refine["completion_token_ids"])
    assert out.env_mask[:n0] == first_only(draft["completion_token_ids"])
    assert out.env_mask[-n1:] == first_only(refine["completion_token_ids"])
    middle = slice(n0, len(out.env_mask) - n1)
    assert set(out.env_mask[middle]) == {0} == set(plain.env_mask[middle])
    assert sum(out.env_mask) == 2


def test_inconsistent_turns_are_refused(tok) -> None:
    draft = step(tok, [SYSTEM, USER], "yoga mat", 0)
    other = step(tok, [SYSTEM, {"role": "user", "content": "gift ideas"}], "x", 1)
    with pytest.raises(RolloutError):
        render_conversation([draft, other], tok)
    with pytest.raises(RolloutError):
        render_conversation([], tok)


def test_grounded_refinements_render_the_path_to_the_last_turn(tok) -> None:
    """A grounded run asks every refinement after the draft (``grounded_refine_messages``):
    turn 2's prompt extends the draft's reply, not turn 1's. The rendered conversation is the
    draft and turn 2, each under the very prompt it was sampled from."""
    draft = step(tok, [SYSTEM, USER], "yoga mat", 0)
    asked = [SYSTEM, USER, {"role": "assistant", "content": "yoga mat"}]
    first = step(tok, [*asked, {"role": "user", "content": FEEDBACK}], "running shoes", 1)
    second = step(tok, [*asked, {"role": "user", "content": "none fit: yoga mat, shoes"}], "x", 2)
    with pytest.raises(RolloutError, match="turn 2: its prompt does not extend"):
        render_conversation([draft, first, second], tok)  # the traceback

    assert conversation_path([draft, first, second], tok) == [0, 2]
    out = render_conversation([draft, second], tok)
    start, end = out.spans[1]
    assert out.prompt_ids + out.completion_ids[:start] == second["prompt_token_ids"]
    assert out.completion_ids[start:end] == second["completion_token_ids"]
    assert out.turns == 2


def test_a_free_run_keeps_every_turn_and_a_stray_turn_is_left_out(tok) -> None:
    draft, refine = two_turns(tok)
    again = step(
        tok,
        [
            *REFINE_MESSAGES,
            {"role": "assistant", "content": "running shoes women"},
            {"role": "user", "content": "still not it"},
        ],
        "trail shoes",
        2,
    )
    assert conversation_path([draft, refine, again], tok) == [0, 1, 2]
    stray = step(tok, [SYSTEM, {"role": "user", "content": "gift ideas"}], "x", 1)
    assert conversation_path([draft, stray], tok) == [0]
    with pytest.raises(RolloutError):
        conversation_path([], tok)
