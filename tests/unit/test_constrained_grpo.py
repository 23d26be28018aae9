"""The trie-restricted log-probabilities GRPO scores trie-sampled completions with."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from training.constrained_grpo import restricted_logps  # noqa: E402


def test_each_position_is_scored_under_the_softmax_it_was_sampled_from() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 10)
    completion = torch.tensor([[2, 7, 3, 0], [5, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    seen: list[list[int]] = []

    def allowed(ids):
        seen.append(list(ids))
        if ids == [2, 7, 3]:  # row 0: a choice, an unrestricted (environment) token, a forced one
            return [[1, 2, 4], None, [3]]
        return None  # row 1: written without a trie

    logps, entropies = restricted_logps(logits, completion, mask, allowed, 2.0, True)
    assert seen == [[2, 7, 3], [5, 1]]  # each row's completion without its padding
    scaled = logits / 2.0
    among = torch.log_softmax(scaled[0, 0, [1, 2, 4]], dim=-1)
    assert logps[0, 0].item() == pytest.approx(among[1].item(), abs=1e-6)  # token 2 of {1, 2, 4}
    full = torch.log_softmax(scaled, dim=-1)
    assert logps[0, 1].item() == pytest.approx(full[0, 1, 7].item(), abs=1e-6)
    assert logps[0, 2].item() == pytest.approx(0.0, abs=1e-6)  # the only token allowed
    assert torch.allclose(logps[1, :2], full[1, [0, 1], [5, 1]], atol=1e-6)
    p = among.exp()
    assert entropies[0, 0].item() == pytest.approx(-(p * among).sum().item(), abs=1e-5)
    assert entropies[0, 2].item() == pytest.approx(0.0, abs=1e-5)
    assert all(math.isfinite(v) for v in entropies.flatten().tolist())


def test_gradients_reach_only_the_allowed_logits() -> None:
    logits = torch.randn(1, 1, 6, requires_grad=True)
    logps, _ = restricted_logps(
        logits, torch.tensor([[3]]), torch.tensor([[1]]), lambda ids: [[1, 3]]
    )
    logps.sum().backward()
    grad = logits.grad[0, 0]
    assert grad[1].item() != 0 and grad[3].item() != 0
    assert all(grad[k].item() == 0 for k in (0, 2, 4, 5))
