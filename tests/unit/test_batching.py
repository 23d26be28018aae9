"""Micro-batching merges concurrent drafter calls and keeps each caller's results apart."""

from __future__ import annotations

import threading

import pytest

from agent.drafting import MicroBatchingDrafter, ScriptedDrafter


def test_concurrent_calls_are_merged_and_answered_in_order() -> None:
    inner = ScriptedDrafter(lambda messages: "Query: " + messages[-1]["content"])
    calls: list[int] = []
    original = inner.generate

    def counting(prompts, **kw):
        calls.append(len(prompts))
        return original(prompts, **kw)

    inner.generate = counting  # type: ignore[method-assign]
    drafter = MicroBatchingDrafter(inner, max_batch=8, max_wait_s=0.5)
    results: dict[int, str] = {}
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = drafter.generate([[{"role": "user", "content": f"q{i}"}]], max_new_tokens=8)[
            0
        ].text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"Query: q{i}" for i in range(6)}
    assert sum(calls) == 6 and len(calls) < 6  # fewer model calls than callers
    assert drafter.batch_sizes == calls


def test_different_sampling_settings_are_not_mixed() -> None:
    seen: list[tuple[int, float]] = []
    inner = ScriptedDrafter(["Query: x"])
    original = inner.generate

    def recording(prompts, **kw):
        seen.append((len(prompts), kw["temperature"]))
        return original(prompts, **kw)

    inner.generate = recording  # type: ignore[method-assign]
    drafter = MicroBatchingDrafter(inner, max_batch=8, max_wait_s=0.3)
    barrier = threading.Barrier(4)

    def work(t: float) -> None:
        barrier.wait()
        drafter.generate([[{"role": "user", "content": "a"}]], temperature=t)

    threads = [threading.Thread(target=work, args=(t,)) for t in (0.0, 0.0, 0.7, 0.7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == [(2, 0.0), (2, 0.7)]


def test_errors_reach_every_caller() -> None:
    class Broken:
        name = "broken"

        def generate(self, prompts, **kw):
            raise RuntimeError("model crashed")

    drafter = MicroBatchingDrafter(Broken(), max_wait_s=0.01)
    with pytest.raises(RuntimeError, match="model crashed"):
        drafter.generate([[{"role": "user", "content": "a"}]])


def test_an_idle_worker_leaves_and_lets_the_wrapper_go() -> None:
    """The worker thread ends once idle, so a wrapper (its drafter, its trie) is freed when its
    caller drops it, and the next call starts a new worker."""
    import gc
    import time
    import weakref

    inner = ScriptedDrafter(lambda messages: "Query: " + messages[-1]["content"])
    drafter = MicroBatchingDrafter(inner, max_wait_s=0.01, idle_s=0.05)
    prompt = [[{"role": "user", "content": "a"}]]
    assert drafter.generate(prompt)[0].text == "Query: a"
    deadline = time.monotonic() + 5
    while drafter._worker is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert drafter._worker is None  # left after idle_s
    assert drafter.generate(prompt)[0].text == "Query: a"  # a new worker serves the next call
    gone = weakref.ref(drafter)
    del drafter
    deadline = time.monotonic() + 5
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert gone() is None


def test_a_batch_of_free_generations_over_kept_prefixes_equals_one_at_a_time(
    tiny_model_dir,
) -> None:
    """``GroundedHFDrafter.generate`` of several prompts prefills them over the rows it keeps
    (the batch's shared start once, a prompt that extends a kept one over its new tokens only)
    and writes, token for token, what each prompt gets alone."""
    from agent.drafting import HFDrafter
    from agent.drafting.constrained import GroundedHFDrafter

    system = {"role": "system", "content": "write a short search query for the shopper " * 3}
    prompts = [
        [system, {"role": "user", "content": "a shopper who buys tape"}],
        [system, {"role": "user", "content": "someone else entirely, with a longer memory"}],
        [system, {"role": "user", "content": "a third shopper"}],
    ]
    alone = HFDrafter(str(tiny_model_dir), prefix_cache=False, dtype="float32")
    grounded = GroundedHFDrafter(HFDrafter(str(tiny_model_dir), dtype="float32"))
    assert grounded.prefixes is not None
    options = {"max_new_tokens": 6, "temperature": 0.0}
    together = grounded.generate(prompts, **options)
    assert together == [alone.generate([p], **options)[0] for p in prompts]
    assert grounded.prefixes.hits == 3  # every row ran after the shared start, kept once
    # A rewrite extends its write prompt: its kept row is reused.
    rewrites = [
        [*p, {"role": "assistant", "content": g.text}, {"role": "user", "content": "again"}]
        for p, g in zip(prompts[:2], together[:2], strict=True)
    ]
    before = grounded.prefixes.reused_tokens
    again = grounded.generate(rewrites, **options)
    assert again == [alone.generate([p], **options)[0] for p in rewrites]
    # (a row is kept without its last token, which ``generate`` runs)
    assert grounded.prefixes.reused_tokens - before == sum(
        len(g.prompt_token_ids) - 1 for g in together[:2]
    )
