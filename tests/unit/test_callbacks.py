"""The trainers' early stop: once the time budget has passed (not before) or at the first Ctrl-C,
the step in flight ends and is saved; a second Ctrl-C stops at once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from training.callbacks import GracefulStop
from training.grpo import GRPOArguments, GRPOError
from training.sft import SFTArguments, SFTError


def _step(budget: GracefulStop, step: int) -> TrainerControl:
    control = TrainerControl()
    budget.on_step_end(None, SimpleNamespace(global_step=step), control)
    return control


def test_budget_stops_after_its_time() -> None:
    spent = GracefulStop(minutes=1e-9)
    spent.on_train_begin(None, None, TrainerControl())
    control = _step(spent, 3)
    assert control.should_training_stop and spent.stopped_at_step == 3
    # a checkpoint of that step is written and kept, so --resume continues the run
    assert control.should_save and spent.keep_checkpoints()


def test_budget_lets_training_run_inside_its_time() -> None:
    ample = GracefulStop(minutes=60)
    ample.on_train_begin(None, None, TrainerControl())
    control = _step(ample, 1)
    assert not control.should_training_stop and ample.stopped_at_step is None
    assert not control.should_save and not ample.keep_checkpoints()


def test_first_ctrl_c_ends_the_step_and_saves_the_second_stops_now() -> None:
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)
    stop = GracefulStop()  # no time budget
    stop.on_train_begin(None, None, TrainerControl())
    try:
        assert not _step(stop, 1).should_training_stop
        # (unhandled, the SIGINT below would stop the whole pytest run)
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGINT)  # handled: no KeyboardInterrupt
        control = _step(stop, 2)
        assert control.should_training_stop and control.should_save
        assert stop.stopped_at_step == 2 and stop.reason == "interrupt" and stop.keep_checkpoints()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is before  # Python's own handler is back
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_ctrl_c_handler_is_removed_when_training_ends() -> None:
    import signal

    before = signal.getsignal(signal.SIGINT)
    stop = GracefulStop(minutes=60)
    stop.on_train_begin(None, None, TrainerControl())
    assert signal.getsignal(signal.SIGINT) is not before
    stop.on_train_end(None, None, TrainerControl())
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_budget_flag_must_be_positive(bad: float) -> None:
    with pytest.raises(GRPOError, match="--max_minutes"):
        GRPOArguments(data="d", max_minutes=bad)
    with pytest.raises(SFTError, match="--max_minutes"):
        SFTArguments(data="d", max_minutes=bad)
