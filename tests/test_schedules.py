"""Learning-rate schedules: pure functions against their formulas and torch.optim.lr_scheduler."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler

from tricklab.errors import InputError
from tricklab.tricks.schedules import (
    SCHEDULES,
    LRSchedule,
    Plateau,
    apply_lr,
    build_schedule,
    constant,
    cosine,
    exponential,
    one_cycle,
    step_decay,
    warmup,
)


def _optimizer(lr: float = 1.0, groups: int = 1) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(groups)], lr=lr)


def _torch_lrs(scheduler_factory, lr: float, steps: int) -> list[float]:
    """The lr torch's scheduler sets for steps 0..steps−1 (scheduler.step() after each optimiser step)."""
    opt = _optimizer(lr)
    scheduler = scheduler_factory(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def test_exponential_multiplies_by_gamma_after_every_epoch() -> None:
    lr0, spe = 0.1, 7
    schedule = exponential(lr0, step_size=spe)  # the lesson's γ = 0.98, once per epoch
    for epoch in range(12):
        assert schedule(epoch * spe) == pytest.approx(lr0 * 0.98**epoch, rel=1e-14)
        assert schedule(epoch * spe + spe - 1) == schedule(epoch * spe)  # constant within the epoch
    opt = _optimizer(lr0)
    per_epoch = lr_scheduler.ExponentialLR(opt, gamma=0.98)
    for epoch in range(12):
        assert schedule(epoch * spe + 3) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        per_epoch.step()


def test_step_decay_equals_torch_steplr() -> None:
    ours = step_decay(0.5, step_size=4, gamma=0.1)
    reference = _torch_lrs(lambda o: lr_scheduler.StepLR(o, step_size=4, gamma=0.1), 0.5, 20)
    assert [ours(t) for t in range(20)] == pytest.approx(reference, rel=1e-12)
    assert ours(3) == 0.5 and ours(4) == pytest.approx(0.05)


def test_cosine_end_points_and_torch_cosine_annealing() -> None:
    schedule = cosine(0.2, total_steps=50, final_lr=0.01)
    assert schedule(0) == 0.2
    assert schedule(50) == pytest.approx(0.01, abs=1e-15)
    assert schedule(25) == pytest.approx((0.2 + 0.01) / 2, rel=1e-12)
    assert schedule(80) == 0.01
    reference = _torch_lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.01), 0.2, 51)
    assert [schedule(t) for t in range(51)] == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_warmup_starts_small_and_reaches_the_base_schedule_at_warmup_steps() -> None:
    base = cosine(0.1, total_steps=100)
    warmed = warmup(base, warmup_steps=10)
    assert warmed(0) == pytest.approx(base(0) / 10)  # first step already moves (t + 1)/W
    assert warmed(0) < 0.2 * base(0)
    ramp = [warmed(t) for t in range(10)]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    for t in [9, 10, 11, 50, 100]:
        assert warmed(t) == base(t)
    assert warmup(constant(1.0), warmup_steps=10, start_factor=0.5)(0) == pytest.approx(0.55)
    assert warmup(base, warmup_steps=0) is base


@pytest.mark.parametrize(("total", "pct"), [(100, 0.3), (37, 0.25), (10, 0.5)])
def test_one_cycle_equals_torch_one_cycle_lr(total: int, pct: float) -> None:
    max_lr = 0.4
    ours = one_cycle(max_lr, total_steps=total, pct_start=pct)
    reference = _torch_lrs(
        lambda o: lr_scheduler.OneCycleLR(
            o,
            max_lr=max_lr,
            total_steps=total,
            pct_start=pct,
            anneal_strategy="cos",
            three_phase=False,
            cycle_momentum=False,
        ),
        max_lr,
        total,
    )
    ours_lrs = [ours(t) for t in range(total)]
    assert ours_lrs == pytest.approx(reference, rel=1e-12, abs=1e-15)
    assert ours(0) == pytest.approx(max_lr / 25)
    assert ours(total - 1) == pytest.approx(max_lr / 25 / 1e4)
    peak = max(range(total), key=ours_lrs.__getitem__)
    peak_step = pct * total - 1  # torch's (fractional) step of the peak
    if abs(peak_step - round(peak_step)) < 1e-9:  # an integer: max_lr itself at step pct_start·total − 1
        assert peak == round(peak_step) and ours_lrs[peak] == pytest.approx(max_lr, rel=1e-12)
    else:  # between two steps: both neighbours are below max_lr
        assert peak in (math.floor(peak_step), math.ceil(peak_step)) and ours_lrs[peak] < max_lr


def _plateau_decisions(metrics: list[float], **kwargs) -> tuple[list[float], list[float]]:
    """Multipliers from Plateau and lr/lr₀ from ReduceLROnPlateau after each metric."""
    base = kwargs.pop("lr", 1.0)
    ours = Plateau(lr=base, **kwargs)
    opt = _optimizer(base)
    reference = lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="rel", **kwargs)
    a, b = [], []
    for m in metrics:
        a.append(ours.update(m))
        reference.step(m)
        b.append(opt.param_groups[0]["lr"] / base)
    return a, b


def test_plateau_reduces_after_patience_stalled_evaluations() -> None:
    plateau = Plateau(factor=0.5, patience=3)
    assert plateau.update(1.0) == 1.0  # sets the best
    assert [plateau.update(1.0) for _ in range(3)] == [1.0, 1.0, 1.0]  # `patience` stalls are tolerated
    assert plateau.update(1.0) == 0.5  # the next stalled evaluation reduces
    assert [plateau.update(1.0) for _ in range(3)] == [0.5, 0.5, 0.5]
    assert plateau.update(1.0) == 0.25
    assert plateau.update(0.5) == 0.25  # an improvement never raises the rate


@pytest.mark.parametrize(
    "kwargs",
    [
        {"factor": 0.5, "patience": 2},
        {"factor": 0.1, "patience": 0, "threshold": 0.05},
        {"factor": 0.5, "patience": 1, "cooldown": 2},
        {"factor": 0.3, "patience": 2, "mode": "max"},
        {"factor": 0.1, "patience": 1, "min_lr": 0.003, "lr": 0.1},
    ],
)
def test_plateau_agrees_with_reduce_lr_on_plateau(kwargs: dict) -> None:
    gen = torch.Generator().manual_seed(1)
    trend = [1.0 / (1 + 0.3 * i) for i in range(20)] + [0.2] * 10 + [0.19999] * 5 + [0.15] + [0.2] * 15
    metrics = [m + 0.01 * float(torch.rand(1, generator=gen)) for m in trend]
    if kwargs.get("mode") == "max":
        metrics = [-m + 2 for m in metrics]
    ours, reference = _plateau_decisions(metrics, **kwargs)
    assert ours == pytest.approx(reference, rel=1e-12)
    assert min(ours) < 1.0  # the sequence does trigger reductions


def test_plateau_min_lr_floor() -> None:
    plateau = Plateau(factor=0.1, patience=0, lr=0.1, min_lr=0.05)
    plateau.update(1.0)
    assert plateau.update(2.0) == pytest.approx(0.5)
    assert plateau.update(3.0) == pytest.approx(0.5)


def test_apply_lr_respects_per_group_lr_scale() -> None:
    opt = _optimizer(groups=2)
    opt.param_groups[1]["lr_scale"] = 0.1
    apply_lr(opt, 0.3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.3, 0.03])


def test_lr_schedule_applies_schedule_times_plateau_and_resumes_from_state_dict() -> None:
    def make() -> LRSchedule:
        return LRSchedule(
            build_schedule("plateau", lr=0.2, total_steps=100, steps_per_epoch=10), Plateau(factor=0.5, patience=1)
        )

    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.5, 0.6, 0.7]
    straight = make()
    opt = _optimizer()
    lrs = []
    for epoch, m in enumerate(metrics):
        lrs.append(straight.apply(opt, epoch * 10))
        straight.report(m)
    assert opt.param_groups[0]["lr"] == lrs[-1]
    assert (
        lrs[:4] == pytest.approx([0.2, 0.2, 0.2, 0.2])
        and lrs[4] == pytest.approx(0.1)
        and lrs[-1] == pytest.approx(0.05)
    )

    first = make()
    for epoch, m in enumerate(metrics[:4]):
        first.apply(opt, epoch * 10)
        first.report(m)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert resumed.last_step == 30
    tail = []
    for epoch, m in enumerate(metrics[4:], start=4):
        tail.append(resumed.apply(opt, epoch * 10))
        resumed.report(m)
    assert tail == pytest.approx(lrs[4:])


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("constant", lambda s: s(0) == s(999) == 0.1),
        ("exponential", lambda s: s(40) == pytest.approx(0.1 * 0.98**2)),
        ("step", lambda s: s(199) == 0.1 and s(200) == pytest.approx(0.01)),  # 10 epochs × 20 steps
        ("cosine", lambda s: s(0) == 0.1 and s(1000) == 0.0),
        ("one_cycle", lambda s: max(s(t) for t in range(1000)) == pytest.approx(0.1)),
        ("plateau", lambda s: s(0) == s(999) == 0.1),
    ],
)
def test_build_schedule_names(name: str, check) -> None:
    assert check(build_schedule(name, lr=0.1, total_steps=1000, steps_per_epoch=20))


def test_build_schedule_wraps_any_schedule_in_warmup() -> None:
    plain = build_schedule("cosine", lr=0.1, total_steps=1000, steps_per_epoch=20)
    warmed = build_schedule("cosine", lr=0.1, total_steps=1000, steps_per_epoch=20, warmup_steps=50)
    assert warmed(0) == pytest.approx(plain(0) / 50) and warmed(50) == plain(50)
    alone = build_schedule("warmup", lr=0.1, total_steps=1000, steps_per_epoch=20, warmup_steps=50)
    assert alone(24) == pytest.approx(0.05) and alone(500) == 0.1


def test_unknown_schedule_is_an_input_error_listing_the_allowed_names() -> None:
    with pytest.raises(InputError) as err:
        build_schedule("cosin", lr=0.1, total_steps=10, steps_per_epoch=1)
    assert err.value.field == "schedule.name"
    assert "cosine" in err.value.allowed and "warmup" in err.value.allowed
    with pytest.raises(InputError) as err:
        build_schedule("one_cycle", lr=0.1, total_steps=3, steps_per_epoch=1, pct_start=0.1)
    assert err.value.field == "schedule.pct_start"


def test_registry_has_the_catalogue_names() -> None:
    assert SCHEDULES.names() == ["constant", "exponential", "step", "cosine", "warmup", "one_cycle", "plateau"]
    assert "0,98" in SCHEDULES.get("exponential").lesson
    assert "composable" in SCHEDULES.get("warmup").note
