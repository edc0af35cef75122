"""Weight initialisation: each scheme's std against its formula, torch's own initialisers, deep-net signal scale."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.tricks import init as tinit
from tricklab.tricks.init import INITS, fans, init_model_
from tricklab.tricks.norm import apply_weight_norm

# Big enough that the sample std is within ~0.7% (1/√(2·numel)) of the true one: 5% is > 7 standard errors.
LAYERS = {
    "linear": lambda: nn.Linear(512, 256),  # weight (256, 512): n_in 512, n_out 256
    "conv1d": lambda: nn.Conv1d(32, 64, 5),  # weight (64, 32, 5): n_in 160, n_out 320
    "conv2d": lambda: nn.Conv2d(32, 64, 3),  # weight (64, 32, 3, 3): n_in 288, n_out 576
}

# The std each scheme's formula gives, from (n_in, n_out, rows, cols) of the weight as a matrix.
EXPECTED_STD = {
    "normal": lambda n_in, n_out, rows, cols: 1.0,
    "uniform": lambda n_in, n_out, rows, cols: (1 / math.sqrt(n_in)) / math.sqrt(3),
    "gaussian": lambda n_in, n_out, rows, cols: 1 / n_in,
    "lecun": lambda n_in, n_out, rows, cols: 1 / math.sqrt(n_in),
    "glorot": lambda n_in, n_out, rows, cols: math.sqrt(2 / (n_in + n_out)),
    "glorot_uniform": lambda n_in, n_out, rows, cols: math.sqrt(6 / (n_in + n_out)) / math.sqrt(3),
    "he": lambda n_in, n_out, rows, cols: math.sqrt(2 / n_in),
    "he_uniform": lambda n_in, n_out, rows, cols: math.sqrt(6 / n_in) / math.sqrt(3),
    # orthonormal rows (or columns): the squares sum to min(rows, cols), spread over rows·cols entries
    "orthogonal": lambda n_in, n_out, rows, cols: 1 / math.sqrt(max(rows, cols)),
}
UNIFORM_BOUND = {
    "uniform": lambda n_in, n_out: 1 / math.sqrt(n_in),
    "glorot_uniform": lambda n_in, n_out: math.sqrt(6 / (n_in + n_out)),
    "he_uniform": lambda n_in, n_out: math.sqrt(6 / n_in),
}


def test_every_scheme_of_the_catalogue_is_registered() -> None:
    wanted = "normal uniform gaussian lecun glorot glorot_uniform he he_uniform orthogonal lsuv default".split()
    assert all(name in INITS for name in wanted)
    assert INITS.canonical("xavier") == "glorot" and INITS.canonical("kaiming") == "he"
    assert set(EXPECTED_STD) | {"lsuv", "default"} == set(INITS.names())


def test_fans_match_torch() -> None:
    for make in LAYERS.values():
        w = make().weight
        assert fans(w) == nn.init._calculate_fan_in_and_fan_out(w)


@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("scheme", sorted(EXPECTED_STD))
def test_weight_std_matches_the_formula(scheme: str, layer: str) -> None:
    torch.manual_seed(0)
    module = init_model_(LAYERS[layer](), scheme)
    w = module.weight.detach().double()
    n_in, n_out = fans(w)
    rows, cols = w.shape[0], w[0].numel()
    expected = EXPECTED_STD[scheme](n_in, n_out, rows, cols)
    assert w.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(w.mean().item()) < 0.05 * expected
    assert torch.count_nonzero(module.bias) == 0
    if scheme in UNIFORM_BOUND:
        bound = UNIFORM_BOUND[scheme](n_in, n_out)
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.99 * bound  # the whole interval is used
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


TORCH_EQUIVALENT = {
    "glorot": lambda w, g: nn.init.xavier_normal_(w, generator=g),
    "glorot_uniform": lambda w, g: nn.init.xavier_uniform_(w, generator=g),
    "he": lambda w, g: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g),
    "he_uniform": lambda w, g: nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=g),
    # PyTorch's own Linear/Conv init, kaiming_uniform_(a=√5), has bound 1/√n_in: our "uniform"
    "uniform": lambda w, g: nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g),
    "orthogonal": lambda w, g: nn.init.orthogonal_(w, generator=g),
}


@pytest.mark.parametrize("scheme", sorted(TORCH_EQUIVALENT))
def test_scheme_equals_torch_initialiser_with_the_same_generator(scheme: str) -> None:
    for make in LAYERS.values():
        ours = torch.empty_like(make().weight)
        reference = torch.empty_like(ours)
        INITS.get(scheme).obj(ours, generator=torch.Generator().manual_seed(3))
        TORCH_EQUIVALENT[scheme](reference, torch.Generator().manual_seed(3))
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=0)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_orthogonal_rows_are_orthonormal(layer: str) -> None:
    torch.manual_seed(0)
    w = init_model_(LAYERS[layer](), "orthogonal").weight.detach().double()
    w = w.reshape(w.shape[0], -1)  # (out, in·k) with out < in·k for all three layers
    torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
    tall = torch.empty(300, 40)
    tinit.orthogonal_(tall, gain=2.0)
    torch.testing.assert_close(tall.T @ tall, 4 * torch.eye(40), atol=1e-4, rtol=0)


def test_deterministic_under_manual_seed_and_generator() -> None:
    def weights(**kw: object) -> torch.Tensor:
        return init_model_(nn.Linear(64, 32), "he", **kw).weight.detach().clone()

    torch.manual_seed(5)
    a = weights()
    torch.manual_seed(5)
    b = weights()
    assert torch.equal(a, b)
    c = weights(generator=torch.Generator().manual_seed(1))
    d = weights(generator=torch.Generator().manual_seed(1))
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_default_keeps_the_framework_init_and_other_schemes_zero_biases() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    before = [p.detach().clone() for p in layer.parameters()]
    init_model_(layer, "default")
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    assert torch.count_nonzero(layer.bias) > 0


def test_norm_layers_keep_weight_one_bias_zero() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(2, 3, 6, 6))  # materialise the lazy layer
    with torch.no_grad():
        model[1].weight.fill_(1.0)
        model[1].bias.zero_()
    init_model_(model, "glorot")
    assert torch.equal(model[1].weight, torch.ones(8)) and torch.equal(model[1].bias, torch.zeros(8))
    assert torch.count_nonzero(model[0].bias) == 0 and torch.count_nonzero(model[4].bias) == 0


def test_weight_normed_layer_gets_the_scheme_distribution() -> None:
    torch.manual_seed(0)
    model = apply_weight_norm(nn.Sequential(nn.Linear(512, 256)))
    init_model_(model, "he")
    assert model[0].weight.detach().std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)


def test_unknown_scheme_and_lsuv_without_data_are_input_errors() -> None:
    with pytest.raises(InputError) as unknown:
        init_model_(nn.Linear(2, 2), "kaimin")
    assert unknown.value.field == "init.scheme" and "kaiming" in str(unknown.value)
    with pytest.raises(InputError) as no_data:
        init_model_(nn.Linear(2, 2), "lsuv")
    assert no_data.value.field == "init.scheme" and "data" in str(no_data.value)


def _layer_output_stds(model: nn.Module, data: torch.Tensor) -> list[float]:
    stds: list[float] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: stds.append(out.std().item()))
        for m in model.modules()
        if isinstance(m, tinit.WEIGHT_LAYERS)
    ]
    model.eval()
    with torch.no_grad():
        model(data)
    for h in hooks:
        h.remove()
    return stds


def test_lsuv_gives_unit_output_std_in_every_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 16, 5, padding=2), nn.ReLU(),
        nn.Conv1d(16, 32, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(32 * 40, 64), nn.Tanh(), nn.Linear(64, 10),
    )  # fmt: skip
    data = 5.0 * torch.randn(256, 1, 40) + 2.0  # deliberately unscaled
    init_model_(model, "lsuv", data=data)
    assert model.training  # LSUV switched dropout off for its passes and restored the flags
    stds = _layer_output_stds(model, data)
    assert len(stds) == 4
    assert all(abs(s - 1.0) < 0.1 for s in stds), stds


def test_lsuv_restores_batchnorm_statistics_and_modes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.BatchNorm1d(30), nn.ReLU(), nn.Dropout(0.5), nn.Linear(30, 5))
    data = torch.randn(128, 20)
    init_model_(model, "lsuv", data=data)
    assert torch.equal(model[1].running_mean, torch.zeros(30)) and torch.equal(model[1].running_var, torch.ones(30))
    assert model[1].num_batches_tracked.item() == 0
    assert all(m.training for m in model.modules())
    model.train()
    stds = []
    hooks = [model[i].register_forward_hook(lambda m, a, out: stds.append(out.std().item())) for i in (0, 4)]
    model[3].eval()  # measure without dropout noise, BatchNorm in training mode as during the LSUV passes
    with torch.no_grad():
        model(data)
    for h in hooks:
        h.remove()
    assert all(abs(s - 1.0) < 0.1 for s in stds), stds


def _tanh_mlp(scheme: str, depth: int = 20, width: int = 256) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return init_model_(nn.Sequential(*layers), scheme)


@functools.cache
def _trace(scheme: str) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Input x and, per layer, pre-activations z_l = W_l h_(l-1) and activations h_l = tanh(z_l) (cached)."""
    model = _tanh_mlp(scheme)
    x = torch.randn(1024, 256, generator=torch.Generator().manual_seed(1))
    h, pre, post = x, [], []
    with torch.no_grad():
        for linear, act in zip(model[0::2], model[1::2]):
            pre.append(linear(h))
            h = act(pre[-1])
            post.append(h)
    return x, pre, post


def _mean_field_std(depth: int) -> list[float]:
    """Infinite-width prediction of the pre-activation std under Var(w) = 1/n_in, biases 0, input var 1.

    q_1 = 1 and q_(l+1) = E_z[tanh(√q_l·z)²] for z ~ N(0, 1) (Poole et al. 2016, arXiv:1606.05340), computed in
    float64 with 101-point Gauss–Hermite quadrature.
    """
    z, w = np.polynomial.hermite_e.hermegauss(101)
    w = w / w.sum()
    q, stds = 1.0, []
    for _ in range(depth):
        stds.append(math.sqrt(q))
        q = float(np.tanh(math.sqrt(q) * z) ** 2 @ w)
    return stds


@pytest.mark.parametrize("scheme", ["lecun", "glorot"])
def test_lecun_and_glorot_keep_the_scale_of_each_tanh_layer(scheme: str) -> None:
    """20 tanh layers of width 256, input N(0, 1) (batch 1024), biases 0.

    What holds, and is asserted: the lesson's guarantee is about the linear part. Each layer maps its input
    h_(l-1) to a pre-activation z_l with the same std (ratio within [0.9, 1.1]; measured 0.985–1.017 at every
    layer), and the pre-activation std follows the mean-field recursion for tanh within 5% (measured ≤ 1.8%).
    No unit saturates (fraction |tanh| > 0.97 below 5%) and the signal does not vanish (last activation std > 0.1).

    What does not hold: "activation std within [0.5, 2] at every layer". tanh has slope < 1 away from 0, so
    every layer shrinks the variance a little (q ← q − 2q² for small q): measured pre-activation std 1.01, 0.63,
    0.48 (below 0.5 from layer 3 on), … 0.164 at layer 20; post-tanh std 0.160 at layer 20. The decay is
    polynomial (≈ 1/√(2l)), not the exponential collapse of ``gaussian`` — glorot equals lecun here because
    every layer is square (n_in = n_out).
    """
    x, pre, post = _trace(scheme)
    inputs = [x] + post[:-1]
    gains = [(z.std() / h.std()).item() for z, h in zip(pre, inputs)]
    assert all(0.9 <= g <= 1.1 for g in gains), gains
    predicted = _mean_field_std(len(pre))
    measured = [z.std().item() for z in pre]
    assert measured == pytest.approx(predicted, rel=0.05)
    assert max((h.abs() > 0.97).float().mean().item() for h in post) < 0.05
    assert 0.1 < post[-1].std().item() < 1.0


@pytest.mark.parametrize("scheme", ["lecun", "glorot"])
def test_lecun_and_glorot_keep_std_within_half_and_two_without_the_squashing(scheme: str) -> None:
    """The same 20-layer net with tanh replaced by the identity: the activation std stays in [0.5, 2]."""
    model = _tanh_mlp(scheme)
    x = torch.randn(1024, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for linear in model[0::2]:
            x = linear(x)
            assert 0.5 <= x.std().item() <= 2.0


def test_normal_saturates_a_deep_tanh_net() -> None:
    """N(0, 1) with n_in = 256: pre-activation std ≈ √256 = 16, so most tanh units sit at ±1.

    Measured: 89–90% of the units have |tanh| > 0.97 in every layer (P(|z| > atanh 0.97 ≈ 2.09) for z ~ N(0, 16)).
    """
    _, pre, post = _trace("normal")
    assert all(z.std().item() == pytest.approx(16.0, rel=0.1) for z in pre)
    assert all((h.abs() > 0.97).float().mean().item() > 0.8 for h in post)


def test_gaussian_shrinks_the_signal_of_a_deep_tanh_net() -> None:
    """σ = 1/n_in: each layer multiplies the std by about 1/√n_in = 1/16; after 20 layers nothing is left."""
    _, pre, post = _trace("gaussian")
    assert pre[0].std().item() == pytest.approx(1 / 16, rel=0.05)
    assert post[-1].std().item() < 1e-3


def relu_mlp(depth: int, width: int = 64, n_in: int = 64) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def test_signal_span_is_the_rms_ratio_he_et_al_predict_for_a_relu_net() -> None:
    """Var(w) = c/n_in multiplies a ReLU layer's second moment by c/2 (He et al. 2015, §2.2): with LeCun (c = 1)
    the rms after k ReLU layers is 0.707^k of the first layer's input, with He (c = 2) it stays at 1."""
    torch.manual_seed(0)
    x = torch.randn(4096, 64)
    net = relu_mlp(depth=6, width=512)
    init_model_(net, "lecun")
    low, high = tinit.signal_span(net, x)
    assert low == pytest.approx(0.5 ** 3, rel=0.1)   # the output, behind 6 ReLU layers: 0.707^6
    assert high == pytest.approx(0.5 ** 0.5, rel=0.05)  # the second layer's input, behind one: 0.707
    init_model_(net, "he")
    low, high = tinit.signal_span(net, x)
    assert 0.8 < low and high < 1.25


@pytest.mark.parametrize(("depth", "expected"), [(2, "glorot"), (3, "glorot"), (30, "he")])
def test_the_smallest_sound_init_is_glorot_for_a_shallow_relu_net_and_he_for_a_deep_one(depth: int,
                                                                                         expected: str) -> None:
    """Glorot/LeCun shrink a ReLU net's signal by 0.707 per layer: within a decade for a few layers, 0.707^30 ≈ 3e-5
    for thirty (He et al. 2015's depth where Xavier no longer trains) — there only He keeps it."""
    torch.manual_seed(0)
    x = torch.randn(512, 64)
    assert tinit.smallest_sound_init_(relu_mlp(depth), x) == expected


def test_the_smallest_sound_init_is_the_model_and_rng_state_one_draw_of_the_chosen_scheme_gives() -> None:
    torch.manual_seed(3)
    x = torch.randn(256, 64)
    net, twin = relu_mlp(12), relu_mlp(12)
    twin.load_state_dict(net.state_dict())
    state = torch.random.get_rng_state()
    chosen = tinit.smallest_sound_init_(net, x)
    after = torch.random.get_rng_state()
    torch.random.set_rng_state(state)
    init_model_(twin, chosen)
    assert torch.equal(torch.random.get_rng_state(), after)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_without_data_the_smallest_sound_init_takes_the_last_scheme_and_nan_never_passes() -> None:
    assert tinit.smallest_sound_init_(relu_mlp(2), None) == "he"
    net = relu_mlp(2)
    assert tinit.smallest_sound_init_(net, torch.zeros(8, 64)) == "he"   # rms 0 at the first layer: not measurable
    assert all(math.isnan(v) for v in tinit.signal_span(net, torch.zeros(8, 64)))
