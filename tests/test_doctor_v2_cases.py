"""Doctor v2 (issue 15) on models written as users write them: functional activations, their own init, batch
norm, residual blocks — each problem named as its cause, nothing on the healthy ones, in a plain loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.probes import Probe
from tricklab.diagnose.watch import watch

N_IN, CLASSES, BATCH = 20, 10, 64


def teacher(n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised inputs and the labels of a random two-layer teacher (learnable, 10 classes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_IN, generator=g)
    w1, w2 = torch.randn(N_IN, 32, generator=g), torch.randn(32, CLASSES, generator=g)
    return x, (torch.tanh(x @ w1) @ w2).argmax(1)


class Net(nn.Module):
    """The shape of most hand-written MLPs: Linear layers, the activation a function call in forward."""

    def __init__(self, act=F.relu, depth: int = 3, width: int = 64, norm: bool = False, head=None) -> None:
        super().__init__()
        dims = [N_IN] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(width) for _ in range(depth)) if norm else None
        self.out = nn.Linear(width, CLASSES)
        self.act, self.head = act, head

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            if self.act is not None:
                x = self.act(x)
        x = self.out(x)
        return self.head(x) if self.head is not None else x


class Residual(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(N_IN, width)
        self.f1, self.f2 = nn.Linear(width, width), nn.Linear(width, width)
        self.bn1, self.bn2 = nn.BatchNorm1d(width), nn.BatchNorm1d(width)
        self.out = nn.Linear(width, CLASSES)

    def forward(self, x):
        h = F.relu(self.inp(x))
        h = F.relu(h + self.bn2(self.f2(F.relu(self.bn1(self.f1(h))))))
        return self.out(h)


def scaled_(model: nn.Module, factor: float, only: str | None = None) -> nn.Module:
    """The user's own init: Kaiming normal × factor (on the layers whose name starts with ``only``), zero biases."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and (only is None or name.startswith(only)):
                nn.init.kaiming_normal_(m.weight)
                m.weight.mul_(factor)
                nn.init.zeros_(m.bias)
    return model


def train_watched(model: nn.Module, opt: torch.optim.Optimizer | None = None, steps: int = 60, every: int = 5,
                  seed: int = 0, **doctor_kw) -> Doctor:
    x, y = teacher(seed=seed)
    opt = opt or torch.optim.Adam(model.parameters(), lr=1e-3)
    doctor = Doctor(num_classes=CLASSES, optimizer=opt, **doctor_kw)
    w = watch(model, opt, every=every, doctor=doctor)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (BATCH,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.step(loss)
    w.close()
    return doctor


# -- activation capture independent of modules -------------------------------------------------------------------
@pytest.mark.parametrize("act, family", [
    (F.relu, "relu"), (torch.relu, "relu"), (lambda h: h.clamp(min=0), "relu"), (torch.sigmoid, "sigmoid"),
    (torch.tanh, "tanh"), (lambda h: h.tanh(), "tanh"), (F.gelu, "gelu"), (nn.ReLU(), "relu"),
])
def test_functional_activations_are_measured_and_paired_with_their_layer(act, family):
    torch.manual_seed(0)
    model = Net(act=act, depth=2)
    x = torch.randn(BATCH, N_IN)
    probe = Probe(model, every=1)
    probe.begin(0, x)
    loss = F.cross_entropy(model(x), torch.zeros(BATCH, dtype=torch.long))
    loss.backward()
    record = probe.after_step(loss)
    hidden = [layer for layer in record.layers if layer.name.startswith("layers.")]
    assert [layer.activation for layer in hidden] == [family, family]
    assert record.layers[-1].activation is None                            # the logits layer has none
    with torch.no_grad():
        u = model.layers[0](x)
        a = act(u)
    assert hidden[0].act_std == pytest.approx(float(a.std(unbiased=False)), rel=1e-4)
    if family == "relu":
        assert hidden[0].frac_dead == pytest.approx(float(((u <= 0).all(0)).float().mean()))
    if family == "sigmoid":
        assert hidden[0].frac_saturated == pytest.approx(float(((a - 0.5).abs() > 0.47).float().mean()), abs=1e-6)
    assert record.hidden_nonlinear == 2 and record.output_dim == CLASSES


def test_the_capture_is_off_outside_probe_steps():
    model = Net()
    probe = Probe(model, every=10)
    probe.begin(3, torch.randn(4, N_IN))                                  # not a probe step
    assert not probe._capture.active
    probe.begin(10, torch.randn(4, N_IN))
    assert probe._capture.active
    model(torch.randn(4, N_IN))                                           # the forward pass ends: capture off
    assert not probe._capture.active
    probe.close()


# -- cause-level checks at initialisation -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_an_exploding_init_is_named_at_step_0_with_the_first_bad_layer(seed):
    torch.manual_seed(seed)
    model = scaled_(scaled_(Net(depth=4), 1.0), 10.0, only="layers.1")     # only the second layer × 10 ...
    scaled_(model, 10.0, only="layers.2")                                  # ... and the third
    doctor = train_watched(model, steps=6, seed=seed)
    alarm = next(a for a in doctor.alarms if a.kind == "exploding_init")
    assert alarm.step == 0 and alarm.layer == "layers.1"
    assert alarm.evidence["weight_gain"] == pytest.approx(10 * math.sqrt(2), rel=0.1)   # 10 × He's √2
    assert alarm.evidence["loss_over_ln_c"] > 3
    assert "ln C" in alarm.message and "layers.1" in alarm.message


def test_a_vanishing_init_is_named_with_where_the_signal_dies():
    torch.manual_seed(0)
    doctor = train_watched(scaled_(Net(depth=8), 0.05), steps=6)
    alarm = next(a for a in doctor.alarms if a.kind == "vanishing_init")
    assert alarm.step == 0 and alarm.layer == "layers.0"
    assert alarm.evidence["signal_min"] < 1e-3


def test_a_vanishing_init_whose_biases_keep_the_signal_is_named_by_its_gradient():
    """N(0, 0.01) weights with PyTorch's default biases in a 12-layer tanh net: the biases (U(±1/√64)) hold
    the forward signal at ≈ 0.05, but every backward step multiplies by the weights' gain ≈ 0.08 — the first
    layer's gradient is ~1e-10 × the last's. The cause is the init, named at step 0 by the gradient."""
    torch.manual_seed(0)
    model = Net(act=torch.tanh, depth=12)
    with torch.no_grad():
        for layer in [*model.layers, model.out]:
            nn.init.normal_(layer.weight, 0.0, 0.01)
    doctor = train_watched(model, steps=6)
    alarm = next(a for a in doctor.alarms if a.kind == "vanishing_init")
    assert alarm.step == 0 and alarm.layer == "layers.0" and alarm.evidence["signal_min"] > 1e-3
    assert alarm.evidence["grad_ratio"] < 1e-6 and "gradient shrinks on its way back" in alarm.message


@pytest.mark.parametrize("make", [
    lambda: Net(),                                     # PyTorch's default init
    lambda: scaled_(Net(depth=6), 1.0),                # Kaiming, deep
    lambda: Net(act=torch.tanh),
    lambda: Net(norm=True),
    lambda: Residual(),
], ids=["default", "kaiming-deep", "tanh", "bn", "residual"])
def test_healthy_user_models_raise_nothing(make):
    for seed in (0, 1):
        torch.manual_seed(seed)
        doctor = train_watched(make(), steps=80, seed=seed)
        assert doctor.diagnosis() == [], [a.message for a in doctor.alarms]


# -- output and loss, linear models --------------------------------------------------------------------------------
def test_a_softmax_before_cross_entropy_is_named_in_a_loop_that_does_not_say_its_loss():
    torch.manual_seed(0)
    doctor = train_watched(Net(head=lambda z: F.softmax(z, dim=1)), steps=60)
    alarm = next(a for a in doctor.alarms if a.kind == "output_loss_mismatch")
    assert alarm.evidence["loss_floor"] == pytest.approx(math.log(math.e + CLASSES - 1) - 1)
    assert "logits" in alarm.message and alarm.advice[0].startswith("needs a code change")


def test_a_softmax_head_is_named_at_once_where_the_loss_is_known_to_be_cross_entropy():
    torch.manual_seed(0)
    doctor = train_watched(Net(head=lambda z: F.softmax(z, dim=1)), steps=2, every=1, loss="cross_entropy")
    assert doctor.diagnosis() == ["output_loss_mismatch"]
    log_probs = train_watched(Net(head=lambda z: F.log_softmax(z, dim=1)), steps=30, loss="cross_entropy")
    assert "output_loss_mismatch" not in log_probs.diagnosis()            # log-probabilities are fine for it


def test_a_wrong_number_of_outputs_is_named():
    torch.manual_seed(0)
    model = Net()
    model.out = nn.Linear(64, 100)
    doctor = train_watched(model, steps=2, every=1)
    alarm = doctor.alarms[0]
    assert alarm.kind == "output_loss_mismatch" and alarm.evidence["output_dim"] == 100
    assert "100 outputs for 10 classes" in alarm.message


@pytest.mark.parametrize("norm", [False, True])
def test_a_stack_of_linear_layers_is_named_linear(norm):
    torch.manual_seed(0)
    doctor = train_watched(Net(act=None, norm=norm), steps=2, every=1)
    assert doctor.diagnosis() == ["linear_model"]
    assert doctor.alarms[0].evidence["weight_layers"] == 4


# -- the learning rate against the optimizer in use ----------------------------------------------------------------
def test_adam_at_a_far_too_high_rate_is_named_with_its_range():
    torch.manual_seed(0)
    model = Net()
    doctor = train_watched(model, torch.optim.Adam(model.parameters(), lr=0.1), steps=60)
    assert doctor.diagnosis()[0] == "lr_too_high", doctor.diagnosis()
    alarm = doctor.alarms[0]
    assert alarm.evidence["range_high"] == 1e-2 and "Adam" in alarm.message and "0.1" in alarm.message


def test_sgd_at_a_far_too_low_rate_is_named_lr_too_low():
    torch.manual_seed(0)
    model = Net()
    doctor = train_watched(model, torch.optim.SGD(model.parameters(), lr=1e-6), steps=60)
    assert doctor.diagnosis() == ["lr_too_low"]
    assert doctor.alarms[0].evidence["range_low"] == 1e-3


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=3e-3),
                                  lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)], ids=["sgd", "adam", "momentum"])
def test_rates_inside_the_range_are_not_named(make):
    torch.manual_seed(0)
    model = scaled_(Net(), 1.0)
    kinds = train_watched(model, make(model.parameters()), steps=60).diagnosis()
    assert not {"lr_too_high", "lr_too_low"} & set(kinds), kinds


@pytest.mark.parametrize("given", [False, True], ids=["read-from-the-scheduler", "given"])
def test_a_warming_up_rate_is_named_by_the_rate_the_loop_was_set_to(given):
    """A 1cycle warm-up reads max_lr / 25 at the start: the alarm names the rate the user set (the schedule's
    peak: torch's schedulers keep it in the groups' max_lr/initial_lr, or ``Doctor(lr=...)``), and the rate at
    the step beside it; the advice divides the set rate."""
    from tricklab.diagnose.detectors.learning_rate import scheduled_peak

    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=400)
    assert scheduled_peak(opt) == 1.0 and scheduled_peak("adam") is None
    doctor = Doctor(num_classes=CLASSES, optimizer="adam", lr=1.0) if given else Doctor(num_classes=CLASSES)
    w = watch(model, opt, every=5, doctor=doctor)
    x, y = teacher()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, len(x), (BATCH,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        w.step(loss)
    w.close()
    alarm = next(a for a in doctor.alarms if a.kind == "lr_too_high")
    assert alarm.evidence["lr"] == 1.0 and alarm.evidence["lr_now"] < 0.5
    assert alarm.message.startswith(f"Learning rate too high since step {alarm.step}: 1 (set; ")
    assert "at this step, on its schedule" in alarm.message and alarm.advice[0].startswith("optimizer.lr=0.1:")


def test_watch_tells_a_doctor_made_without_one_which_optimizer_runs():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    doctor = Doctor()
    w = watch(model, opt, every=5, doctor=doctor)
    assert doctor.ctx.optimizer == "adam"
    x, y = teacher()
    for i in range(0, 60 * BATCH, BATCH):
        i %= len(x) - BATCH
        loss = F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.step(loss)
    w.close()
    assert "lr_too_high" in doctor.diagnosis()


def test_a_dead_nets_logits_in_0_1_are_not_taken_for_probabilities():
    torch.manual_seed(0)
    dead = Net()
    with torch.no_grad():
        for layer in dead.layers:
            layer.bias.fill_(-10.0)
        dead.out.bias.fill_(0.5)                                          # every logit 0.5: in [0, 1], no softmax
    kinds = train_watched(dead, steps=2, every=1, loss="cross_entropy").diagnosis()
    assert "output_loss_mismatch" not in kinds
    sigmoid_head = train_watched(Net(head=torch.sigmoid), steps=2, every=1, loss="cross_entropy")
    assert sigmoid_head.diagnosis() == ["output_loss_mismatch"]
