"""The probe against hand-computed references (float64) and its promises: dead/saturated units found, every
weight layer of every built-in architecture measured, nothing run or kept on non-probe steps, one host sync,
no crash on NaN."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.diagnose.probes import DEFAULT_EVERY, Probe, Readout, activation_family
from tricklab.models import build_model
from tricklab.tricks.norm import apply_weight_norm

REL = 1e-10


pytestmark = pytest.mark.usefixtures("one_thread")


def all_hooks(model: nn.Module) -> int:
    """How many forward/backward hooks are registered anywhere in ``model`` (parametrisations included)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def probe_step(probe: Probe, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               step: int = 0, **kw):
    probe.begin(step, x)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    probe.after_backward()
    opt.step()
    return probe.after_step(loss, **kw), loss


def tiny(activation: nn.Module) -> nn.Sequential:
    """Linear(3→4) → activation → Linear(4→2) in float64 with fixed weights."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 4), act=activation, fc2=nn.Linear(4, 2))).double()
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -0.1], [-1.0, -1.0, -1.0], [2.0, 0.0, 1.0]]))
        model.fc1.bias.copy_(torch.tensor([0.1, -0.2, -5.0, 0.0]))
        model.fc2.weight.copy_(torch.tensor([[0.5, -0.5, 1.0, 0.2], [-0.3, 0.8, 0.1, -0.4]]))
        model.fc2.bias.copy_(torch.tensor([0.05, -0.05]))
    return model


def batch(n: int = 8, features: int = 3, classes: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, features, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def test_stats_match_hand_computed_values():
    model = tiny(nn.ReLU())
    x, y = batch()
    lr = 0.1
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    w_before = [model.fc1.weight.detach().clone(), model.fc2.weight.detach().clone()]
    b_before = [model.fc1.bias.detach().clone(), model.fc2.bias.detach().clone()]
    record, loss = probe_step(Probe(model, every=1), model, opt, x, y, step=0, epoch=3, lr=lr, clip_fired=False)

    # references, float64, computed from the weights before the step
    pre = x @ w_before[0].T + b_before[0]
    act = pre.relu()
    logits = act @ w_before[1].T + b_before[1]
    grads = [model.fc1.weight.grad, model.fc2.weight.grad]
    every_grad = [p.grad for p in model.parameters()]

    assert (record.step, record.epoch, record.lr, record.clip_fired) == (0, 3, lr, False)
    assert record.loss == pytest.approx(loss.item(), rel=REL)
    assert record.grad_norm == pytest.approx(torch.nn.utils.get_total_norm(every_grad).item(), rel=REL)
    assert record.grad_norm == pytest.approx(math.sqrt(sum(float((g**2).sum()) for g in every_grad)), rel=REL)
    assert (record.input_mean, record.input_std, record.input_absmax) == pytest.approx(
        (x.mean().item(), x.std(correction=0).item(), x.abs().max().item()), rel=REL)

    fc1, fc2 = record.layers
    assert (fc1.name, fc1.kind, fc1.depth_index, fc1.activation) == ("fc1", "linear", 0, "relu")
    assert (fc2.name, fc2.kind, fc2.depth_index, fc2.activation) == ("fc2", "linear", 1, None)
    assert fc1.pre_mean == pytest.approx(pre.mean().item(), rel=REL)
    assert fc1.pre_std == pytest.approx(pre.std(correction=0).item(), rel=REL)
    assert fc1.act_mean == pytest.approx(act.mean().item(), rel=REL)
    assert fc1.act_std == pytest.approx(act.std(correction=0).item(), rel=REL)
    assert fc1.frac_dead == pytest.approx((pre <= 0).all(0).double().mean().item())
    assert fc1.frac_dead == 0.25   # unit 3 (bias −5, weights −1) is negative for every input in [0, 1)³
    assert fc1.frac_saturated is None
    assert fc2.pre_mean == pytest.approx(logits.mean().item(), rel=REL)
    assert fc2.pre_std == pytest.approx(logits.std(correction=0).item(), rel=REL)
    assert (fc2.act_mean, fc2.act_std, fc2.frac_dead, fc2.frac_saturated) == (None, None, None, None)
    for stats, w0, g, layer in zip((fc1, fc2), w_before, grads, (model.fc1, model.fc2)):
        assert stats.grad_norm == pytest.approx(g.norm().item(), rel=REL)
        assert stats.weight_norm == pytest.approx(w0.norm().item(), rel=REL)
        manual = ((layer.weight.detach() - w0).norm() / w0.norm()).item()
        assert stats.update_ratio == pytest.approx(manual, rel=1e-9)
        assert stats.update_ratio == pytest.approx(lr * g.norm().item() / w0.norm().item(), rel=1e-9)  # SGD


def test_saturation_of_tanh_matches_the_threshold():
    model = tiny(nn.Tanh())
    x, y = batch()
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.0), x, y)
    a = torch.tanh(x @ model.fc1.weight.detach().T + model.fc1.bias.detach())
    assert record.layers[0].activation == "tanh"
    assert record.layers[0].frac_saturated == pytest.approx((a.abs() > 0.97).double().mean().item())
    assert record.layers[0].frac_saturated > 0        # unit 3 (bias −5) sits at tanh ≈ −1
    assert record.layers[0].frac_dead is None
    assert record.layers[1].update_ratio == 0.0       # lr 0: no update


def mlp(activation: str, width: int, depth: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", (40,), 10, depth=depth, width=width, activation=activation, norm="none")


def test_dead_relus_found_in_the_layer_with_a_large_negative_bias():
    model = mlp("relu", 64)
    with torch.no_grad():
        model.body.layer2.weights.bias.fill_(-100.0)
        model.body.layer3.weights.bias.fill_(0.1)   # its input is all zeros now: keep it alive
    x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
    dead = {s.name: s.frac_dead for s in record.layers}
    assert dead["body.layer2.weights"] == 1.0
    assert dead["body.layer1.weights"] < 0.05 and dead["body.layer3.weights"] == 0.0
    assert dead["out"] is None


def test_dead_units_are_read_at_the_activation_input_behind_a_norm_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].bias[:4] = -50.0            # β: the first 4 of 16 units never pass the ReLU
        model[0].bias.fill_(10.0)            # while the Linear output itself is positive
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
    assert record.layers[0].pre_mean > 5
    assert record.layers[0].frac_dead == pytest.approx(4 / 16)


def test_dead_units_of_a_convolution_are_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10, 2))
    with torch.no_grad():
        model[0].bias[:2] = -100.0
    x, y = torch.randn(16, 1, 10), torch.randint(0, 2, (16,))
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
    assert (record.layers[0].kind, record.layers[0].frac_dead) == ("conv1d", pytest.approx(2 / 8))


def test_sigmoid_with_unit_normal_weights_saturates_and_small_tanh_does_not():
    x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))
    sig = mlp("sigmoid", 512)
    tanh = mlp("tanh", 512)
    with torch.no_grad():
        for m in sig.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0)
        for m in tanh.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
    for model, low, high in ((sig, 0.5, 1.0), (tanh, 0.0, 0.001)):
        record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
        hidden = [s for s in record.layers if s.activation is not None]
        assert len(hidden) == 3
        assert all(low <= s.frac_saturated <= high for s in hidden), [s.frac_saturated for s in hidden]


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet", "inception"])
def test_every_weight_layer_of_each_architecture_gets_a_record(name):
    torch.manual_seed(0)
    activation = {"mlp": "tanh", "cnn": "leaky_relu"}.get(name, "relu")
    model = build_model(name, (40,), 10, depth=3, width=8, activation=activation)
    x, y = torch.randn(16, 40), torch.randint(0, 10, (16,))
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
    expected = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    assert {s.name for s in record.layers} == expected
    assert [s.depth_index for s in record.layers] == list(range(len(expected)))
    *hidden, logits = record.layers
    assert logits.activation is None                       # the logits layer has no activation after it
    family = activation_family(model.get_submodule(next(n for n, m in model.named_modules()
                                                        if type(m).__name__ in ("Tanh", "LeakyReLU", "ReLU"))))
    assert all(s.activation == family for s in hidden)     # resnet: the next block's opening activation
    assert all(math.isfinite(s.grad_norm) and s.update_ratio is not None for s in record.layers)


def test_depth_follows_execution_and_functional_activations_give_none():
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.last = nn.Linear(6, 2)       # registered first, runs last
            self.first = nn.Linear(4, 6)
            self.act = nn.Tanh()

        def forward(self, x):
            h = self.act(self.first(x))
            return self.last(F.relu(self.first(x) * 0 + h))   # `first` shared: its second call is not measured

    model = Reversed()
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    expected_mean = model.first(x).mean().item()
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
    assert [(s.name, s.depth_index, s.activation) for s in record.layers] == [("first", 0, "tanh"), ("last", 1, None)]
    assert record.layers[0].pre_mean == pytest.approx(expected_mean, rel=1e-5, abs=1e-6)


def test_a_shared_activation_module_pairs_with_each_layer():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c, self.act = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2), nn.ReLU()

        def forward(self, x):
            return self.c(self.act(self.b(self.act(self.a(x)))))

    model = Shared()
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    record, _ = probe_step(Probe(model), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
    assert [s.activation for s in record.layers] == ["relu", "relu", None]


def test_weight_norm_layers_report_the_computed_weight_and_its_gradient():
    torch.manual_seed(0)
    model = apply_weight_norm(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double())
    x, y = batch(8, 5, 3)
    w0 = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    # reference ∂L/∂W through a plain functional forward with the computed weights as leaves
    ws = [w.clone().requires_grad_() for w in w0]
    ref = F.cross_entropy(F.linear(F.linear(x, ws[0], model[0].bias).relu(), ws[1], model[2].bias), y)
    ref.backward()
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.5), x, y)
    for stats, w, wb, layer in zip(record.layers, ws, w0, (model[0], model[2])):
        assert stats.grad_norm == pytest.approx(w.grad.norm().item(), rel=1e-9)
        assert stats.weight_norm == pytest.approx(wb.norm().item(), rel=REL)
        assert stats.update_ratio == pytest.approx(((layer.weight.detach() - wb).norm() / wb.norm()).item(), rel=1e-9)
        assert stats.update_ratio > 0


def test_nothing_runs_on_non_probe_steps_and_close_removes_every_hook(monkeypatch):
    model = apply_weight_norm(mlp("relu", 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = Probe(model, every=3)
    calls = {"read": 0}
    read = Readout.read

    def counting_read(self):
        calls["read"] += 1
        return read(self)

    monkeypatch.setattr(Readout, "read", counting_read)
    x, y = torch.randn(8, 40), torch.randint(0, 10, (8,))
    records = []
    for step in range(7):
        armed = probe.begin(step, x)
        assert armed == (step % 3 == 0) == probe.wants(step)
        hooks_in_forward: dict[str, int] = {}

        def count(module, args, seen=hooks_in_forward):
            seen["n"] = all_hooks(model) - 1              # minus this counting hook

        handle = model.register_forward_pre_hook(count)
        loss = F.cross_entropy(model(x), y)
        handle.remove()
        assert (hooks_in_forward["n"] > 0) == armed       # hooks exist only during an armed forward pass
        assert all_hooks(model) == 0                      # and are gone as soon as it ends
        opt.zero_grad()
        loss.backward()
        probe.after_backward()
        assert (probe._before is not None) == armed       # the weight copy exists only on probe steps
        opt.step()
        records.append(probe.after_step(loss))
    assert [r is not None for r in records] == [True, False, False, True, False, False, True]
    assert calls["read"] == 3
    assert probe._before is None and not probe._pre and not probe._act
    probe.begin(9 * DEFAULT_EVERY, x)
    assert all_hooks(model) > 0
    probe.close()
    assert all_hooks(model) == 0
    assert probe.after_step(1.0) is None


SYNCS = ("tolist", "item", "__bool__", "__float__", "__int__", "cpu", "numpy")


@contextmanager
def counting_syncs(monkeypatch: pytest.MonkeyPatch, counts: dict[str, int]) -> Iterator[None]:
    """Count every Tensor method that reads values to the host while the block runs."""
    with monkeypatch.context() as m:
        for name in SYNCS:
            original = getattr(torch.Tensor, name)

            def counting(self, *a, _name=name, _original=original, **k):
                counts[_name] += 1
                return _original(self, *a, **k)

            m.setattr(torch.Tensor, name, counting)
        yield


def test_one_host_sync_per_probe_step(monkeypatch):
    model = mlp("relu", 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 40), torch.randint(0, 10, (8,))
    counts = dict.fromkeys(SYNCS, 0)
    probe = Probe(model, every=2)
    for step in range(2):             # a probe step, then a non-probe step
        with counting_syncs(monkeypatch, counts):
            probe.begin(step, x)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            probe.after_backward()
        opt.step()                    # the optimizer's own bookkeeping is not the probe's
        with counting_syncs(monkeypatch, counts):
            probe.after_step(loss)
    assert counts == {**dict.fromkeys(SYNCS, 0), "tolist": 1}


def test_nan_and_inf_do_not_raise():
    model = mlp("relu", 16)
    with torch.no_grad():
        model.body.layer1.weights.weight[0, 0] = float("nan")
    x, y = torch.randn(8, 40), torch.randint(0, 10, (8,))
    x[0, 0] = float("inf")
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
    assert math.isnan(record.loss) and math.isnan(record.grad_norm)
    assert record.input_absmax == math.inf
    assert math.isnan(record.layers[0].pre_mean) and math.isnan(record.layers[0].weight_norm)
    assert math.isnan(record.layers[0].update_ratio)
    # a zero weight matrix: ratio 0/0 is nan, not ZeroDivisionError
    model = mlp("relu", 16)
    with torch.no_grad():
        model.out.weight.zero_()
    record, _ = probe_step(Probe(model, every=1), model, torch.optim.SGD(model.parameters(), lr=0.0), x.nan_to_num(), y)
    assert math.isnan(record.layers[-1].update_ratio)


def test_input_taken_from_the_forward_call_and_record_round_trips():
    model = mlp("relu", 16)
    x, y = torch.randn(8, 40) * 7 + 3, torch.randint(0, 10, (8,))
    probe = Probe(model, every=1)
    probe.begin(0)                                    # no x: the probe reads the model's first argument
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    record = probe.after_step(loss.item())            # after_backward forgotten: gradients read here
    assert record.input_mean == pytest.approx(x.mean().item(), rel=1e-5)
    assert record.input_absmax == pytest.approx(x.abs().max().item(), rel=1e-6)
    assert all(s.update_ratio is None for s in record.layers)
    assert record.grad_norm > 0
    assert type(record).from_dict(record.to_dict()) == record


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        Probe(nn.Linear(2, 2), every=0)


# -- how activation calls are captured: the mode until module hooks are seen to agree ---------------------------------
def _records(model: nn.Module, steps: int, x: torch.Tensor, y: torch.Tensor) -> tuple[list, Probe]:
    probe = Probe(model, every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)       # lr 0: every step measures the same weights and batch
    return [probe_step(probe, model, opt, x, y, step=i)[0] for i in range(steps)], probe


def test_module_hooks_take_over_from_the_mode_only_when_they_report_the_same_and_measure_the_same():
    from tricklab.diagnose.functional import RECHECK

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2),
                          nn.LogSoftmax(dim=1)).double()
    x, y = batch()
    records, probe = _records(model, RECHECK + 2, x, y)
    assert probe._capture.trusted and probe._capture.passes == RECHECK + 2
    first = records[0].to_dict()                             # by the mode
    for r in records[1:]:                                    # by module hooks (and the mode again at RECHECK)
        d = r.to_dict()
        assert {k: v for k, v in d.items() if k != "step"} == {k: v for k, v in first.items() if k != "step"}
    assert records[1].output_activation == "other" and records[1].hidden_nonlinear == 2


@pytest.mark.parametrize("style", ["functional", "module then function", "custom module"])
def test_functional_activations_keep_the_mode(style):
    class Swish(nn.Module):                                  # not an activation module tricklab knows
        def forward(self, h):
            return h * torch.sigmoid(h)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.act, self.swish = nn.Linear(3, 8), nn.Linear(8, 2), nn.ReLU(), Swish()

        def forward(self, x):
            h = self.a(x)
            h = {"functional": F.relu, "module then function": lambda t: F.relu(self.act(t)),
                 "custom module": self.swish}[style](h)
            return self.b(h)

    model = Net().double()
    x, y = batch()
    records, probe = _records(model, 4, x, y)
    assert not probe._capture.trusted
    assert all(r.layers[0].activation == records[0].layers[0].activation is not None for r in records)


def test_a_forward_that_changes_is_caught_at_the_next_recheck():
    from tricklab.diagnose.functional import RECHECK

    class Switch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.act, self.functional = nn.Linear(3, 8), nn.Linear(8, 2), nn.ReLU(), False

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)) if self.functional else self.act(self.a(x)))

    model = Switch().double()
    x, y = batch()
    probe = Probe(model, every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for i in range(3):
        probe_step(probe, model, opt, x, y, step=i)
    assert probe._capture.trusted
    model.functional = True
    seen = [probe_step(probe, model, opt, x, y, step=i)[0].layers[0].activation for i in range(3, RECHECK + 2)]
    assert not probe._capture.trusted
    assert seen[-1] == "tanh" and seen[RECHECK - 4] == "tanh"   # from the recheck on, the mode sees it again
