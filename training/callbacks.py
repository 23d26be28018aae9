"""Trainer callbacks shared by ``training.sft`` and ``training.grpo``."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback


class TimeBudget(TrainerCallback):
    """Ends training cleanly once ``minutes`` of wall clock have passed since ``on_train_begin``.

    The step in flight finishes and the trainer's normal end (and our save) follows, so a run
    sized for a lent GPU or a CI budget still writes a usable adapter. The trainer also writes a
    checkpoint of that step into its output folder, which the caller keeps, so ``--resume``
    continues from it (a CPU run in sittings). ``stopped_at_step`` tells the caller it happened.
    """

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.started: float | None = None
        self.stopped_at_step: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.started is not None and time.perf_counter() - self.started >= self.seconds:
            control.should_training_stop = True
            control.should_save = True  # a checkpoint to --resume from
            self.stopped_at_step = state.global_step
        return control

    def keep_checkpoints(self) -> bool:
        """Whether the run stopped on the budget (its checkpoints are kept for ``--resume``)."""
        return self.stopped_at_step is not None
