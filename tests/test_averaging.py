"""Averaging: EMA/SWA against torch.optim.swa_utils, BN recompute against update_bn, the ensemble by hand."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import swa_utils

from tricklab.errors import InputError
from tricklab.tricks.averaging import AVERAGERS, EMA, SWA, Ensemble, make_averager, recompute_bn_stats

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _train_steps(model: nn.Module, steps: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """Yield after each SGD step, so the weights (and BN statistics) change between averaging updates."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        x = torch.randn(16, 5, generator=gen, dtype=dtype)
        y = torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        yield step


def _assert_same_state(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.allclose(sa[key].float(), sb[key].float(), atol=atol, rtol=0), key


def test_ema_equals_torch_averaged_model_with_ema_multi_avg_fn() -> None:
    model = _net()
    ours = EMA(model, decay=0.9)
    reference = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    start = copy.deepcopy(model.state_dict())
    for _ in _train_steps(model, 12):
        ours.update(model)
        reference.update_parameters(model)
    _assert_same_state(ours.averaged_model, reference.module)
    assert ours.n_averaged == int(reference.n_averaged) == 12
    moved = max(float((model.state_dict()[k] - ours.averaged_model.state_dict()[k]).abs().max()) for k in start)
    assert moved > 1e-3  # the average really differs from the current weights


def test_swa_equals_torch_averaged_model_default_average() -> None:
    model = _net()
    ours = SWA(model)
    reference = swa_utils.AveragedModel(model)
    for _ in _train_steps(model, 10):
        ours.update(model)
        reference.update_parameters(model)
    _assert_same_state(ours.averaged_model, reference.module)


def test_swa_is_the_equal_average_from_its_start_step_in_float64() -> None:
    model = _net().double()
    swa = SWA(model, start=4)
    seen = []
    for step in _train_steps(model, 9, dtype=torch.float64):
        swa.update(model, step=step)
        if step >= 4:
            seen.append([p.detach().clone() for p in model.parameters()])
    assert swa.n_averaged == 5
    for i, p in enumerate(swa.averaged_model.parameters()):
        expected = torch.stack([s[i] for s in seen]).mean(dim=0)
        assert torch.allclose(p, expected, atol=1e-12)
    moved = max(float((a - b).abs().max()) for a, b in zip(seen[0], seen[-1]))
    assert moved > 1e-3  # the weights changed while being averaged


def test_ema_state_dict_resumes_the_average() -> None:
    model = _net()
    straight = EMA(model, decay=0.8)
    split = EMA(model, decay=0.8)
    resumed = None
    for step in _train_steps(model, 8):
        straight.update(model)
        if step < 4:
            split.update(model)
        else:
            if resumed is None:
                resumed = EMA(_net(seed=5), decay=0.5)
                resumed.load_state_dict(split.state_dict())
            resumed.update(model)
    assert resumed.decay == 0.8 and resumed.n_averaged == 8
    _assert_same_state(resumed.averaged_model, straight.averaged_model, atol=0)
    with pytest.raises(ValueError):
        SWA(model).load_state_dict(straight.state_dict())


def test_recompute_bn_stats_equals_update_bn() -> None:
    model = _net()
    list(_train_steps(model, 5))
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(10, 5, generator=gen) * 3 + 1 for _ in range(6)]
    ours, reference = copy.deepcopy(model), copy.deepcopy(model)
    ours.eval()
    recompute_bn_stats(ours, [(x, torch.zeros(10)) for x in batches])  # tuples: the input comes first
    swa_utils.update_bn(batches, reference)
    bn_ours, bn_ref = ours[1], reference[1]
    assert torch.allclose(bn_ours.running_mean, bn_ref.running_mean, atol=1e-6)
    assert torch.allclose(bn_ours.running_var, bn_ref.running_var, atol=1e-6)
    assert not torch.allclose(bn_ours.running_mean, model[1].running_mean, atol=1e-2)  # statistics really changed
    assert bn_ours.momentum == model[1].momentum and not ours.training  # momentum and mode restored


def test_recompute_bn_stats_is_the_plain_average_of_batch_statistics() -> None:
    bn = nn.BatchNorm1d(4)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 4, generator=gen, dtype=torch.float64) + i for i in range(3)]
    recompute_bn_stats(bn.double(), batches)
    assert torch.allclose(bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-12)
    assert torch.allclose(bn.running_var, torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0), atol=1e-12)


def test_ensemble_is_log_of_mean_probabilities_in_float64() -> None:
    torch.manual_seed(0)
    members = [nn.Linear(6, 4).double() for _ in range(3)]
    ensemble = Ensemble(members)
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    with torch.no_grad():
        mean_p = sum(torch.exp(m(x)) / torch.exp(m(x)).sum(-1, keepdim=True) for m in members) / 3
        out = ensemble(x)
    assert torch.allclose(out, mean_p.log(), atol=1e-12)
    assert torch.allclose(out.exp().sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-12)
    expected_loss = -mean_p[torch.arange(5), y].log().mean()
    assert F.nll_loss(out, y).item() == pytest.approx(expected_loss.item(), rel=1e-12)
    assert F.cross_entropy(out, y).item() == pytest.approx(expected_loss.item(), rel=1e-12)


def test_ensemble_accuracy_is_at_least_the_mean_member_accuracy() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 2, generator=gen) * 1.5

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=gen)
        return centres[y] + torch.randn(n, 2, generator=gen), y

    (x, y), (x_test, y_test) = sample(64), sample(1000)
    members = []
    for seed in range(4):  # small data, wide nets: the members overfit differently
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 4))
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        for _ in range(100):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        members.append(net)
    with torch.no_grad():
        member_acc = [(m(x_test).argmax(-1) == y_test).float().mean().item() for m in members]
        ensemble_acc = (Ensemble(members)(x_test).argmax(-1) == y_test).float().mean().item()
    assert ensemble_acc >= sum(member_acc) / len(member_acc)
    assert len(set(member_acc)) > 1  # the members do differ


def test_registry_and_make_averager() -> None:
    assert AVERAGERS.names() == ["none", "ema", "swa", "ensemble"]
    assert "Modellmittelwertbildung" in AVERAGERS.get("ensemble").lesson
    model = _net()
    assert isinstance(make_averager("ema", model, decay=0.5), EMA)
    assert isinstance(make_averager("swa", model), SWA)
    assert make_averager("none", model) is None
    with pytest.raises(InputError) as err:
        make_averager("polyak", model)
    assert err.value.field == "averaging.name" and "swa" in err.value.allowed
