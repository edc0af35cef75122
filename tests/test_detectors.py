"""Each detector on hand-made probe records: it fires past its threshold, stays quiet just inside it, waits
for persistence (NaN and spikes excepted), and is right where the copied thresholds are wrong (a signal that
dies with a first/last gradient ratio near 1; a saturated tanh net with a huge ratio that is no explosion)."""

from __future__ import annotations

import math

import pytest

from tricklab.diagnose.detectors import (
    Context,
    DeadUnits,
    Detector,
    EpochMetrics,
    ExplodingGradients,
    Finding,
    LossSpike,
    NonFiniteLoss,
    Oscillation,
    Overfitting,
    Plateau,
    Saturation,
    Thresholds,
    TooManyParameters,
    UnscaledInputs,
    UpdateRatio,
    VanishingGradients,
)
from tricklab.diagnose.records import LayerStats, ProbeRecord

T = Thresholds()


# -- hand-made records ----------------------------------------------------------------------------------------
def layer(i: int, *, act: str | None = "relu", grad: float = 0.1, weight: float = 1.0, pre_std: float = 1.0,
          act_std: float | None = 0.6, sat: float | None = None, dead: float | None = None,
          upd: float | None = 1e-3) -> LayerStats:
    return LayerStats(name=f"layer{i}", kind="linear", depth_index=i, activation=act, pre_mean=0.0, pre_std=pre_std,
                      act_mean=None if act_std is None else 0.3, act_std=act_std, frac_saturated=sat,
                      frac_dead=dead, grad_norm=grad, weight_norm=weight, update_ratio=upd)


def net(n: int = 4, *, grads: list[float] | None = None, act: str = "relu", act_stds: list[float] | None = None,
        sat: float | None = None, dead: float | None = None, upds: list[float] | None = None,
        last_grad: float = 0.1) -> list[LayerStats]:
    """``n`` hidden layers with activation ``act`` and one output layer (no activation)."""
    grads = grads or [0.1] * n
    act_stds = act_stds or [0.6] * n
    upds = upds or [1e-3] * (n + 1)
    hidden = [layer(i, act=act, grad=grads[i], act_std=act_stds[i], upd=upds[i],
                    sat=sat if act in ("tanh", "sigmoid") else None, dead=dead if act == "relu" else None)
              for i in range(n)]
    return hidden + [layer(n, act=None, act_std=None, grad=last_grad, upd=upds[n])]


def rec(step: int, *, loss: float = 2.3, layers: list[LayerStats] | None = None, grad_norm: float = 1.0,
        mean: float = 0.0, std: float = 1.0, absmax: float = 3.0, lr: float | None = 1e-3) -> ProbeRecord:
    return ProbeRecord(step=step, epoch=0, loss=loss, grad_norm=grad_norm, input_mean=mean, input_std=std,
                       input_absmax=absmax, layers=layers if layers is not None else net(), lr=lr)


def feed(detector: Detector, records: list[ProbeRecord], ctx: Context | None = None) -> list[Finding | None]:
    """Observe ``records`` in order (the doctor's order: the context first), returning every result."""
    ctx = ctx or Context(detector.t)
    out = []
    for r in records:
        ctx.add_record(r)
        out.append(detector.observe(r, ctx))
    return out


def first_fire(results: list[Finding | None]) -> int | None:
    return next((i for i, f in enumerate(results) if f is not None), None)


def epochs(detector: Detector, rows: list[dict[str, float]], ctx: Context | None = None,
           steps_per_epoch: int = 10) -> list[Finding | None]:
    ctx = ctx or Context(detector.t)
    out = []
    for i, row in enumerate(rows):
        m = EpochMetrics.from_metrics(i, steps_per_epoch * (i + 1), row)
        ctx.add_epoch(m)
        out.append(detector.end_epoch(m, ctx))
    return out


# -- vanishing gradients ----------------------------------------------------------------------------------------
def flat(n: int, layers: list[LayerStats], **kw: float) -> list[ProbeRecord]:
    """``n`` probes, 5 steps apart, with the same layers and a loss that does not move."""
    return [rec(5 * i, layers=layers, **kw) for i in range(n)]


def test_vanishing_by_autotrainer_ratio_needs_three_stalled_probes():
    layers = net(grads=[5e-5, 6e-5, 1e-3, 0.01], last_grad=0.1)  # front (first quarter) 5e-5 < β₂, ratio 5e-4 < β₁
    results = feed(VanishingGradients(T), flat(4, layers))
    assert first_fire(results) == 2
    f = results[2]
    assert f.kind == "vanishing_gradients" and f.criterion == "ratio" and f.step == 0
    assert f.layers[:2] == ["layer0", "layer1"]
    assert f.evidence["grad_ratio"] == pytest.approx(5e-4)


@pytest.mark.parametrize("front, last", [(9.9e-5, 0.098), (1.01e-4, 10.0)])
def test_vanishing_ratio_just_inside_the_thresholds_is_quiet(front, last):
    # first: ratio 1.01e-3 > β₁ with a tiny front; second: ratio 1e-5 but the front gradient 1.01e-4 > β₂
    layers = net(grads=[front, 1e-6, 1e-6, 1e-6], last_grad=last)
    assert first_fire(feed(VanishingGradients(T), flat(6, layers))) is None


def test_vanishing_is_not_called_while_the_loss_is_moving():
    layers = net(grads=[1e-6] * 4, last_grad=0.1)
    records = [rec(5 * i, loss=2.3 * 0.8**i, layers=layers) for i in range(8)]
    assert first_fire(feed(VanishingGradients(T), records)) is None


def test_signal_that_dies_is_vanishing_although_the_first_last_ratio_is_near_one():
    """Deep ReLU net initialised too small: every gradient tiny, ratio ~1 (AUTOTRAINER sees nothing)."""
    stds = [0.07 * 0.05**i for i in range(8)]              # the forward signal shrinks 20× per layer
    layers = net(8, grads=[2e-21] * 8, act_stds=stds, last_grad=1.9e-21)
    results = feed(VanishingGradients(T), flat(3, layers))
    f = results[-1]
    assert f is not None and f.criterion == "signal"
    assert 0.1 < f.evidence["grad_ratio"] < 10                # the ratio rule alone would be silent
    assert f.evidence["signal_ratio"] < 1e-3


def test_healthy_batch_normed_statistics_raise_no_gradient_alarm():
    layers = net(8, grads=[0.6, 2.0, 1.7, 1.6, 1.2, 1.0, 0.9, 0.3], act_stds=[0.6] * 8, last_grad=0.7)
    for det in (VanishingGradients(T), ExplodingGradients(T), DeadUnits(T), Saturation(T), UpdateRatio(T)):
        assert first_fire(feed(det, flat(12, layers))) is None, det.kind


def test_persistence_restarts_when_the_condition_breaks():
    bad = net(grads=[1e-6] * 4, last_grad=0.1)
    good = net()
    records = [rec(5 * i, layers=ly) for i, ly in enumerate([bad, bad, good, bad, bad])]
    assert first_fire(feed(VanishingGradients(T), records)) is None
    records.append(rec(25, layers=bad))
    assert first_fire(feed(VanishingGradients(T), records)) == 5


# -- exploding gradients ---------------------------------------------------------------------------------------
def test_nonfinite_gradient_is_immediate_and_never_explained_away():
    layers = net(grads=[math.nan, 1.0, 1.0, 1.0])
    f = feed(ExplodingGradients(T), [rec(0, layers=layers, grad_norm=math.nan)])[0]
    assert f is not None and f.criterion == "nonfinite" and not f.explainable and f.layers == ["layer0"]


@pytest.mark.parametrize("front, fires", [(7.1, True), (6.9, False)])
def test_exploding_ratio_at_autotrainer_threshold(front, fires):
    layers = net(grads=[front, 1.0, 0.5, 0.2], last_grad=0.1)  # ratio 71 vs 69
    assert (first_fire(feed(ExplodingGradients(T), flat(4, layers))) == 2) is fires


def test_saturated_tanh_net_with_huge_ratio_is_saturation_not_explosion():
    """N(0, 1) tanh net: first layer gradient 10⁶ × the last, 78 % of units saturated, Adam steps normal."""
    layers = net(grads=[2.5e6, 3e5, 1e4, 50], act="tanh", sat=0.78, act_stds=[0.94] * 4, last_grad=1.4)
    records = flat(5, layers)
    assert first_fire(feed(ExplodingGradients(T), records)) is None
    sat = feed(Saturation(T), records)
    assert sat[2] is not None and sat[2].evidence["grad_ratio"] > 1e6


def test_growing_gradient_norm_with_a_rising_loss_is_an_explosion():
    start = [rec(5 * i, grad_norm=1.0, loss=2.3) for i in range(3)]
    rising = [rec(15 + 5 * i, grad_norm=11.0, loss=5.0 * (i + 1)) for i in range(3)]
    results = feed(ExplodingGradients(T), start + rising)
    assert first_fire(results) == 5 and results[5].criterion == "growth" and results[5].step == 15
    below = [rec(15 + 5 * i, grad_norm=9.0, loss=3.0) for i in range(3)]           # 9 × the start: not yet
    assert first_fire(feed(ExplodingGradients(T), start + below)) is None
    learning = [rec(15 + 5 * i, grad_norm=50.0, loss=1.0) for i in range(3)]       # large but the loss falls
    assert first_fire(feed(ExplodingGradients(T), start + learning)) is None


def test_a_loss_climbing_far_above_its_start_with_bounded_gradients_is_divergence():
    """Batch norm bounds the weight gradients (scale invariance) while a far too high learning rate throws the
    net out of its basin: the loss, not the gradient norm, explodes."""
    start = [rec(5 * i, grad_norm=1.0, loss=2.3) for i in range(3)]
    climbing = [rec(15 + 5 * i, grad_norm=0.8, loss=2.3 * 1.6 * (i + 1)) for i in range(3)]
    results = feed(ExplodingGradients(T), start + climbing)
    assert first_fire(results) == 5 and results[5].criterion == "divergence" and results[5].step == 15
    assert results[5].evidence["loss_factor"] == pytest.approx(3 * 1.6)
    under = [rec(15 + 5 * i, grad_norm=0.8, loss=2.3 * 1.45) for i in range(3)]     # 1.45 × the start: not yet
    assert first_fire(feed(ExplodingGradients(T), start + under)) is None
    blip = [rec(15, loss=9.0), rec(20, loss=9.0), rec(25, loss=2.0), rec(30, loss=9.0)]  # not 3 in a row
    assert first_fire(feed(ExplodingGradients(T), start + blip)) is None


# -- units ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frac, fires", [(0.7, True), (0.69, False)])
def test_dead_units_at_autotrainer_gamma(frac, fires):
    results = feed(DeadUnits(T), flat(3, net(dead=frac)))
    assert (results[2] is not None) is fires
    if fires:
        assert results[2].layers == ["layer0", "layer1", "layer2", "layer3"]
        assert results[2].evidence["frac_dead"] == pytest.approx(0.7)


def test_leaky_relu_units_are_never_dead():
    layers = [layer(i, act="leaky_relu", dead=1.0) for i in range(4)] + [layer(4, act=None, act_std=None)]
    assert first_fire(feed(DeadUnits(T), flat(5, layers))) is None


@pytest.mark.parametrize("frac, fires", [(0.51, True), (0.5, False)])
def test_saturation_above_half(frac, fires):
    results = feed(Saturation(T), flat(3, net(act="sigmoid", sat=frac)))
    assert (results[2] is not None) is fires
    if fires:
        assert results[2].criterion == "sigmoid"


# -- update ratio -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("log10, group", [(-0.9, "high"), (-1.1, None), (-5.1, "low"), (-4.9, None)])
def test_update_ratio_outside_karpathy_range(log10, group):
    layers = net(upds=[10**log10] * 5)
    f = feed(UpdateRatio(T), flat(3, layers))[2]
    assert (f.group if f else None) == group
    if f:
        assert f.evidence["log10_update_ratio"] == pytest.approx(log10)


def test_small_updates_are_not_judged_after_the_schedule_has_annealed():
    det, ctx = UpdateRatio(T), Context(T)
    feed(det, [rec(0, lr=3e-3)], ctx)                                # the peak learning rate
    tiny = net(upds=[1e-7] * 5)
    assert first_fire(feed(det, [rec(5 * i, layers=tiny, lr=1e-4) for i in range(1, 6)], ctx)) is None
    assert first_fire(feed(UpdateRatio(T), [rec(5 * i, layers=tiny, lr=3e-3) for i in range(3)])) == 2


def test_zero_update_counts_as_too_small():
    f = feed(UpdateRatio(T), flat(3, net(upds=[0.0] * 5)))[2]
    assert f is not None and f.group == "low" and f.evidence["log10_update_ratio"] < -5


# -- the loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_nonfinite_loss_is_immediate(loss):
    f = feed(NonFiniteLoss(T), [rec(7, loss=loss)])[0]
    assert f is not None and f.kind == "nan_loss" and f.step == 7 and not f.explainable


def test_loss_spike_needs_a_large_jump_relative_to_the_start():
    base = [rec(5 * i, loss=2.3) for i in range(4)]
    assert feed(LossSpike(T), [*base, rec(20, loss=7.0)])[-1] is not None       # 3.04 × median, +4.7
    assert feed(LossSpike(T), [*base, rec(20, loss=6.8)])[-1] is None           # 2.96 × median
    late = [rec(5 * i, loss=2.3) for i in range(3)] + [rec(15 + 5 * i, loss=0.05) for i in range(5)]
    assert feed(LossSpike(T), [*late, rec(40, loss=0.6)])[-1] is None           # 12 × median, but +0.55 < 1.15


def test_loss_spike_early_in_the_run_and_in_an_epoch_mean():
    assert feed(LossSpike(T), [rec(0, loss=2.5), rec(10, loss=8.0)])[-1] is not None   # the second probe
    assert feed(LossSpike(T), [rec(0, loss=2.5), rec(10, loss=7.0)])[-1] is None       # 2.8 × the first
    ctx = Context(T)
    feed(LossSpike(T), [rec(5 * i, loss=2.3) for i in range(3)], ctx)
    assert epochs(LossSpike(T), [{"train_loss": 463.8}], ctx)[0].criterion == "epoch"
    assert epochs(LossSpike(T), [{"train_loss": 6.8}], ctx)[0] is None                  # 2.96 × the start


def test_oscillation_up_and_down_without_progress():
    swinging = [rec(5 * i, loss=2.3 if i % 2 == 0 else 4.0) for i in range(8)]
    f = feed(Oscillation(T), swinging)[-1]
    assert f is not None and f.evidence["turns"] >= 4
    small = [rec(5 * i, loss=2.3 if i % 2 == 0 else 2.6) for i in range(8)]      # swing 0.3 < 0.5 × 2.3
    assert feed(Oscillation(T), small)[-1] is None
    falling = [rec(5 * i, loss=2.3 * 0.8**i) for i in range(8)]
    assert feed(Oscillation(T), falling)[-1] is None


def test_plateau_on_probes_while_the_learning_rate_is_up():
    stuck = [rec(20 * i, loss=2.30 - 0.001 * i) for i in range(8)]              # the probe's default period
    f = feed(Plateau(T), stuck)[-1]
    assert f is not None and f.criterion == "probes" and f.step == 0
    assert first_fire(feed(Plateau(T), stuck[:7])) is None                       # not a full window yet
    annealed = stuck[:4] + [rec(20 * i, loss=2.3, lr=1e-5) for i in range(4, 8)]
    assert feed(Plateau(T), annealed)[-1] is None
    learning = [rec(20 * i, loss=2.3 * 0.9**i) for i in range(8)]
    assert feed(Plateau(T), learning)[-1] is None


def test_a_plateau_on_probes_spans_a_hundred_steps_whatever_the_probe_period():
    # every 5 steps, 8 probes are 35 steps — an LSTM's usual slow start (2.32 … 2.25, then it learns)
    slow_start = [rec(5 * i, loss=2.32 - 0.002 * i) for i in range(8)]
    assert first_fire(feed(Plateau(T), slow_start)) is None
    stuck = [rec(5 * i, loss=2.32 - 0.001 * i) for i in range(21)]               # 100 steps: judged, on all 21
    f = feed(Plateau(T), stuck)[-1]
    assert first_fire(feed(Plateau(T), stuck)) == 20 and f.evidence["window"] == 21


def test_plateau_on_epochs_unless_the_training_set_is_fit():
    rows = [{"train_loss": v, "train_accuracy": 0.6, "lr": 1e-3} for v in (1.0, 0.995, 0.99)]
    assert epochs(Plateau(T), rows, steps_per_epoch=50)[-1] is not None
    fit = [dict(r, train_accuracy=0.995) for r in rows]
    assert epochs(Plateau(T), fit, steps_per_epoch=50)[-1] is None
    moving = [{"train_loss": v, "train_accuracy": 0.6, "lr": 1e-3} for v in (1.0, 0.97, 0.94)]
    assert epochs(Plateau(T), moving, steps_per_epoch=50)[-1] is None


def test_no_plateau_on_epochs_of_a_few_steps_or_during_a_warm_up():
    rows = [{"train_loss": v, "train_accuracy": 0.6, "lr": 1e-3} for v in (1.0, 0.995, 0.99)]
    # two epochs of one step each (60 examples, batch 64) span fewer than plateau_min_steps: no evidence
    assert epochs(Plateau(T), rows, steps_per_epoch=1)[-1] is None
    assert epochs(Plateau(T), rows, steps_per_epoch=T.plateau_min_steps // 2)[-1] is not None
    # epochs of 21 steps (the digits): judged once enough of them span 100 steps, with the bar per epoch
    flat = [{"train_loss": 1.0 - 0.004 * i, "train_accuracy": 0.6, "lr": 1e-3} for i in range(6)]
    assert first_fire(epochs(Plateau(T), flat, steps_per_epoch=21)) == 5
    # a 1cycle warm-up at 1/25 of the rate the loop was set to: the loss is not moving yet, by plan
    assert epochs(Plateau(T), rows, Context(T, lr=25e-3), steps_per_epoch=50)[-1] is None
    assert epochs(Plateau(T), rows, Context(T, lr=5e-3), steps_per_epoch=50)[-1] is not None   # 0.2 × set: up


# -- overfitting and capacity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gap, fires", [(0.1001, True), (0.0999, False)])
def test_overfitting_gap_on_two_consecutive_epochs(gap, fires):
    rows = [{"train_eval_accuracy": 0.9, "val_accuracy": 0.9 - gap, "train_loss": 0.3, "val_loss": 0.5}] * 2
    results = epochs(Overfitting(T), rows)
    assert results[0] is None
    assert (results[1] is not None) is fires
    if fires:
        assert results[1].criterion == "gap" and results[1].step == 10


def test_overfitting_when_validation_loss_rises_while_training_loss_falls():
    rows = [{"train_loss": t, "val_loss": v, "train_accuracy": 0.8, "val_accuracy": 0.78, "val_loss_se": 0.02}
            for t, v in [(1.0, 1.0), (0.8, 1.05), (0.6, 1.12)]]
    results = epochs(Overfitting(T), rows)
    assert results[1] is None and results[2] is not None and results[2].criterion == "val_rising"
    noisy = [dict(r, val_loss=1.0 + 0.015 * i) for i, r in enumerate(rows)]       # up by < 2 standard errors
    assert epochs(Overfitting(T), noisy)[-1] is None


# The default CNN with SGD at lr 0.5, epochs 4-6 as measured: batch-norm statistics lag weights that move fast,
# so the training *batches* look fine while the evaluated model is bad on both splits alike.
BN_LAG = [{"train_loss": 0.302, "train_accuracy": 0.916, "train_eval_loss": 0.305, "train_eval_accuracy": 0.887,
           "val_loss": 0.413, "val_accuracy": 0.858},
          {"train_loss": 0.157, "train_accuracy": 0.954, "train_eval_loss": 1.184, "train_eval_accuracy": 0.762,
           "val_loss": 1.342, "val_accuracy": 0.762},
          {"train_loss": 0.123, "train_accuracy": 0.964, "train_eval_loss": 2.215, "train_eval_accuracy": 0.573,
           "val_loss": 2.236, "val_accuracy": 0.562}]


def test_overfitting_compares_the_training_split_evaluated_like_the_validation_split():
    assert epochs(Overfitting(T), BN_LAG)[-1] is None                    # both splits bad alike: no overfitting
    running = [{k: v for k, v in row.items() if not k.startswith("train_eval")} for row in BN_LAG]
    assert epochs(Overfitting(T), running)[-1] is None                   # nor on the running means: the held-out
                                                                          # accuracy collapsed (unstable, not memorised)
    memorised = [dict(row, train_eval_loss=0.01, train_eval_accuracy=1.0) for row in BN_LAG]
    f = epochs(Overfitting(T), memorised)[-1]                             # a real gap on like-for-like numbers
    assert f is not None and f.evidence["train_accuracy"] == 1.0 and f.evidence["train_evaluated"] == 1.0


def test_overfitting_is_not_judged_before_the_model_has_learned():
    # the loss rule: a validation loss rising beyond its noise while the training loss falls
    rows = [{"train_loss": t, "val_loss": v, "val_loss_se": 0.02, "val_accuracy": 0.12}
            for t, v in [(2.2, 2.3), (1.8, 2.4), (1.5, 2.5)]]
    ctx = Context(T)
    ctx.add_record(rec(0, loss=2.5))                                      # the untrained net's loss: ~ln 10
    assert all(f is None for f in epochs(Overfitting(T), rows, ctx))     # validation never beat 0.9 × 2.5
    learned = [dict(r, val_loss=r["val_loss"] - 0.3) for r in rows]
    ctx = Context(T)
    ctx.add_record(rec(0, loss=2.5))
    assert epochs(Overfitting(T), learned, ctx)[-1] is not None
    # the gap rule: the training split must be fit well above chance (ten classes: 23.5 %), evaluated
    gap_rows = [{"train_eval_accuracy": 0.2, "val_accuracy": 0.05, "train_loss": 2.2, "val_loss": 2.3}] * 3
    ctx = Context(T, num_classes=10)
    assert all(f is None for f in epochs(Overfitting(T), gap_rows, ctx))
    fit = [dict(r, train_eval_accuracy=1.0) for r in gap_rows]           # memorised: 100 % vs 5 %
    assert epochs(Overfitting(T), fit, Context(T, num_classes=10))[-1] is not None


def test_overfitting_is_not_judged_while_the_run_is_unstable():
    rows = [{"train_eval_accuracy": 0.95, "val_accuracy": 0.7, "train_loss": 0.2, "val_loss": 0.9}] * 5
    ctx = Context(T)
    ctx.unstable_step = 25                                                # e.g. a loss spike inside epoch 3
    results = epochs(Overfitting(T), rows, ctx)
    assert results[:4] == [None] * 4                       # epochs end at steps 10, 20, 30, 40: the third unstable
    assert results[4] is not None and results[4].step == 40  # the fourth and fifth were stable: named from the fourth


def test_no_gap_alarm_while_the_validation_loss_still_improves():
    # the default MLP after 2-4 epochs: a gap of ~10 points on 400 examples, validation still getting better
    rows = [{"train_loss": 1.63, "train_eval_accuracy": 0.55, "val_loss": 1.56, "val_accuracy": 0.43},
            {"train_loss": 1.42, "train_eval_accuracy": 0.56, "val_loss": 1.47, "val_accuracy": 0.44},
            {"train_loss": 1.33, "train_eval_accuracy": 0.57, "val_loss": 1.40, "val_accuracy": 0.45}]
    assert epochs(Overfitting(T), rows)[1:] == [None, None]
    stalled = rows + [dict(rows[-1], train_loss=v, val_loss=1.40) for v in (1.2, 1.1)]
    assert epochs(Overfitting(T), stalled)[-1] is not None                # the gap stays, validation stopped


def test_no_gap_alarm_while_the_training_loss_itself_rises():
    # a huge learning rate: the batches' accuracy runs ahead of the evaluated model and the loss goes up
    rows = [{"train_loss": 1.95, "train_eval_accuracy": 0.73, "val_loss": 1.9, "val_accuracy": 0.23},
            {"train_loss": 2.28, "train_eval_accuracy": 0.75, "val_loss": 1.8, "val_accuracy": 0.25},
            {"train_loss": 2.50, "train_eval_accuracy": 0.74, "val_loss": 1.7, "val_accuracy": 0.27}]
    assert epochs(Overfitting(T), rows) == [None, None, None]
    settled = rows + [dict(rows[-1], train_loss=v) for v in (2.4, 2.3)]     # then it falls: judged again
    assert epochs(Overfitting(T), settled)[-1] is not None


def test_the_doctor_marks_the_run_unstable_on_an_instability_finding():
    from tricklab.diagnose.doctor import Doctor

    doctor = Doctor()
    doctor.observe(rec(0, loss=2.3))
    assert doctor.ctx.unstable_step is None
    doctor.observe(rec(20, loss=float("nan")))
    assert doctor.ctx.unstable_step == 20
    restored = Doctor()
    restored.load_state_dict(doctor.state_dict())
    assert restored.ctx.unstable_step == 20


@pytest.mark.parametrize("params, fires", [(10_001, True), (10_000, False)])
def test_too_many_parameters_per_example(params, fires):
    ctx = Context(T, num_params=params, num_examples=1000)
    f = feed(TooManyParameters(T), [rec(0)], ctx)[0]
    assert (f is not None) is fires
    assert first_fire(feed(TooManyParameters(T), [rec(0)])) is None              # unknown sizes: no judgement


# -- inputs -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mean, std, absmax, criterion", [
    (0.0, 10.1, 30.0, "large"),
    (0.0, 9.9, 30.0, None),
    (0.0, 1.0, 1001.0, "outliers"),
    (0.0, 1.0, 999.0, None),          # standardised sparse features reach |z| ≈ √N: no alarm at 50
    (0.0, 0.009, 0.05, "small"),
    (4900.0, 6000.0, 16000.0, "large"),
    (0.0, 1.0, math.inf, "nonfinite"),
])
def test_unscaled_inputs(mean, std, absmax, criterion):
    f = feed(UnscaledInputs(T), flat(3, net(), mean=mean, std=std, absmax=absmax))[2]
    assert (f.criterion if f else None) == criterion


def test_inputs_without_statistics_are_not_judged():
    assert first_fire(feed(UnscaledInputs(T), flat(4, net(), mean=math.nan, std=math.nan, absmax=math.nan))) is None


# -- thresholds ---------------------------------------------------------------------------------------------------
def test_thresholds_are_configurable_and_validated():
    once = Thresholds(persist=1, dead_fraction=0.5)
    assert feed(DeadUnits(once), [rec(0, layers=net(dead=0.5))])[0] is not None
    with pytest.raises(ValueError):
        Thresholds(persist=0)
    with pytest.raises(ValueError):
        Thresholds(update_log10_low=-1.0, update_log10_high=-5.0)
    with pytest.raises(TypeError):
        Thresholds(persist=True)
