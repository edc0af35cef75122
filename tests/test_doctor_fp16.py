"""float16's range: the doctor reads the loss scaler, never calls its skipped steps an explosion, and names
overflow and underflow — judged on records, then in real float16 loops on the CPU (autocast + GradScaler("cpu"),
a hand-written loop and Lightning's mixed-precision plugin)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tricklab as tl
from tests.test_detectors import net, rec
from tricklab.diagnose.advice import describe
from tricklab.diagnose.detectors import Finding
from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.repair import POLICIES


def half(step: int, *, scale: float | None = 2.0**16, skipped: bool = False, subnormal: float | None = 0.0,
         loss: float | None = None, layers=None):
    r = rec(step, loss=2.3 * 0.998**step if loss is None else loss, layers=layers, grad_norm=math.inf if skipped else 1.0)
    return dataclasses.replace(r, compute_dtype="float16", loss_scale=scale, grad_subnormal=subnormal)


def kinds(doctor: Doctor, records) -> list[str]:
    return [a.kind for r in records for a in doctor.observe(r)]


# -- on records --------------------------------------------------------------------------------------------------
def test_a_step_the_scaler_skipped_is_no_explosion_and_calibration_is_no_overflow():
    doctor = Doctor()
    # the scaler halves its way down from 2^16 to 2^10 in the first steps, then one skip when it tries 2^11
    records = [half(0, scale=2.0**15, skipped=True), half(20, scale=2.0**10)]
    records += [half(s, scale=2.0**10) for s in range(40, 2000, 20)]
    records += [half(2000, scale=2.0**10, skipped=True)] + [half(s, scale=2.0**10) for s in range(2020, 2400, 20)]
    assert kinds(doctor, records) == []
    assert doctor.ctx.start_grad_norm == 1.0          # a skipped step is not the run's state


def test_a_scale_that_keeps_halving_is_float16_overflow():
    doctor = Doctor()
    scales = [2.0**14 / 2 ** (k // 2) for k in range(30)]     # a skip every other 20-step interval: 2.5 %
    assert kinds(doctor, [half(100 + 20 * k, scale=s) for k, s in enumerate(scales)]) == []
    doctor = Doctor()
    scales = [2.0**14 / 2**k for k in range(12)]              # a skip every 20 steps ... and more: 5 % +
    found = kinds(doctor, [half(100 + 20 * k, scale=s / (2 if k % 4 == 3 else 1)) for k, s in enumerate(scales)])
    assert found == ["fp16_overflow"]
    [alarm] = doctor.alarms
    assert alarm.evidence["span"] >= 200 and alarm.evidence["skip_share"] > 0.05
    assert "skipped" in alarm.message and alarm.advice[0].startswith("precision=bf16")


def test_a_scale_below_one_is_overflow_at_the_gradients_true_size():
    doctor = Doctor()
    found = kinds(doctor, [half(s, scale=0.25) for s in (0, 5, 10)])
    assert found == ["fp16_overflow"] and "below 1" in doctor.alarms[0].message


def test_a_forward_overflow_is_named_by_its_layer_not_as_nan_or_exploding_gradients():
    doctor = Doctor()
    layers = net()
    layers[1] = dataclasses.replace(layers[1], pre_std=math.nan, pre_mean=math.inf)
    layers[2] = dataclasses.replace(layers[2], pre_std=math.nan)
    r = dataclasses.replace(half(0, layers=layers, loss=math.nan), grad_norm=math.nan)
    assert kinds(doctor, [r]) == ["fp16_overflow"]
    assert doctor.alarms[0].layer == "layer1" and "65504" in doctor.alarms[0].message
    # the same NaN loss with NaN weights is a diverged run (any precision): the NaN-loss alarm
    broken = [dataclasses.replace(x, weight_norm=math.nan) for x in net()]
    assert kinds(Doctor(), [dataclasses.replace(half(0, layers=broken, loss=math.nan), grad_norm=math.nan)]) \
        == ["nan_loss", "exploding_gradients"]
    # and in float32 a NaN loss stays the NaN-loss alarm
    assert kinds(Doctor(), [rec(0, loss=math.nan)]) == ["nan_loss"]


def test_underflow_needs_a_persistent_share_above_five_percent():
    assert kinds(Doctor(), [half(5 * i, subnormal=0.04) for i in range(6)]) == []
    doctor = Doctor()
    assert kinds(doctor, [half(5 * i, subnormal=0.3, scale=None) for i in range(3)]) == ["fp16_underflow"]
    assert "a loss scaler: torch.amp.GradScaler()" in doctor.alarms[0].advice[0]
    scaled = Doctor()
    kinds(scaled, [half(5 * i, subnormal=0.3, scale=2.0**16) for i in range(3)])
    assert scaled.alarms[0].advice[0].startswith("raise the loss scale")
    assert kinds(Doctor(), [rec(5 * i) for i in range(3)]) == []   # float32: never judged


def test_the_skip_ledger_survives_a_resume():
    records = [half(100 + 20 * k, scale=2.0**14 / 2 ** (k + k // 3)) for k in range(12)]
    straight = Doctor()
    want = kinds(straight, records)
    first = Doctor()
    kinds(first, records[:6])
    resumed = Doctor()
    resumed.load_state_dict(first.state_dict())
    assert kinds(resumed, records[6:]) == want == ["fp16_overflow"]


def test_every_criterion_has_words_and_a_repair():
    for kind, criteria in (("fp16_overflow", ("forward", "scale", "skips")),
                           ("fp16_underflow", ("subnormal", "weights"))):
        for criterion in criteria:
            message, advice = describe(Finding(kind, 7, criterion, layers=["body.0"],
                                               evidence={"loss": math.nan, "loss_scale": 0.5}), lr=1e-3)
            assert "7" in message and message.endswith(".") and len(advice) >= 3
        assert POLICIES[kind][0].overrides == ("precision=bf16",)


# -- real float16 loops on the CPU -------------------------------------------------------------------------------
def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def _loop(*, steps: int = 240, init_scale: float | None = 2.0**16, loss_factor: float = 1.0, x_factor: float = 1.0,
          tell: bool = True, every: int = 5) -> tuple[tl.Watch, Doctor]:
    """A hand-written float16 loop: autocast on the CPU, a GradScaler unless ``init_scale`` is None."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale or 1.0, enabled=init_scale is not None)
    doctor = Doctor()
    told = {"scaler": scaler if init_scale is not None else None} if tell else {}
    w = tl.watch(model, opt, every=every, doctor=doctor, **told)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 40, generator=g)
    y = x[:, :10].argmax(1)
    x = x * x_factor
    for _ in range(steps):
        i = torch.randint(0, 1024, (64,), generator=g)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x[i]), y[i]) * loss_factor
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        w.step(loss)
    w.close()
    return w, doctor


@pytest.mark.parametrize("tell", [True, False])
def test_a_healthy_float16_loop_raises_nothing_even_when_its_scaler_starts_far_too_high(one_thread, tell):
    w, doctor = _loop(init_scale=2.0**40, tell=tell)
    assert doctor.alarms == []                 # before: "exploding gradients, ‖g‖ = inf" at step 0
    assert all(r.compute_dtype == "float16" for r in w.records)
    assert w.records[0].overflow_skip and w.records[-1].loss < 1.0
    # told, or found on the call stack: scaler.step(optimizer) called the watched optimizer
    assert isinstance(w.probe.scaler, torch.amp.GradScaler)
    assert w.records[-1].loss_scale < 2.0**40 and w.records[-1].grad_subnormal is not None


def test_without_the_optimizer_the_scaler_stays_unknown_and_underflow_unjudged(one_thread):
    model = _mlp()
    w = tl.watch(model, every=1, doctor=Doctor())       # no optimizer: no step hook, no call stack to read
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.cross_entropy(model(torch.randn(8, 40)), torch.zeros(8, dtype=torch.long))
    loss.backward()
    record = w.step(loss)
    assert record.compute_dtype == "float16" and record.grad_subnormal is None and record.loss_scale is None


@pytest.mark.parametrize("tell", [True, False])
def test_float16_without_a_loss_scaler_underflows(one_thread, tell):
    """Told, or seen: the loop steps its optimizer itself, so no scaler runs."""
    w, doctor = _loop(init_scale=None, loss_factor=1e-3, tell=tell)
    assert doctor.diagnosis() == ["fp16_underflow"]
    assert "no loss scaler" in doctor.alarms[0].message
    assert all(r.grad_subnormal is not None for r in w.records)


def test_gradients_beyond_float16_at_any_scale_are_overflow(one_thread):
    _, doctor = _loop(loss_factor=1e9)
    assert "fp16_overflow" in doctor.diagnosis() and "exploding_gradients" not in doctor.diagnosis()


def test_a_forward_pass_beyond_65504_is_overflow_named_at_its_layer(one_thread):
    _, doctor = _loop(x_factor=1e5, steps=20)
    overflow = [a for a in doctor.alarms if a.kind == "fp16_overflow"]
    assert overflow and overflow[0].layer == "0" and "forward pass" in overflow[0].message
    assert "nan_loss" not in doctor.diagnosis()


def test_bfloat16_is_recorded_and_never_judged_for_float16_range(one_thread):
    model = _mlp()
    w = tl.watch(model, every=1, doctor=Doctor(), scaler=None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(8, 40)).float().pow(2).mean()
    loss.backward()
    [record] = [w.step(loss)]
    assert record.compute_dtype == "bfloat16" and record.loss_scale is None and record.grad_subnormal is None


def test_lightning_reads_the_scaler_of_its_mixed_precision_plugin(one_thread):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.plugins import MixedPrecision

    from tricklab.integrations.lightning import DoctorCallback

    class Module(pl.LightningModule):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.net, self.factor = _mlp(), factor

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y) * self.factor

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 40, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :10].argmax(1)), batch_size=32)
    found = {}
    for factor in (1.0, 1e9):
        callback = DoctorCallback(every=2, verbose=False)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
        trainer = pl.Trainer(max_epochs=3, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
                             callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu")
        trainer.fit(Module(factor), data)
        assert callback.probe.scaler is scaler
        found[factor] = [a.kind for a in callback.alarms]
    assert found[1.0] == []
    assert "fp16_overflow" in found[1e9] and "exploding_gradients" not in found[1e9]



def test_a_model_whose_weights_are_float16_is_named_at_once(one_thread):
    """A ``.half()`` model has no float32 copy of its weights: updates below 2^−11 of a weight vanish and Adam's
    ε = 1e-8 is 0 in float16 — named as the cause beside the NaN it produces; a mixed-precision model is not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3)).half()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    doctor = Doctor()
    w = tl.watch(model, opt, every=5, doctor=doctor)
    for _ in range(20):
        loss = F.cross_entropy(model(torch.randn(32, 20).half()).float(), torch.randint(0, 3, (32,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.step(loss)
    [alarm] = [a for a in doctor.alarms if a.kind == "fp16_underflow"]
    assert alarm.step == 0 and "float16" in alarm.message and alarm.advice[0].startswith("mixed precision")
    assert w.records[0].weight_dtype == "float16"
    mixed, _ = _loop(steps=10)
    assert mixed.records[0].weight_dtype is None
