"""Augmentation, label smoothing, mixup and gradient accumulation (issue 19 item 3): each trick against a reference,
seeded per batch (resume-exact), and reachable from a recipe."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from tricklab.cli.main import main
from tricklab.population.support import population_unsupported
from tricklab.recipe import recipe_from_dict
from tricklab.train import Trainer, train
from tricklab.tricks.accumulation import micro_batches
from tricklab.tricks.augment import batch_generator, build_augment, crop_flip, shift_noise
from tricklab.tricks.soft_targets import lambda_rng, mixed_loss, mixup, smoothed_cross_entropy


def _naive_shift_noise(x, shifts, noise):
    out = torch.zeros_like(x)
    length = x.shape[-1]
    for b, s in enumerate(shifts):
        for t in range(length):
            if 0 <= t - s < length:
                out[b, :, t] = x[b, :, t - s]
    return out + noise


@pytest.mark.parametrize("max_shift, std", [(0, 0.0), (3, 0.0), (5, 0.1), (40, 0.0)])
def test_shift_noise_is_a_zero_filled_shift_plus_gaussian_noise(max_shift, std):
    x = torch.randn(16, 2, 12, generator=torch.Generator().manual_seed(1))
    got = shift_noise(x, torch.Generator().manual_seed(7), max_shift, std)
    g = torch.Generator().manual_seed(7)      # the same draws, in the same order
    shifts = torch.randint(-max_shift, max_shift + 1, (16, 1), generator=g)[:, 0].tolist()
    noise = std * torch.randn(x.shape, generator=g) if std > 0 else torch.zeros_like(x)
    assert torch.allclose(got, _naive_shift_noise(x, shifts, noise), atol=1e-6)
    if max_shift:
        assert len(set(shifts)) > 1   # examples are shifted each by their own amount


def test_crop_flip_is_a_padded_crop_then_a_mirror_per_image():
    x = torch.randn(20, 3, 8, 6, generator=torch.Generator().manual_seed(2))
    p = 2
    got = crop_flip(x, torch.Generator().manual_seed(3), p)
    g = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 2 * p + 1, (20, 1), generator=g)[:, 0]
    dx = torch.randint(0, 2 * p + 1, (20, 1), generator=g)[:, 0]
    flip = (torch.rand((20, 1), generator=g) < 0.5)[:, 0]
    for b in range(20):
        window = F.pad(x[b], (p, p, p, p))[:, dy[b]:dy[b] + 8, dx[b]:dx[b] + 6]
        assert torch.equal(got[b], window.flip(-1) if flip[b] else window)
    assert 0 < int(flip.sum()) < 20 and got.shape == x.shape


def test_augmentations_refuse_the_wrong_shape():
    with pytest.raises(ValueError, match="1-D signals"):
        shift_noise(torch.zeros(2, 3, 4, 5), torch.Generator(), 1, 0.0)
    with pytest.raises(ValueError, match="images"):
        crop_flip(torch.zeros(2, 3, 4), torch.Generator(), 1)


@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.1, 0.5, 0.9])
def test_label_smoothing_equals_torch_cross_entropys(epsilon):
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(32, 7, generator=g, dtype=torch.float64) * 4, torch.randint(0, 7, (32,), generator=g)
    reference = F.cross_entropy(logits, y, label_smoothing=epsilon)
    assert torch.allclose(smoothed_cross_entropy(logits, y, epsilon), reference, rtol=1e-12, atol=1e-12)


def test_mixup_mixes_inputs_and_targets_as_zhang_et_al():
    """x̃ = λx + (1−λ)x[perm]; the loss equals the cross-entropy against the mixed one-hot targets; λ ~ Beta(α, α)
    (a Kolmogorov–Smirnov test against scipy's Beta over 2000 batches' λ)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g)
    mixed, y_a, y_b, lam = mixup(x, y, 0.4, torch.Generator().manual_seed(1), random.Random(3))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm]) and torch.equal(y_b, y[perm]) and torch.equal(y_a, y)
    logits = torch.randn(16, 4, generator=g, dtype=torch.float64)
    soft = lam * F.one_hot(y_a, 4).double() + (1 - lam) * F.one_hot(y_b, 4).double()
    assert torch.allclose(mixed_loss(F.cross_entropy, logits, y_a, y_b, lam), F.cross_entropy(logits, soft))
    lams = [mixup(x, y, 0.4, torch.Generator(), lambda_rng(5, step))[3] for step in range(2000)]
    assert stats.kstest(lams, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3


def test_micro_batches_cover_the_batch_with_weights_summing_to_one():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    parts = list(micro_batches(x, y, 4))
    assert [len(p[1]) for p in parts] == [3, 3, 3, 1] and sum(w for *_, w in parts) == pytest.approx(1.0)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)


def _toy(n=256, d=6, c=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x, x[:, :c].argmax(1)


def _fit(dtype=torch.float32, epochs=2, checkpoint_dir=None, resume=False, sgd=False, **kwargs):
    x, y = _toy(dtype=dtype)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 3)).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if sgd else \
        torch.optim.AdamW(model.parameters(), lr=0.01)
    trainer = Trainer(model, opt, (x[:200], y[:200]), (x[200:], y[200:]),
                      epochs=epochs, seed=1, checkpoint_dir=checkpoint_dir, **kwargs)
    state = trainer.fit(resume=resume)
    return model, state


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_accumulating_n_batches_equals_an_n_times_larger_batch(dtype, tol):
    """accumulate=4 of 16 = one batch of 64: same steps, same data order, same weights up to the order of the
    floating-point sums (layer norm: nothing looks across the batch). SGD: Adam divides by √v + ε, which turns the
    rounding noise of a gradient that is exactly 0 (a symmetry) into an update of ~noise/ε."""
    big, big_state = _fit(dtype, batch_size=64, sgd=True)
    acc, acc_state = _fit(dtype, batch_size=16, accumulate=4, sgd=True)
    assert acc_state.step == big_state.step == 2 * 4   # 200 examples: 3 full steps + one of 8 per epoch
    for a, b in zip(acc.parameters(), big.parameters()):
        assert torch.allclose(a, b, rtol=tol, atol=tol)
    assert [h["train_loss"] for h in acc_state.history] == pytest.approx([h["train_loss"] for h in big_state.history],
                                                                         rel=tol)
    small, _ = _fit(dtype, batch_size=16, sgd=True)
    assert not torch.allclose(next(small.parameters()), next(big.parameters()), rtol=tol, atol=tol)


def test_tricked_steps_resume_exactly(tmp_path):
    """Augmentation and mixup draw from (seed, step) alone: 2 epochs + a resume to 4 = 4 uninterrupted epochs, bit
    for bit (dropout's RNG comes from the checkpoint)."""
    tricks = {"batch_size": 32, "mixup": 0.4, "label_smoothing": 0.1, "accumulate": 2,
              "augment": lambda x, g: x + 0.1 * torch.randn(x.shape, generator=g)}
    whole, _ = _fit(epochs=4, **tricks)
    _fit(epochs=2, checkpoint_dir=tmp_path, **tricks)
    resumed, state = _fit(epochs=4, checkpoint_dir=tmp_path, resume=True, **tricks)
    assert state.epoch == 4 and all(torch.equal(a, b) for a, b in zip(resumed.parameters(), whole.parameters()))
    assert batch_generator(1, 5, "cpu").initial_seed() == batch_generator(1, 5, "cpu").initial_seed()
    assert batch_generator(1, 5, "cpu").initial_seed() != batch_generator(1, 6, "cpu").initial_seed()


def test_label_smoothing_trains_on_smoothed_targets_and_reports_the_plain_validation_loss():
    model, state = _fit(batch_size=50, label_smoothing=0.2)
    x, y = _toy()
    model.eval()
    with torch.no_grad():
        assert state.history[-1]["val_loss"] == pytest.approx(F.cross_entropy(model(x[200:]), y[200:]).item(),
                                                              rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), epochs=1, batch_size=8,
                label_smoothing=0.1, loss_fn=F.mse_loss)


RECIPE = ["data.name=synthetic", "data.size=600", "model.name=mlp", "model.depth=1", "model.width=16", "epochs=2",
          "data.batch_size=32", "schedule.name=constant"]


def test_a_recipe_trains_with_every_step_trick(tmp_path):
    r = train(None, overrides=RECIPE + ["loss.label_smoothing=0.1", "data.mixup=0.2", "accumulate=2",
                                        "model.norm=layer"], run_dir=tmp_path / "a")
    assert r.status == "completed" and r.test_loss < 1.5 and r.steps == 2 * 7   # 432 examples, batches of 64
    signal = train(None, overrides=["data.name=mnist1d", "data.size=800", "model.name=mlp", "model.depth=1",
                                    "model.width=16", "epochs=1", "data.augment=shift_noise"], run_dir=tmp_path / "s")
    assert signal.status == "completed"


def test_an_augmentation_for_other_data_exits_2_naming_it(tmp_path, capsys):
    rc = main(["train", *[a for o in RECIPE + ["data.name=mnist1d", "data.size=500", "data.augment=crop_flip"]
                         for a in ("--set", o)], "--store", "none", "--quiet", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: data.augment: crop_flip transforms examples of 3 dimensions")
    assert "allowed: none, shift_noise" in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("key, value", [("data.augment", "shift_noise"), ("data.mixup", 0.2), ("accumulate", 2),
                                        ("loss.label_smoothing", 0.1), ("precision", "bf16")])
def test_populations_train_the_new_tricks_alone(key, value):
    section, _, name = key.rpartition(".")
    recipe = recipe_from_dict({section: {name: value}} if section else {name: value})
    assert population_unsupported(recipe) == key


def test_the_augment_registry_builds_each_augmentation():
    x = torch.randn(4, 1, 10)
    assert build_augment("none") is None
    assert build_augment("shift_noise", shift=2, noise=0.0)(x, torch.Generator()).shape == x.shape
    assert build_augment("crop_flip", shift=1)(torch.randn(4, 1, 5, 5), torch.Generator()).shape == (4, 1, 5, 5)


def test_shift_is_the_contracts_name_for_shift_noise():
    """DESIGN.md's recipe shape spells it `data.augment: shift`; the recipe keeps the canonical name."""
    from tricklab.recipe import load_recipe
    from tricklab.tricks.augment import AUGMENTATIONS

    assert load_recipe(None, ["data.augment=shift"]).data.augment == "shift_noise"
    assert AUGMENTATIONS.canonical("shift") == "shift_noise"
