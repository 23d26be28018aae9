"""Micro-batching for a drafter shared by concurrent graph runs.

``graph.batch`` runs each shopper's graph in its own thread; each node asks the drafter for one
completion. This wrapper collects the requests that arrive within a short window and sends them
to the wrapped drafter as one left-padded batch, which on a CPU costs little more than a single
prompt. Requests with different sampling settings are never mixed.

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
    """

    def __init__(
        self,
        drafter: QueryDrafter,
        *,
        max_batch: int = 16,
        max_wait_s: float = 0.05,
        idle_s: float = 2.0,
    ):
        self.drafter = drafter
        self.name = drafter.name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        # The worker thread ends after this long without a request (the next one starts it
        # again): a worker waiting forever kept its wrapper, the drafter and its trie alive
        # after the caller was done with them, one thread per runner (a GRPO run makes a runner
        # a step and grew by about 100 MB a step until it was killed for memory).
        self.idle_s = idle_s
        self.batch_sizes: list[int] = []  # prompts per underlying call, for benchmarks
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

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
            batch = [first]
            size = len(first.prompts)
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
            groups: dict[tuple[tuple[str, Any], ...], list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.options, []).append(request)
            for options, requests in groups.items():
                self._serve(dict(options), requests)

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
        self, drafter: Any, *, max_batch: int = 16, max_wait_s: float = 0.05, idle_s: float = 2.0
    ):
        # A GroundedDrafter need not be a QueryDrafter (no ``generate``): typed loosely here.
        super().__init__(drafter, max_batch=max_batch, max_wait_s=max_wait_s, idle_s=idle_s)

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


def micro_batched(drafter: Any, *, max_batch: int = 16, max_wait_s: float = 0.05) -> Any:
    """``drafter`` behind the right micro-batcher (unchanged when it already is one)."""
    if isinstance(drafter, MicroBatchingDrafter):
        return drafter
    if isinstance(drafter, GroundedDrafter):
        return MicroBatchingGroundedDrafter(drafter, max_batch=max_batch, max_wait_s=max_wait_s)
    return MicroBatchingDrafter(drafter, max_batch=max_batch, max_wait_s=max_wait_s)
