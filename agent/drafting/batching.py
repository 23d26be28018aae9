"""Micro-batching for a drafter shared by concurrent graph runs.

``graph.batch`` runs each shopper's graph in its own thread; each node asks the drafter for one
completion. This wrapper collects the requests that arrive within a short window and sends them
to the wrapped drafter as one batch, whose decoding steps on a CPU cost little more than a
single prompt's (its prompts' prefill does not get cheaper: docs/performance.md). Requests with
different sampling settings are never mixed.

Waiting for company costs a lone caller that wait. An ``eager`` micro-batcher (``default_deps``
gives the graph one: the same drafter serves ``graph.invoke`` one shopper at a time and
``graph.batch``) opens the window only when there is company to wait for
(``MicroBatchingDrafter._worth_waiting``): a request already queued behind the first, or a last
call that served more than one. Otherwise the first request goes at once; requests that arrive
while the model is busy queue up and go together in the next call, so a burst batches without a
window (its first request goes alone) and one shopper at a time never waits.

``micro_batched(drafter)`` picks the wrapper: for a ``GroundedDrafter`` it also merges concurrent
``beams`` calls (each prompt keeps its own trie, so a refinement's exclusions stay its own):
a constrained beam search's decoding steps are small matrix products, so on a CPU one step
over the beams of many shoppers costs little more than one over a single shopper's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from agent.drafting.protocol import GroundedDrafter, QueryDrafter
from agent.drafting.trie import tries_per_prompt
from agent.records import Generation

DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_S = 0.05


@dataclass
class _Request:
    prompts: list[list[dict[str, str]]]
    # What may share a call: the method ("generate", "beams") and its settings.
    options: tuple[tuple[str, Any], ...]
    # Per-prompt arguments that do not need to match to share a call (beams: the trie).
    per_prompt: list[Any] = field(default_factory=list)
    future: Future[list[Any]] = field(default_factory=Future)


class MicroBatchingDrafter:
    """A ``QueryDrafter`` that merges concurrent ``generate`` calls into batches.

    Args:
        drafter: the drafter that does the work.
        max_batch: most prompts sent in one call.
        max_wait_s: how long the first request of a batch waits for company (seconds).
        eager: wait only when callers are known to be concurrent (``_worth_waiting``), so a lone
            caller never pays ``max_wait_s``; off, every batch's first request waits it.
    """

    def __init__(
        self,
        drafter: QueryDrafter,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        idle_s: float = 2.0,
        eager: bool = False,
    ):
        self.drafter = drafter
        self.eager = eager
        self.name = drafter.name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        # The worker thread ends after this long without a request (the next one starts it
        # again): a worker waiting forever kept its wrapper, the drafter and its trie alive
        # after the caller was done with them, one thread per runner (a GRPO run makes a runner
        # a step and grew by about 100 MB a step until it was killed for memory).
        self.idle_s = idle_s
        self.batch_sizes: list[int] = []  # prompts per underlying call, for benchmarks
        self.waits = 0  # batches that waited the window for company, for tests and benchmarks
        self._company = False  # the last call served held more than one request
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Everything else (``prefixes``, ``resolved``, ``from_memory``...) is the wrapped
        # drafter's, so code that reads a drafter's attributes works on the wrapper too. Only
        # reached for names the wrapper does not have; ``drafter`` itself is guarded so a
        # half-built wrapper (copy, unpickling) raises instead of recursing.
        if name == "drafter" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.drafter, name)

    def generate(self, prompts: Sequence[list[dict[str, str]]], **options: Any) -> list[Generation]:
        return self._submit(
            _Request(list(prompts), (("method", "generate"), *sorted(options.items())))
        )

    def _submit(self, request: _Request) -> list[Any]:
        # Queued first, then the worker checked: a worker that is leaving looks at the queue
        # under the same lock, so the request is either seen by it or by a new worker.
        self._queue.put(request)
        self._ensure_worker()
        return request.future.result()

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="drafter-batcher", daemon=True
                )
                self._worker.start()

    def _next(self) -> _Request | None:
        """The next request, or ``None`` (the worker leaves) after ``idle_s`` without one."""
        while True:
            try:
                return self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return None

    def _run(self) -> None:
        while True:
            first = self._next()
            if first is None:
                return
            batch = self._collect(first)
            self._company = len(batch) > 1
            groups: dict[tuple[tuple[str, Any], ...], list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.options, []).append(request)
            for options, requests in groups.items():
                self._serve(dict(options), requests)

    def _collect(self, first: _Request) -> list[_Request]:
        """``first`` and the requests that go with it: those already queued, then, when
        ``_worth_waiting``, those that arrive within ``max_wait_s`` (up to ``max_batch``)."""
        batch = [first]
        size = len(first.prompts)
        while size < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(nxt)
            size += len(nxt.prompts)
        if size >= self.max_batch or not self._worth_waiting(batch):
            return batch
        self.waits += 1
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                nxt = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            batch.append(nxt)
            size += len(nxt.prompts)
        return batch

    def _worth_waiting(self, batch: list[_Request]) -> bool:
        """Whether to hold ``batch`` for ``max_wait_s`` for more requests: always, unless
        ``eager``; then only when callers are known to be concurrent (others were queued with
        it, or the last call served held more than one). A lone caller (one shopper at a time)
        is then served at once instead of paying the window on every model call; a burst's
        first request goes alone, and the rest gather while the model serves it."""
        return not self.eager or len(batch) > 1 or self._company

    def _serve(self, options: dict[str, Any], requests: list[_Request]) -> None:
        prompts = [p for r in requests for p in r.prompts]
        method = options.pop("method")
        try:
            if method == "beams":
                per_prompt = [x for r in requests for x in r.per_prompt]
                generations = self.drafter.beams(prompts, per_prompt, **options)  # type: ignore[attr-defined]
            else:
                generations = self.drafter.generate(prompts, **options)
        except BaseException as exc:  # hand the failure to every waiting caller
            for r in requests:
                r.future.set_exception(exc)
            return
        self.batch_sizes.append(len(prompts))
        start = 0
        for r in requests:
            r.future.set_result(list(generations[start : start + len(r.prompts)]))
            start += len(r.prompts)


class MicroBatchingGroundedDrafter(MicroBatchingDrafter):
    """``MicroBatchingDrafter`` for a ``GroundedDrafter``: ``beams`` calls are merged too;
    ``score`` and ``trie`` go straight to the wrapped drafter."""

    def __init__(
        self,
        drafter: Any,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        idle_s: float = 2.0,
        eager: bool = False,
    ):
        # A GroundedDrafter need not be a QueryDrafter (no ``generate``): typed loosely here.
        super().__init__(
            drafter, max_batch=max_batch, max_wait_s=max_wait_s, idle_s=idle_s, eager=eager
        )

    def beams(
        self,
        prompts: Sequence[list[dict[str, str]]],
        trie: Any,
        n: int,
        temperature: float = 0.0,
    ) -> list[Any]:
        options = (("method", "beams"), ("n", n), ("temperature", temperature))
        return self._submit(_Request(list(prompts), options, tries_per_prompt(trie, len(prompts))))

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[list[float]]:
        return self.drafter.score(prompts, completions)  # type: ignore[attr-defined,no-any-return]

    def trie(self, queries: Sequence[str]) -> Any:
        return self.drafter.trie(queries)  # type: ignore[attr-defined]

    @property
    def identity(self) -> str | None:
        return getattr(self.drafter, "identity", None)


def micro_batched(
    drafter: Any,
    *,
    max_batch: int | None = None,
    max_wait_s: float | None = None,
    eager: bool | None = None,
) -> Any:
    """``drafter`` behind the right micro-batcher (settings left ``None``: the defaults). A
    drafter that already is one is returned as it is (never wrapped twice), unless other
    settings are asked for: then its wrapped drafter gets a new micro-batcher with them, the
    settings not asked for kept (``OfflineRunner``'s ``batch_size`` over ``default_deps``'
    drafter); the two share the model and its lock."""
    asked: dict[str, Any] = {"max_batch": max_batch, "max_wait_s": max_wait_s, "eager": eager}
    settings: dict[str, Any] = {
        "max_batch": DEFAULT_MAX_BATCH,
        "max_wait_s": DEFAULT_MAX_WAIT_S,
        "eager": False,
    }
    if isinstance(drafter, MicroBatchingDrafter):
        settings = {name: getattr(drafter, name) for name in settings}
        if all(value is None or value == settings[name] for name, value in asked.items()):
            return drafter
        drafter = drafter.drafter
    settings.update({name: value for name, value in asked.items() if value is not None})
    if isinstance(drafter, GroundedDrafter):
        return MicroBatchingGroundedDrafter(drafter, **settings)
    return MicroBatchingDrafter(drafter, **settings)
