"""The Doctor: deduplication, causes before symptoms, NaN at once, reset and resume, bounded memory, words a
person can act on — and real networks: each injected problem named, nothing on healthy ones."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.test_detectors import layer, net, rec
from tricklab.diagnose.advice import describe
from tricklab.diagnose.detectors import Finding
from tricklab.diagnose.doctor import DETECTORS, Doctor
from tricklab.diagnose.records import ALARM_KINDS, ProbeRecord
from tricklab.diagnose.watch import watch
from tricklab.models import build_model
from tricklab.tricks.init import init_model_


def observe_all(doctor: Doctor, records: list[ProbeRecord]) -> list[str]:
    """Kinds of the new alarms, in order."""
    return [a.kind for r in records for a in doctor.observe(r)]


def test_every_detector_names_a_known_kind():
    assert {d.kind for d in DETECTORS} == set(ALARM_KINDS)


def test_one_alarm_per_kind_first_step_kept_evidence_and_layers_updated():
    doctor = Doctor()
    first = [rec(5 * i, layers=net(dead=0.8)) for i in range(3)]
    assert observe_all(doctor, first) == ["dead_units"]
    worse = net(dead=0.9) + [layer(9, dead=0.95)]
    assert observe_all(doctor, [rec(15, layers=worse), rec(20, layers=worse)]) == []
    [alarm] = doctor.alarms
    assert alarm.step == 0 and alarm.layer == "layer0"
    assert alarm.evidence["max_frac_dead"] == pytest.approx(0.95)
    assert "layer9" in alarm.layers
    assert doctor.diagnosis() == ["dead_units"]


def test_a_cause_silences_its_symptoms_but_never_a_nan():
    doctor = Doctor()
    dead = net(dead=1.0, grads=[0.0, 0.0, 0.0, 0.0], upds=[0.0] * 5, last_grad=0.1)
    kinds = observe_all(doctor, [rec(5 * i, layers=dead) for i in range(12)])
    assert kinds == ["dead_units"]                        # not vanishing gradients, update ratio or plateau
    assert observe_all(doctor, [rec(60, loss=math.nan, layers=dead)]) == ["nan_loss"]


def test_update_ratio_high_and_low_are_two_alarms():
    doctor = Doctor()
    observe_all(doctor, [rec(5 * i, loss=2.3 * 0.8**i, layers=net(upds=[0.3] * 5)) for i in range(3)])
    observe_all(doctor, [rec(15 + 5 * i, loss=1.0 * 0.8**i, layers=net(upds=[1e-7] * 5)) for i in range(3)])
    groups = sorted("high" if a.evidence["log10_update_ratio"] > -3 else "low" for a in doctor.alarms)
    assert groups == ["high", "low"]


def test_nonfinite_loss_reported_once_from_any_source():
    doctor = Doctor()
    [alarm] = doctor.nonfinite_loss(42)
    assert alarm.kind == "nan_loss" and alarm.step == 42
    assert doctor.nonfinite_loss(43) == []
    assert doctor.observe(rec(45, loss=math.inf)) == []
    assert Doctor().end_epoch(0, 50, {"train_loss": math.nan})[0].kind == "nan_loss"


def test_healthy_since_tells_when_a_repair_held():
    doctor = Doctor()
    observe_all(doctor, [rec(5 * i, layers=net(dead=0.8)) for i in range(5)])      # steps 0..20
    assert not doctor.healthy_since(25)                                             # nothing judged since
    observe_all(doctor, [rec(25 + 5 * i, layers=net()) for i in range(3)])          # steps 25..35, clean
    assert doctor.healthy_since(25)
    assert not doctor.healthy_since(15)                                             # dead units seen at 20


def test_reset_starts_afresh_and_capacity_is_advice_not_a_diagnosis():
    doctor = Doctor(num_params=100_000, num_examples=1000)
    assert observe_all(doctor, [rec(5 * i, layers=net(dead=0.8)) for i in range(3)]) == ["dead_units"]
    assert [a.kind for a in doctor.info] == ["too_many_parameters"]      # 100 parameters per example: advice
    assert "too_many_parameters" not in doctor.diagnosis()
    doctor.reset()
    assert doctor.diagnosis() == [] and [a.kind for a in doctor.info] == ["too_many_parameters"]
    assert len(doctor.ctx.records) == 0
    assert observe_all(doctor, [rec(100 + 5 * i, layers=net(dead=0.8)) for i in range(3)]) == ["dead_units"]
    resumed = Doctor()
    resumed.load_state_dict(json.loads(json.dumps(doctor.state_dict())))
    assert [a.kind for a in resumed.info] == ["too_many_parameters"]


def test_state_dict_resumes_the_same_judgement():
    records = [rec(5 * i, loss=2.3, layers=net(grads=[1e-6] * 4, last_grad=0.1)) for i in range(6)]
    whole = Doctor()
    expected = observe_all(whole, records)
    part = Doctor()
    observe_all(part, records[:2])                         # two probes into the persistence window
    resumed = Doctor()
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    assert observe_all(resumed, records[2:]) == expected == ["vanishing_gradients"]
    assert [a.to_dict() for a in resumed.alarms] == [a.to_dict() for a in whole.alarms]


def test_memory_does_not_grow_with_the_run():
    doctor = Doctor(max_records=32)
    layers = net()
    for step in range(0, 20_000, 5):
        doctor.observe(rec(step, loss=1.0 + 0.2 * math.sin(step), layers=layers))
        if step % 500 == 0:
            doctor.end_epoch(step // 500, step, {"train_loss": 1.0, "val_loss": 1.0, "train_accuracy": 0.9,
                                                 "val_accuracy": 0.9, "lr": 1e-3})
    assert len(doctor.ctx.records) == 32 and len(doctor.ctx.epochs) <= 64
    assert len(json.dumps(doctor.state_dict())) < 200_000
    assert len(doctor.alarms) <= len(ALARM_KINDS) + 1


def test_messages_say_where_since_when_and_the_numbers_and_advice_names_overrides():
    doctor = Doctor()
    stds = [0.07 * 0.05**i for i in range(8)]
    dying = net(8, grads=[1e-21] * 8, act_stds=stds, last_grad=1e-21)
    observe_all(doctor, [rec(10 + 5 * i, layers=dying, lr=3e-3) for i in range(3)])
    [alarm] = doctor.alarms
    assert alarm.kind == "vanishing_gradients" and "layer0" in alarm.message and "step 10" in alarm.message
    assert "forward signal" in alarm.message and any("init.scheme=he" in a for a in alarm.advice)
    assert any("model.norm=batch" in a for a in alarm.advice)
    assert alarm.brief() == {"kind": "vanishing_gradients", "layer": "layer0", "step": 10, "message": alarm.message}

    boom = Doctor()
    boom.observe(rec(0, layers=net(grads=[math.inf, 1, 1, 1]), grad_norm=math.inf, lr=0.05))
    [alarm] = boom.alarms
    assert alarm.advice[0].startswith("clip.mode=norm clip.threshold=1")
    assert any(a.startswith("optimizer.lr=0.005") for a in alarm.advice)


CRITERIA = {"vanishing_gradients": ["ratio", "signal"], "exploding_gradients": ["nonfinite", "growth", "ratio"],
            "update_ratio": ["high", "low"], "plateau": ["probes", "epochs"], "loss_spike": ["jump", "epoch"], "overfitting": ["gap", "val_rising"],
            "unscaled_inputs": ["large", "small", "outliers", "nonfinite"], "saturation": ["tanh", "sigmoid"],
            "vanishing_init": ["signal", "gradient"]}


@pytest.mark.parametrize("kind", ALARM_KINDS)
def test_every_kind_and_criterion_has_words_and_ranked_advice(kind):
    for criterion in CRITERIA.get(kind, ["any"]):
        finding = Finding(kind=kind, step=7, criterion=criterion, layers=["body.layer1.weights", "out"],
                          evidence={"num_params": 5000, "num_examples": 100, "log10_update_ratio": -6.0})
        message, advice = describe(finding, lr=0.003)
        assert message.endswith(".") and len(advice) >= 3
        if kind != "too_many_parameters":
            assert "7" in message
        if kind in ("vanishing_gradients", "dead_units", "saturation", "update_ratio") and criterion != "nonfinite":
            assert "body.layer1.weights" in message
    low = describe(Finding("update_ratio", 0, "low", evidence={"log10_update_ratio": -6.0}), lr=1e-6)[1][0]
    assert low.startswith("optimizer.lr=0.001")                 # 1e-6 × 10^(−3 + 6): back to ≈ 1e-3 updates


def test_saturation_message_names_the_cause_of_a_huge_ratio():
    doctor = Doctor()
    tanh = net(grads=[2.5e6, 3e5, 1e4, 50], act="tanh", sat=0.78, act_stds=[0.94] * 4, last_grad=1.4)
    assert observe_all(doctor, [rec(5 * i, loss=11.0, layers=tanh) for i in range(6)]) == ["saturation"]
    assert "not a learning-rate explosion" in doctor.alarms[0].message


# -- real networks, a short training each ------------------------------------------------------------------------
def teacher_data(n: int = 3072, features: int = 20, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised Gaussian inputs labelled by a fixed random linear teacher: learnable in ~100 steps and
    without a train/validation gap, so a healthy net has nothing to be warned about."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    return x, (x @ torch.randn(features, classes, generator=g)).argmax(dim=1)


@pytest.fixture(autouse=True)
def _small_and_steady(one_thread):
    """Saturated sigmoid nets make gradients of ~1e-40, which CPUs compute ~100× slower (denormal floats);
    and these nets are too small to gain from a second thread on a shared machine."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)  # PyTorch's default


def train_watched(model: nn.Module, *, opt: str = "adam", lr: float = 1e-3, epochs: int = 3, scale: float = 1.0,
                  every: int = 5, seed: int = 0) -> Doctor:
    """A hand-written loop under ``watch`` (2,560 examples, 40 steps per epoch), with the epoch metrics given
    to the doctor."""
    torch.manual_seed(seed)
    x, y = teacher_data()
    x = x * scale
    n = 2560
    x_train, y_train, x_val, y_val = x[:n], y[:n], x[n:], y[n:]
    optimizer = (torch.optim.Adam(model.parameters(), lr=lr) if opt == "adam"
                 else torch.optim.SGD(model.parameters(), lr=lr))
    doctor = Doctor()
    step = 0
    with watch(model, optimizer, every=every, doctor=doctor) as w:
        for epoch in range(epochs):
            model.train()
            losses, correct = [], 0
            for idx in torch.randperm(n).split(64):
                out = model(x_train[idx])
                loss = F.cross_entropy(out, y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                w.step(loss, epoch=epoch)
                if not torch.isfinite(loss):
                    doctor.nonfinite_loss(step)
                    return doctor
                losses.append(loss.item())
                correct += int((out.argmax(1) == y_train[idx]).sum())
                step += 1
            model.eval()
            with torch.no_grad():
                out = model(x_val)
            doctor.end_epoch(epoch, step, {
                "train_loss": sum(losses) / len(losses), "train_accuracy": correct / n, "lr": lr,
                "val_loss": F.cross_entropy(out, y_val).item(), "val_accuracy": (out.argmax(1) == y_val).float().mean().item()})
    return doctor


def model(name: str, *, init: str = "he", **kw: object) -> nn.Module:
    torch.manual_seed(0)
    m = build_model(name, (20,), 10, **kw)
    init_model_(m, init)
    return m


def test_deep_sigmoid_net_with_unit_normal_init_is_named():
    doctor = train_watched(model("mlp", init="normal", depth=20, width=64, activation="sigmoid", norm="none"))
    assert {"vanishing_gradients", "saturation"} & set(doctor.diagnosis())


def test_relus_behind_a_huge_negative_bias_are_dead():
    m = model("mlp", depth=6, width=64, norm="none")
    with torch.no_grad():
        for k in (1, 2, 3):
            m.body[k - 1].weights.bias.fill_(-10.0)
    assert "dead_units" in train_watched(m).diagnosis()


def test_sgd_with_a_learning_rate_far_too_high_is_named():
    kinds = set(train_watched(model("mlp", depth=4, width=64), opt="sgd", lr=50.0).diagnosis())
    assert kinds & {"exploding_gradients", "nan_loss", "loss_spike", "update_ratio"}


def test_inputs_times_1000_are_unscaled():
    doctor = train_watched(model("mlp", depth=4, width=64), scale=1000.0, epochs=1)
    assert doctor.diagnosis()[0] == "unscaled_inputs"


@pytest.mark.parametrize("name, kw", [
    ("cnn", {}),                                        # the default CNN: depth 4, width 32, batch norm, He init
    ("resnet", {"depth": 20}),                          # ResNet-20 with batch norm
    ("mlp", {"width": 64}),
])
def test_no_alarm_on_healthy_networks(name, kw):
    doctor = train_watched(model(name, **kw))
    assert len(doctor.ctx.records) == 24 and len(doctor.ctx.epochs) == 3   # it did watch: 120 steps, 3 epochs
    assert doctor.alarms == [], [a.message for a in doctor.alarms]
