"""Gradient clipping: every mode against a float64 reference and torch's own clipping; flags; edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.tricks.clipping import AGC_EPS, CLIPPERS, NORM_EPS, ClipStats, clip_gradients_


def _params(scale: float, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[nn.Parameter]:
    """A conv weight, a linear weight, a bias and a parameter without grad; gradients ~ scale·N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 3, 5), (10, 20), (10,), (4, 4)]
    params = [nn.Parameter(torch.randn(*s, generator=g, dtype=dtype)) for s in shapes]
    for p in params[:3]:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=dtype)
    return params


def _grads64(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.double().clone() for p in params if p.grad is not None]


def _norm64(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))


def _assert_grads(params: list[nn.Parameter], expected: list[torch.Tensor], rtol: float = 1e-6) -> None:
    actual = [p.grad for p in params if p.grad is not None]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a.double(), e, rtol=rtol, atol=1e-9)


def test_catalogue_names() -> None:
    assert CLIPPERS.names() == ["none", "norm", "unit", "value", "agc"]


@pytest.mark.parametrize("mode", ["none", "norm", "unit", "value", "agc"])
def test_norm_before_is_the_global_l2_norm(mode: str) -> None:
    params = _params(scale=3.0)
    expected = _norm64(_grads64(params))
    stats = clip_gradients_(params, mode, 1.0)
    assert isinstance(stats, ClipStats) and stats.norm_before.dim() == 0 and stats.fired.dtype == torch.bool
    assert stats.norm_before.item() == pytest.approx(expected, rel=1e-6)
    assert bool(stats.finite)


def test_none_changes_nothing() -> None:
    params = _params(scale=100.0)
    before = [p.grad.clone() for p in params[:3]]
    assert not clip_gradients_(params, "none", 1.0).fired
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before))


@pytest.mark.parametrize("scale,theta,fires", [(3.0, 2.0, True), (0.01, 2.0, False), (1e-3, 1e-3, True)])
def test_norm_mode_matches_formula_and_torch(scale: float, theta: float, fires: bool) -> None:
    """g ← g·min(1, θ/(‖g‖ + 1e-6)); the small-norm case makes the 1e-6 visible (5e-5 relative)."""
    params, reference = _params(scale), _params(scale)
    grads = _grads64(params)
    norm = _norm64(grads)
    assert (norm > theta) == fires
    factor = min(1.0, theta / (norm + NORM_EPS))
    stats = clip_gradients_(params, "norm", theta)
    assert bool(stats.fired) == fires
    _assert_grads(params, [g * factor for g in grads], rtol=1e-6)
    torch_norm = torch.nn.utils.clip_grad_norm_(reference, theta)
    assert torch.equal(stats.norm_before, torch_norm)
    assert all(torch.equal(p.grad, r.grad) for p, r in zip(params[:3], reference[:3]))
    if fires:
        assert _norm64(_grads64(params)) == pytest.approx(theta * norm / (norm + NORM_EPS), rel=1e-6)
        assert _norm64(_grads64(params)) == pytest.approx(theta, rel=1e-4)


def test_unit_mode_divides_by_the_norm() -> None:
    theta = 1.0
    params = _params(scale=3.0)
    grads = _grads64(params)
    norm = _norm64(grads)
    stats = clip_gradients_(params, "unit", theta)
    assert bool(stats.fired)
    _assert_grads(params, [g / norm for g in grads])
    assert _norm64(_grads64(params)) == pytest.approx(1.0, abs=1e-6)

    small = _params(scale=0.01)
    before = [p.grad.clone() for p in small[:3]]
    assert not clip_gradients_(small, "unit", theta).fired
    assert all(torch.equal(p.grad, b) for p, b in zip(small, before))


def test_unit_mode_with_theta_below_one_raises_the_norm_to_one() -> None:
    """The lesson's literal rule: a norm just above θ = 0.5 ends at 1, not at θ."""
    params = _params(scale=1.0)
    norm = _norm64(_grads64(params))
    with torch.no_grad():
        for p in params[:3]:
            p.grad.mul_(0.7 / norm)  # ‖g‖ = 0.7
    assert bool(clip_gradients_(params, "unit", 0.5).fired)
    assert _norm64(_grads64(params)) == pytest.approx(1.0, abs=1e-6)


def test_value_mode_clamps_each_coordinate() -> None:
    theta = 0.5
    params, reference = _params(scale=1.0), _params(scale=1.0)
    expected = [g.clamp(-theta, theta) for g in _grads64(params)]
    assert bool(clip_gradients_(params, "value", theta).fired)
    _assert_grads(params, expected, rtol=0)
    torch.nn.utils.clip_grad_value_(reference, theta)
    assert all(torch.equal(p.grad, r.grad) for p, r in zip(params[:3], reference[:3]))

    small = _params(scale=0.01)
    before = [p.grad.clone() for p in small[:3]]
    assert not clip_gradients_(small, "value", theta).fired  # all |g| ≤ 0.05 < θ
    assert all(torch.equal(p.grad, b) for p, b in zip(small, before))


def _agc_reference(w: torch.Tensor, g: torch.Tensor, lam: float) -> tuple[torch.Tensor, bool]:
    """Brock et al. 2021, by hand in float64: rows of the weight (all of a 1-D tensor) are the units."""
    w, g = w.detach().double(), g.double().clone()
    units = [slice(None)] if w.dim() == 1 else range(w.shape[0])
    fired = False
    for i in units:
        w_norm = max(float(w[i].norm()), AGC_EPS)
        g_norm = float(g[i].norm())
        if g_norm / w_norm > lam:
            g[i] = lam * w_norm * g[i] / g_norm
            fired = True
    return g, fired


def test_agc_clips_each_row_relative_to_its_weights() -> None:
    lam = 0.05
    params = _params(scale=0.02)
    with torch.no_grad():
        params[1][3].zero_()  # a dead row: the 1e-3 floor on ‖w_i‖ applies
        params[1].grad[5] *= 50.0  # one row far over the limit
    references = [_agc_reference(p, p.grad, lam) for p in params[:3]]
    rows_fired = [
        bool(_agc_reference(params[1][i : i + 1], params[1].grad[i : i + 1], lam)[1]) for i in range(params[1].shape[0])
    ]
    assert any(rows_fired) and not all(rows_fired)  # the test data exercises both branches
    stats = clip_gradients_(params, "agc", lam)
    assert bool(stats.fired)
    _assert_grads(params, [g for g, _ in references], rtol=1e-5)
    for i in range(10):  # every clipped row now sits exactly on the limit, the others are below it
        ratio = params[1].grad[i].norm().item() / max(params[1][i].detach().norm().item(), AGC_EPS)
        assert ratio == pytest.approx(lam, rel=1e-5) if rows_fired[i] else ratio < lam


def test_agc_does_not_fire_for_small_gradients() -> None:
    params = _params(scale=1e-4)
    before = [p.grad.clone() for p in params[:3]]
    assert not clip_gradients_(params, "agc", 0.05).fired
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before))


@pytest.mark.parametrize("mode", ["none", "norm", "unit", "value", "agc"])
def test_no_gradients_no_crash(mode: str) -> None:
    model = nn.Linear(3, 2)
    stats = clip_gradients_(model.parameters(), mode, 1.0)
    assert stats.norm_before.item() == 0.0 and not stats.fired
    assert clip_gradients_([], mode, 1.0).norm_before.item() == 0.0


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
@pytest.mark.parametrize("mode", ["none", "norm", "unit", "value", "agc"])
def test_non_finite_gradients_are_left_untouched(mode: str, bad: float) -> None:
    params = _params(scale=5.0)
    params[1].grad[0, 0] = bad
    before = [p.grad.clone() for p in params[:3]]
    stats = clip_gradients_(params, mode, 1.0)
    assert not bool(stats.finite) and not bool(stats.fired)
    for p, b in zip(params, before):
        torch.testing.assert_close(p.grad, b, rtol=0, atol=0, equal_nan=True)
    finite_parts = torch.cat([params[0].grad.flatten(), params[2].grad.flatten(), params[1].grad[1:].flatten()])
    assert torch.isfinite(finite_parts).all()  # no finite gradient was turned into NaN


def test_float16_gradients_do_not_overflow_the_norm() -> None:
    p = nn.Parameter(torch.zeros(100, dtype=torch.float16))
    p.grad = torch.full((100,), 1e4, dtype=torch.float16)  # ‖g‖ = 1e5 > float16 max 65504
    stats = clip_gradients_([p], "norm", 1.0)
    assert stats.norm_before.item() == pytest.approx(1e5, rel=1e-3)
    assert torch.isfinite(p.grad).all() and p.grad.float().norm().item() == pytest.approx(1.0, rel=1e-2)


def test_bad_mode_or_threshold_is_an_input_error() -> None:
    with pytest.raises(InputError) as unknown:
        clip_gradients_(_params(1.0), "global", 1.0)
    assert unknown.value.field == "clip.mode" and "norm" in str(unknown.value)
    with pytest.raises(InputError) as bad:
        clip_gradients_(_params(1.0), "norm", 0.0)
    assert bad.value.field == "clip.threshold"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mode", ["none", "norm", "unit", "value", "agc"])
def test_no_host_synchronisation_on_gpu(mode: str) -> None:
    """Same result as on the CPU, and torch's sync debug mode raises if anything waits for the GPU."""
    cpu = _params(scale=3.0)
    gpu = [nn.Parameter(p.detach().cuda()) for p in cpu]
    for c, g in zip(cpu, gpu):
        g.grad = None if c.grad is None else c.grad.cuda()
    expected = clip_gradients_(cpu, mode, 1.0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = clip_gradients_(gpu, mode, 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stats.norm_before.is_cuda and stats.fired.is_cuda
    assert bool(stats.fired.cpu()) == bool(expected.fired)
    torch.testing.assert_close(stats.norm_before.cpu(), expected.norm_before, rtol=1e-5, atol=0)
    for c, g in zip(cpu[:3], gpu[:3]):
        torch.testing.assert_close(g.grad.cpu(), c.grad, rtol=1e-5, atol=1e-7)


def test_clip_tally_records_one_model_and_each_row_of_a_stack_alike():
    """The Trainer's record (shape ()) and the population's (shape (K,)) agree with a plain Python tally."""
    from tricklab.tricks.clipping import ClipTally

    steps = [([True, False, True], [3.0, 0.5, 9.0]), ([False, False, True], [0.25, 0.75, 12.0]),
             ([True, False, False], [5.0, 0.5, 1.0])]
    stack, singles = ClipTally((3,)), [ClipTally() for _ in range(3)]
    assert stack.metrics(0) == {} and singles[0].metrics() == {}
    for fired, norms in steps:
        stack.add(torch.tensor(fired), torch.tensor(norms, dtype=torch.float32))
        for k, single in enumerate(singles):
            single.add(torch.tensor(fired[k]), torch.tensor(norms[k], dtype=torch.float32))
    for k in range(3):
        expected = {"clip_fraction": sum(f[k] for f, _ in steps) / 3,
                    "grad_norm_mean": sum(n[k] for _, n in steps) / 3,
                    "grad_norm_max": max(n[k] for _, n in steps)}
        assert stack.metrics(k) == pytest.approx(expected, rel=1e-12)
        assert singles[k].metrics() == stack.metrics(k)
    stack.keep([2, 0])
    assert stack.metrics(0) == singles[2].metrics() and stack.metrics(1) == singles[0].metrics()
