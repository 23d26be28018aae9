"""Trainer callbacks shared by ``training.sft`` and ``training.grpo``."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from transformers import TrainerCallback


class GracefulStop(TrainerCallback):
    """Ends training cleanly once ``minutes`` of wall clock have passed since ``on_train_begin``,
    or at the first Ctrl-C (SIGINT) while training.

    The step in flight finishes and the trainer's normal end (and our save) follows, so a run
    sized for a lent GPU or a CI budget, or stopped by hand, still writes a usable adapter. The
    trainer also writes a checkpoint of that step into its output folder, which the caller keeps,
    so ``--resume`` continues from it (a CPU run in sittings). A second Ctrl-C stops at once
    (``KeyboardInterrupt``; the checkpoints saved before are kept). ``stopped_at_step`` and
    ``reason`` (``"time"`` or ``"interrupt"``) tell the caller it happened.
    """

    def __init__(self, minutes: float | None = None) -> None:
        self.seconds = None if minutes is None else minutes * 60.0
        self.started: float | None = None
        self.stopped_at_step: int | None = None
        self.reason: str | None = None
        self.interrupted = False
        self._previous: Any = None
        self._installed = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        # Signal handlers can only be set from the main thread (a trainer driven from another
        # thread keeps Python's default: Ctrl-C stops at once).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
            self._installed = True

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self.interrupted:  # the second Ctrl-C: stop now
            self._restore()
            raise KeyboardInterrupt
        self.interrupted = True
        print(
            "Ctrl-C: stopping after the step in flight and saving it (Ctrl-C again to stop now)",
            file=sys.stderr,
            flush=True,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        out_of_time = (
            self.seconds is not None
            and self.started is not None
            and time.perf_counter() - self.started >= self.seconds
        )
        if out_of_time or self.interrupted:
            control.should_training_stop = True
            control.should_save = True  # a checkpoint to --resume from
            self.stopped_at_step = state.global_step
            self.reason = "interrupt" if self.interrupted else "time"
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def keep_checkpoints(self) -> bool:
        """Whether the run stopped early (its checkpoints are kept for ``--resume``)."""
        return self.stopped_at_step is not None
