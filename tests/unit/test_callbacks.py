"""The training time budget: stops the trainer once its minutes have passed, not before."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from training.callbacks import TimeBudget
from training.grpo import GRPOArguments, GRPOError
from training.sft import SFTArguments, SFTError


def _step(budget: TimeBudget, step: int) -> TrainerControl:
    control = TrainerControl()
    budget.on_step_end(None, SimpleNamespace(global_step=step), control)
    return control


def test_budget_stops_after_its_time() -> None:
    spent = TimeBudget(minutes=1e-9)
    spent.on_train_begin(None, None, TrainerControl())
    control = _step(spent, 3)
    assert control.should_training_stop and spent.stopped_at_step == 3
    # a checkpoint of that step is written and kept, so --resume continues the run
    assert control.should_save and spent.keep_checkpoints()


def test_budget_lets_training_run_inside_its_time() -> None:
    ample = TimeBudget(minutes=60)
    ample.on_train_begin(None, None, TrainerControl())
    control = _step(ample, 1)
    assert not control.should_training_stop and ample.stopped_at_step is None
    assert not control.should_save and not ample.keep_checkpoints()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_budget_flag_must_be_positive(bad: float) -> None:
    with pytest.raises(GRPOError, match="--max_minutes"):
        GRPOArguments(data="d", max_minutes=bad)
    with pytest.raises(SFTError, match="--max_minutes"):
        SFTArguments(data="d", max_minutes=bad)
