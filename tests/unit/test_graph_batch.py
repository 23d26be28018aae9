"""``graph.batch`` through the README's API (``build_graph(default_deps(...))``) shares model
calls: ``default_deps`` puts the drafter behind an eager micro-batcher. Fakes: a scripted
grounded drafter that writes query texts and counts its calls, the in-memory catalog and the
tiny catalog's fitted models. Calls are counted, never timed, except that a lone run finishes
well inside a batching window it would otherwise have waited."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from agent.attempts import grounded_drafter
from agent.context import Context
from agent.drafting.batching import MicroBatchingGroundedDrafter, micro_batched
from agent.writing import can_write
from graphs.offline.runner import OfflineRunner
from graphs.query_agent import build_graph, default_deps
from tests.helpers.fakes import FakeCatalog, ScriptedWritingDrafter

# The path the default run takes when the model only writes the text: the intent from the
# ranker (no beams, no vote), then one free generation per shopper.
WRITE_ONLY = Context(beams=0, model_vote=False, write_query=True, fit_threshold=0.0, top_k=3)
SHOPPERS = ["A1TINYUSER01", "A1TINYUSER02", "A1TINYUSER03", "A1TINYUSER05", "A1TINYUSER06"]


class CountingWriter(ScriptedWritingDrafter):
    """Writes ``Query: filament`` for every prompt and records each call's prompt count. With
    ``hold`` (the number of first writes to expect), the first call returns only once the rest
    of them wait behind it in ``batcher``'s queue (a model busy while the others arrive), so
    what the next call holds does not depend on thread timing."""

    def __init__(self, hold: int = 0) -> None:
        super().__init__([], ["Query: filament"])
        self.sizes: list[int] = []
        self.hold = hold
        self.batcher: Any = None
        self._first = threading.Lock()

    def generate(self, prompts, **options):  # type: ignore[no-untyped-def]
        self.sizes.append(len(prompts))
        if self.hold and self._first.acquire(blocking=False):
            deadline = time.monotonic() + 10
            rest = self.hold - len(prompts)
            while self.batcher._queue.qsize() < rest and time.monotonic() < deadline:
                time.sleep(0.005)
        return super().generate(prompts, **options)


def graph_of(drafter: Any, tiny_dataset, store, models):  # type: ignore[no-untyped-def]
    """The README's graph: ``default_deps`` (its drafter wrapping), the fakes for the catalog
    and its models instead of the home's."""
    deps = replace(
        default_deps(drafter=drafter),
        catalog=FakeCatalog(tiny_dataset.products.values()),
        ranking=models,
        search=None,
    )
    return deps, build_graph(deps).compile(store=store)


def test_graph_batch_reaches_the_model_as_fewer_larger_calls(
    tiny_dataset, store, tiny_models
) -> None:
    fake = CountingWriter(hold=len(SHOPPERS))
    deps, graph = graph_of(fake, tiny_dataset, store, tiny_models)
    assert isinstance(deps.drafter, MicroBatchingGroundedDrafter) and deps.drafter.eager
    fake.batcher = deps.drafter
    inputs = [{"user_id": u} for u in SHOPPERS]
    outs = graph.batch(inputs, {"max_concurrency": len(inputs)}, context=WRITE_ONLY)
    written = sum(len(o["texts"]) for o in outs)
    assert written == sum(fake.sizes) >= len(SHOPPERS)  # every text came from the fake
    assert all(o["texts"] for o in outs)
    # The first call took the writes queued when the worker started (often only one); the
    # others, queued while it ran, went together in the next (with a rewrite, when one arrived
    # inside the window): every shopper's first write in two calls.
    assert sum(fake.sizes[:2]) >= len(SHOPPERS)
    assert len(fake.sizes) < written
    # Each run got its own shopper's text back (the prompt names the shopper's intent).
    for out in outs:
        assert out["texts"][0].messages[-1]["content"].startswith(f"Category: {out['query']}\n")


def test_one_at_a_time_never_waits_the_window(tiny_dataset, store, tiny_models) -> None:
    fake = CountingWriter()
    batcher = micro_batched(fake, max_wait_s=30.0, eager=True)  # a window no test would sit out
    deps, graph = graph_of(batcher, tiny_dataset, store, tiny_models)
    assert deps.drafter is batcher  # kept, not wrapped again
    t0 = time.monotonic()
    for user in SHOPPERS[:3]:
        out = graph.invoke({"user_id": user}, context=WRITE_ONLY)
        assert out["texts"]
    assert time.monotonic() - t0 < 30.0
    assert batcher.waits == 0 and batcher.batch_sizes == fake.sizes
    assert set(fake.sizes) == {1} and len(fake.sizes) >= 3


def test_a_patient_batcher_still_waits_for_company() -> None:
    """Not eager (``OfflineRunner``'s own default): the first request waits the window."""
    fake = CountingWriter()
    batcher = micro_batched(fake, max_wait_s=0.01)
    batcher.generate([[{"role": "user", "content": "a"}]])
    assert batcher.waits == 1 and fake.sizes == [1]


def test_wrapping_is_idempotent_and_keeps_the_drafters_attributes(tiny_models) -> None:
    fake = CountingWriter()
    deps = default_deps(drafter=fake)
    wrapper = deps.drafter
    assert isinstance(wrapper, MicroBatchingGroundedDrafter) and wrapper.drafter is fake
    assert default_deps(drafter=wrapper).drafter is wrapper
    assert micro_batched(wrapper) is wrapper
    assert micro_batched(wrapper, max_batch=wrapper.max_batch, eager=True) is wrapper
    # Other settings: a new micro-batcher over the same drafter, never one over the other.
    runner = OfflineRunner(store=None, catalog=None, drafter=wrapper, ranking=tiny_models)  # type: ignore[arg-type]
    assert runner.drafter is wrapper  # the runner's batch size is the default's
    small = OfflineRunner(
        store=None,  # type: ignore[arg-type]
        catalog=None,  # type: ignore[arg-type]
        drafter=wrapper,
        ranking=tiny_models,
        batch_size=4,
    )
    assert small.drafter.drafter is fake and small.drafter.max_batch == 4 and small.drafter.eager
    assert small.model == fake.name == wrapper.name
    # What the nodes and callers read of a drafter, on the wrapper.
    assert wrapper.identity is None  # the fake names no model
    assert wrapper.texts == fake.texts  # any other attribute: the wrapped drafter's
    assert grounded_drafter(wrapper, tiny_models, WRITE_ONLY) is wrapper
    assert can_write(wrapper, tiny_models, WRITE_ONLY)
    assert not can_write(wrapper, tiny_models, replace(WRITE_ONLY, write_query=False))
