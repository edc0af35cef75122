"""Early stopping on crafted validation curves: when it stops, and which weights restore() gives back."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tricklab.tricks.early_stopping import STOPPERS, EarlyStopping


def _model_at(epoch: int, model: nn.Module | None = None) -> nn.Module:
    """A model whose every weight equals the epoch number: restore() must bring back exactly one epoch."""
    model = model or nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(epoch))
        model[1].running_mean.fill_(float(epoch))
    return model


def _run(curve: list[float], stopper: EarlyStopping) -> tuple[int | None, nn.Module]:
    """Feed the curve epoch by epoch; the epoch at which update() said stop (None: never) and the model."""
    model = None
    for epoch, value in enumerate(curve):
        model = _model_at(epoch, model)
        if stopper.update(value, model):
            return epoch, model
    return None, model


def test_stops_exactly_after_patience_non_improving_epochs_and_restores_the_best() -> None:
    #        0    1    2    3     4    5     6    7
    curve = [1.0, 0.8, 0.6, 0.65, 0.7, 0.62, 0.5, 0.4]
    stopper = EarlyStopping(patience=3)
    stopped, model = _run(curve, stopper)
    assert stopped == 5  # epochs 3, 4, 5 did not improve on epoch 2's 0.6
    assert stopper.best_value == 0.6 and stopper.best_index == 2
    assert model[0].weight[0, 0].item() == 5.0
    stopper.restore(model)
    for p in model.parameters():
        assert torch.equal(p, torch.full_like(p, 2.0))
    assert torch.equal(model[1].running_mean, torch.full((2,), 2.0))  # buffers too


def test_patience_counter_resets_on_improvement() -> None:
    curve = [1.0, 1.1, 1.2, 0.9, 1.0, 1.1, 1.2]
    stopped, _ = _run(curve, stopper := EarlyStopping(patience=3))
    assert stopped == 6 and stopper.best_index == 3


def test_lesson_rule_is_patience_zero_stop_at_the_first_rise() -> None:
    stopped, _ = _run([1.0, 0.9, 0.95, 0.5], stopper := EarlyStopping(patience=0))
    assert stopped == 2 and stopper.best_index == 1


def test_min_delta_counts_tiny_improvements_as_none() -> None:
    stopped, _ = _run([1.0, 0.999, 0.998, 0.997], stopper := EarlyStopping(patience=2, min_delta=0.01))
    assert stopped == 2 and stopper.best_index == 0 and stopper.best_value == 1.0


def test_mode_max_for_accuracy() -> None:
    stopped, model = _run([0.5, 0.7, 0.69, 0.71, 0.70, 0.70], stopper := EarlyStopping(patience=2, mode="max"))
    assert stopped == 5 and stopper.best_index == 3 and stopper.best_value == 0.71
    stopper.restore(model)
    assert model[0].bias[0].item() == 3.0


def test_nan_never_improves() -> None:
    stopped, _ = _run([1.0, math.nan, math.nan], stopper := EarlyStopping(patience=2))
    assert stopped == 2 and stopper.best_value == 1.0


def test_kept_weights_are_a_copy_not_a_view() -> None:
    stopper = EarlyStopping(patience=5)
    model = _model_at(7)
    stopper.update(0.1, model)
    _model_at(9, model)  # training continues in place
    stopper.restore(model)
    assert model[0].weight[0, 0].item() == 7.0
    assert all(t.device.type == "cpu" for t in stopper.best_state.values())


def test_state_dict_resumes_mid_curve() -> None:
    curve = [1.0, 0.8, 0.6, 0.65, 0.7, 0.62, 0.5]
    first = EarlyStopping(patience=3)
    model = None
    for epoch, value in enumerate(curve[:4]):
        model = _model_at(epoch, model)
        assert not first.update(value, model)
    resumed = EarlyStopping(patience=99)
    resumed.load_state_dict(first.state_dict())
    assert not resumed.update(curve[4], _model_at(4, model))
    assert resumed.update(curve[5], _model_at(5, model))
    resumed.restore(model)
    assert model[0].weight[0, 0].item() == 2.0


def test_restore_before_any_best_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        EarlyStopping(patience=1).restore(nn.Linear(1, 1))


def test_registry_entry_says_where_the_lesson_differs() -> None:
    entry = STOPPERS.get("early_stopping")
    assert entry.obj is EarlyStopping
    assert "Frühes Stoppen" in entry.lesson and "patience" in entry.note
