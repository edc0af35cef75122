"""Input scaling: train-split statistics, ranges against a float64 reference, constant features, save/load."""

from __future__ import annotations

import io
import json

import pytest
import torch

from tricklab.errors import InputError
from tricklab.tricks.scaling import SCALINGS, Scaler, fit_scaler, float_epsilons, lesson_float_example


def _data(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 4) float32 features with very different offsets and scales; feature [1, 2] is constant."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.linspace(-100, 1000, 12).reshape(3, 4)
    scales = torch.logspace(-3, 3, 12).reshape(3, 4)
    x = offsets + scales * torch.randn(n, 3, 4, generator=g)
    x[:, 1, 2] = 7.0
    return x


TRAIN = _data(500, seed=0)
TEST = _data(200, seed=1)


def test_catalogue_names() -> None:
    assert SCALINGS.names() == ["none", "minmax01", "minmax11", "standard"]


def test_none_is_the_identity() -> None:
    scaler = fit_scaler("none", TRAIN)
    assert scaler(TEST) is TEST


def test_minmax01_maps_train_to_exactly_zero_one_per_feature() -> None:
    y = fit_scaler("minmax01", TRAIN)(TRAIN)
    varying = torch.ones(3, 4, dtype=torch.bool)
    varying[1, 2] = False
    assert torch.equal(y.amin(dim=0)[varying], torch.zeros(11))
    assert torch.equal(y.amax(dim=0)[varying], torch.ones(11))
    x = TRAIN.double()
    reference = (x - x.amin(0)) / (x.amax(0) - x.amin(0))
    torch.testing.assert_close(y.double()[:, varying], reference[:, varying], atol=1e-6, rtol=0)


def test_minmax11_is_two_minmax01_minus_one() -> None:
    y = fit_scaler("minmax11", TRAIN)(TRAIN)
    varying = torch.ones(3, 4, dtype=torch.bool)
    varying[1, 2] = False
    assert torch.equal(y.amin(dim=0)[varying], -torch.ones(11))
    assert torch.equal(y.amax(dim=0)[varying], torch.ones(11))
    torch.testing.assert_close(y, 2 * fit_scaler("minmax01", TRAIN)(TRAIN) - 1)


def test_standard_gives_mean_zero_std_one_per_feature() -> None:
    y = fit_scaler("standard", TRAIN)(TRAIN).double()
    x = TRAIN.double()
    reference = (x - x.mean(0)) / x.std(0, correction=0)
    varying = torch.ones(3, 4, dtype=torch.bool)
    varying[1, 2] = False
    torch.testing.assert_close(y[:, varying], reference[:, varying], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y.mean(0)[varying], torch.zeros(11, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, correction=0)[varying], torch.ones(11, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["minmax01", "minmax11", "standard"])
def test_other_splits_use_the_training_statistics(name: str) -> None:
    train_scaler = fit_scaler(name, TRAIN)
    y = train_scaler(TEST).double()
    x, t = TEST.double(), TRAIN.double()
    if name == "standard":
        reference = (x - t.mean(0)) / t.std(0, correction=0)
    else:
        reference = (x - t.amin(0)) / (t.amax(0) - t.amin(0))
        reference = 2 * reference - 1 if name == "minmax11" else reference
    varying = torch.ones(3, 4, dtype=torch.bool)
    varying[1, 2] = False
    torch.testing.assert_close(y[:, varying], reference[:, varying], atol=1e-5, rtol=1e-5)
    # and they differ from what the test split's own statistics would give
    assert not torch.allclose(y, fit_scaler(name, TEST)(TEST).double(), atol=1e-3)


@pytest.mark.parametrize("name,constant_value", [("minmax01", 0.0), ("minmax11", -1.0), ("standard", 0.0)])
def test_constant_feature_gives_no_nan(name: str, constant_value: float) -> None:
    scaler = fit_scaler(name, TRAIN)
    assert scaler.scale[1, 2].item() == 1.0
    y = scaler(TRAIN)
    assert torch.isfinite(y).all()
    assert torch.all(y[:, 1, 2] == constant_value)
    single = fit_scaler(name, TRAIN[:1])  # one example: every feature is constant
    assert torch.isfinite(single(TEST)).all()


def test_integer_images_become_float() -> None:
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = fit_scaler("minmax01", images)(images)
    assert y.dtype == torch.float32 and 0.0 <= y.min().item() and y.max().item() <= 1.0


@pytest.mark.parametrize("name", ["none", "minmax01", "minmax11", "standard"])
def test_state_dict_round_trip(name: str) -> None:
    scaler = Scaler.fit(name, TRAIN)
    buffer = io.BytesIO()
    torch.save(scaler.state_dict(), buffer)
    buffer.seek(0)
    restored = Scaler.from_state_dict(torch.load(buffer))
    assert restored.name == name
    assert torch.equal(restored.transform(TEST), scaler.transform(TEST))
    torch.testing.assert_close(restored.inverse_transform(restored(TEST)), TEST, rtol=1e-5, atol=1e-3)


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(InputError) as unknown:
        fit_scaler("zscore", TRAIN)
    assert unknown.value.field == "data.scale" and "standard" in str(unknown.value)
    with pytest.raises(InputError):
        fit_scaler("standard", TRAIN[:0])
    with pytest.raises(ValueError, match="shape"):
        fit_scaler("standard", TRAIN)(TEST.reshape(200, 12))


def test_float_epsilons_and_the_lessons_example() -> None:
    eps = float_epsilons()
    assert eps == {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
    example = lesson_float_example()
    assert example["small_lost"] and example["result"] == 1e10 and example["dtype"] == "float32"
    assert example["text"] == "in float32, 1e-10 + 1e+10 = 1e+10: the 1e-10 is lost"
    json.dumps(example)  # plain data for the catalogue
    assert not lesson_float_example(small=1e4, large=1e10)["small_lost"]  # 1e4 is above the spacing (1024) at 1e10
