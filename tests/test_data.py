"""Datasets and splits: shapes, seeded determinism, disjoint splits, MNIST-1D generation and its cache, errors."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tricklab.data import DATASETS, Splits, cache_dir, load_data
from tricklab.data.cache import cache_file, cached_arrays
from tricklab.data.splits import cap_indices, carve, fraction_count
from tricklab.errors import InputError


def _indexed_npz(path, n=200, n_test=None, features=3):
    """An .npz whose example i holds the value i in every feature, so splits can be traced back to rows."""
    x = np.repeat(np.arange(n, dtype=np.float64)[:, None], features, axis=1)
    arrays = {"x": x, "y": np.arange(n) % 4}
    if n_test is not None:
        arrays["x_test"] = np.repeat(1000.0 + np.arange(n_test)[:, None], features, axis=1)
        arrays["y_test"] = np.arange(n_test) % 4
    file = path / "indexed.npz"
    np.savez(file, **arrays)
    return file


def _ids(x: torch.Tensor) -> list[int]:
    return [int(v) for v in x[:, 0].tolist()]


def _tensors(s: Splits) -> list[torch.Tensor]:
    return [s.x_train, s.y_train, s.x_val, s.y_val, s.x_test, s.y_test]


# ---------------------------------------------------------------------------------------------- registry


def test_every_dataset_is_registered_with_reference_and_note():
    assert DATASETS.names() == ["mnist1d", "digits", "idx", "cifar10", "csv", "npz", "synthetic"]
    for entry in DATASETS:
        assert entry.reference and entry.note and entry.formula, entry.name


# ---------------------------------------------------------------------------------------------- splits


def test_digits_shapes_dtypes_and_raw_values():
    s = load_data("digits")
    # 1797 examples: test = round(0.2·1797) = 359, val = round(0.1·1438) = 144
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (1294, 144, 359)
    assert s.x_train.shape == (1294, 1, 8, 8) and s.input_shape == (1, 8, 8)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert s.num_classes == 10 and s.classes == [str(d) for d in range(10)]
    everything = torch.cat([s.x_train, s.x_val, s.x_test])
    assert everything.min() == 0 and everything.max() == 16  # unscaled grey levels
    assert set(torch.cat([s.y_train, s.y_val, s.y_test]).tolist()) == set(range(10))


def test_summary_is_json_and_to_moves_every_tensor():
    s = load_data("synthetic", size=100)
    summary = s.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary == {
        "name": "synthetic",
        "train": 72,
        "val": 8,
        "test": 20,
        "input_shape": [2],
        "num_classes": 3,
        "classes": None,
    }
    moved = s.to(torch.device("cpu"))
    assert moved is not s
    assert all(torch.equal(a, b) for a, b in zip(_tensors(moved), _tensors(s)))


@pytest.mark.parametrize(("name", "kwargs"), [("digits", {}), ("synthetic", {"variant": "teacher", "size": 300})])
def test_same_arguments_give_bit_identical_tensors(name, kwargs):
    a, b = load_data(name, split_seed=3, **kwargs), load_data(name, split_seed=3, **kwargs)
    for ta, tb in zip(_tensors(a), _tensors(b)):
        assert torch.equal(ta, tb)


def test_validation_is_carved_from_train_without_overlap(tmp_path):
    file = _indexed_npz(tmp_path, n=200)
    s = load_data("npz", path=file, val_fraction=0.25, test_fraction=0.2, split_seed=1)
    train, val, test = _ids(s.x_train), _ids(s.x_val), _ids(s.x_test)
    assert (len(train), len(val), len(test)) == (120, 40, 40)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == list(range(200))
    # labels travel with their examples
    assert s.y_train.tolist() == [i % 4 for i in train]


def test_own_test_split_is_kept_and_validation_comes_from_train(tmp_path):
    file = _indexed_npz(tmp_path, n=100, n_test=30)
    s = load_data("npz", path=file, val_fraction=0.1)
    assert _ids(s.x_test) == [1000 + i for i in range(30)]  # the file's test split, in file order
    assert sorted(_ids(s.x_train) + _ids(s.x_val)) == list(range(100))
    assert len(s.y_val) == 10


def test_split_seed_changes_the_split_but_not_the_pool(tmp_path):
    file = _indexed_npz(tmp_path, n=100, n_test=20)
    a, b = load_data("npz", path=file, split_seed=0), load_data("npz", path=file, split_seed=1)
    assert set(_ids(a.x_val)) != set(_ids(b.x_val))
    assert sorted(_ids(a.x_train) + _ids(a.x_val)) == sorted(_ids(b.x_train) + _ids(b.x_val))
    assert torch.equal(a.x_test, b.x_test)


def test_zero_validation_fraction_gives_an_empty_validation_split(tmp_path):
    s = load_data("npz", path=_indexed_npz(tmp_path, n=50, n_test=5), val_fraction=0.0)
    assert len(s.y_val) == 0 and s.x_val.shape == (0, 3) and len(s.y_train) == 50


def test_train_subset_keeps_the_first_training_examples(tmp_path):
    file = _indexed_npz(tmp_path, n=200)
    full = load_data("npz", path=file, split_seed=2)
    small = load_data("npz", path=file, split_seed=2, train_subset=16)
    assert torch.equal(small.x_train, full.x_train[:16]) and torch.equal(small.y_train, full.y_train[:16])
    assert torch.equal(small.x_val, full.x_val) and torch.equal(small.x_test, full.x_test)
    assert len(load_data("npz", path=file, train_subset=10_000).y_train) == len(full.y_train)


def test_size_caps_file_data_and_keeps_the_train_test_ratio(tmp_path):
    file = _indexed_npz(tmp_path, n=600, n_test=200)
    s = load_data("npz", path=file, size=80, val_fraction=0.0)
    assert (len(s.y_train), len(s.y_test)) == (60, 20)
    a = load_data("npz", path=file, size=80, split_seed=0)
    b = load_data("npz", path=file, size=80, split_seed=5)
    # the capped pool is the same for every split seed, only the split differs
    assert sorted(_ids(a.x_train) + _ids(a.x_val)) == sorted(_ids(b.x_train) + _ids(b.x_val))
    capped = load_data("digits", size=100)
    assert len(capped.y_train) + len(capped.y_val) + len(capped.y_test) == 100


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 400), fraction=st.floats(0.0, 0.9), seed=st.integers(0, 2**31))
def test_carve_partitions_the_examples(n, fraction, seed):
    if n - fraction_count(n, fraction) < 1:
        with pytest.raises(InputError):
            carve(n, fraction, seed, purpose="val", what="pool")
        return
    kept, carved = carve(n, fraction, seed, purpose="val", what="pool")
    assert len(carved) == fraction_count(n, fraction) and (fraction == 0) == (len(carved) == 0)
    assert sorted(np.concatenate([kept, carved]).tolist()) == list(range(n))


@settings(max_examples=60, deadline=None)
@given(n_train=st.integers(1, 300), n_test=st.none() | st.integers(1, 100), size=st.integers(1, 500))
@example(n_train=1, n_test=100, size=2)
@example(n_train=100, n_test=1, size=2)
def test_cap_keeps_at_most_size_distinct_examples(n_train, n_test, size):
    if size == 1 and n_test is not None and n_train + n_test > 1:
        with pytest.raises(InputError):
            cap_indices(n_train, n_test, size)
        return
    train, test = cap_indices(n_train, n_test, size)
    total = len(train) + (0 if test is None else len(test))
    assert total == min(size, n_train + (n_test or 0))
    assert (test is None) == (n_test is None) and len(train) >= 1
    for idx, n in ((train, n_train), (test, n_test)):
        if idx is not None:
            assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < n


# ---------------------------------------------------------------------------------------------- synthetic


def test_spirals_default_shape_classes_and_seed():
    s = load_data("synthetic")
    assert s.input_shape == (2,) and s.num_classes == 3
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 2000
    y = torch.cat([s.y_train, s.y_val, s.y_test])
    assert torch.bincount(y).tolist() == [667, 667, 666]
    radius = torch.cat([s.x_train, s.x_val, s.x_test]).norm(dim=1)
    assert radius.max() <= 1.0 + 1e-6  # r runs from 0 to 1
    other = load_data("synthetic", split_seed=1)
    assert not torch.equal(s.x_train, other.x_train)


def test_teacher_labels_twenty_gaussian_features_into_ten_balanced_classes():
    s = load_data("synthetic", variant="teacher", size=4000, val_fraction=0.0)
    assert s.input_shape == (20,) and s.num_classes == 10
    counts = torch.bincount(torch.cat([s.y_train, s.y_test]), minlength=10)
    assert counts.min() > 250  # calibrated: about 400 each, none starved
    assert abs(float(s.x_train.mean())) < 0.05 and abs(float(s.x_train.std()) - 1.0) < 0.05


# ---------------------------------------------------------------------------------------------- mnist1d


@pytest.fixture(scope="module")
def mnist1d_5000():
    """MNIST-1D as in the paper, generated once per session into the session cache (see conftest)."""
    return load_data("mnist1d")


def test_mnist1d_paper_sizes_and_shape(mnist1d_5000):
    s = mnist1d_5000
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (3600, 400, 1000)
    assert s.x_train.shape == (3600, 1, 40) and s.input_shape == (1, 40)
    assert s.x_train.dtype == torch.float32 and s.num_classes == 10
    assert torch.bincount(torch.cat([s.y_train, s.y_val, s.y_test])).tolist() == [500] * 10


def test_mnist1d_second_load_reads_the_cache(mnist1d_5000, monkeypatch):
    import mnist1d.data

    def forbidden(*args, **kwargs):
        raise AssertionError("make_dataset called although the cache holds the data")

    monkeypatch.setattr(mnist1d.data, "make_dataset", forbidden)
    again = load_data("mnist1d")
    assert list(cache_dir().glob("mnist1d-*.npz"))
    for a, b in zip(_tensors(again), _tensors(mnist1d_5000)):
        assert torch.equal(a, b)


def test_mnist1d_cache_survives_corruption_and_keeps_global_rng(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path))
    calls = []
    original = mnist1d.data.make_dataset
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda args: calls.append(args) or original(args))
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    first = load_data("mnist1d", size=200)
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    (file,) = tmp_path.glob("mnist1d-*.npz")
    assert len(calls) == 1 and calls[0].num_samples == 200 and calls[0].seed == 42
    file.write_bytes(b"not a zip file at all")
    second = load_data("mnist1d", size=200)
    assert len(calls) == 2  # regenerated
    for a, b in zip(_tensors(first), _tensors(second)):
        assert torch.equal(a, b)
    with np.load(file, allow_pickle=False) as stored:  # rewritten, readable, no pickle inside
        assert stored["x"].shape == (160, 40)
    memo = f"mnist1d-args-{_mnist1d_version()}.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([file.name, memo])  # no temporary file left
    load_data("mnist1d", size=200)
    assert len(calls) == 2


def _mnist1d_version():
    from importlib.metadata import version

    return version("mnist1d")


def test_mnist1d_defaults_memo_spares_the_package_import(tmp_path):
    """A process whose cache holds the data and the generator's defaults for this mnist1d version never imports
    mnist1d (and matplotlib, which it imports); an unreadable memo is rebuilt and gives the same cache key."""
    from tricklab.data.mnist1d import _key_args, generator_args

    probe = ("import sys; from tricklab.data import load_data; s = load_data('mnist1d', size=300); "
             "print(len(s.y_train), 'mnist1d' in sys.modules, 'matplotlib' in sys.modules)")
    env = dict(os.environ, TRICKLAB_CACHE=str(tmp_path), PYTHONPATH=str(ROOT))

    def run():
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                              check=True).stdout.split()

    assert run()[1] == "True"                      # first time: generated with the package
    assert run() == ["216", "False", "False"]      # then: neither the package nor matplotlib
    memo = tmp_path / f"mnist1d-args-{_mnist1d_version()}.json"
    memo.write_text("{not json")
    assert run() == ["216", "True", "True"]        # rebuilt from the package, data still from the cache
    assert run()[1:] == ["False", "False"]
    package = {k: v for k, v in generator_args(300).items() if k != "url"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRICKLAB_CACHE", str(tmp_path))
        assert json.dumps(_key_args(300), sort_keys=True) == json.dumps(package, sort_keys=True, default=str)


def test_mnist1d_cache_key_depends_on_size(tmp_path, monkeypatch):
    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path))
    assert cache_file("mnist1d", {"n": 1}) != cache_file("mnist1d", {"n": 2})
    assert cache_file("mnist1d", {"n": 1}).parent == tmp_path


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TRICKLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tricklab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "tricklab"


def test_cache_rebuilds_a_file_that_lacks_an_array(tmp_path, monkeypatch):
    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path))
    key = {"what": "test"}
    np.savez(cache_file("t", key), a=np.zeros(2))  # right name, wrong content
    out = cached_arrays("t", key, ("a", "b"), lambda: {"a": np.ones(2), "b": np.arange(3)})
    assert out["b"].tolist() == [0, 1, 2]
    assert cached_arrays("t", key, ("a", "b"), lambda: pytest.fail("rebuilt twice"))["a"].tolist() == [1, 1]


def test_unwritable_cache_warns_and_still_returns_data(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("TRICKLAB_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        out = cached_arrays("t", {}, ("a",), lambda: {"a": np.arange(2)})
    assert out["a"].tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------- errors


def _field_of(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    return info.value.field


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises(InputError) as info:
        load_data("imagenet")
    assert info.value.field == "data.name" and "mnist1d" in str(info.value) and "cifar10" in str(info.value)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, math.nan, math.inf, "0.1", True, None])
def test_bad_val_fraction(value):
    assert _field_of(lambda: load_data("synthetic", val_fraction=value)) == "data.val_fraction"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"test_fraction": 0.0}, "data.test_fraction"),
        ({"test_fraction": 1.0}, "data.test_fraction"),
        ({"size": 0}, "data.size"),
        ({"size": 2.5}, "data.size"),
        ({"train_subset": 0}, "data.train_subset"),
        ({"split_seed": -1}, "data.split_seed"),
        ({"split_seed": 1.0}, "data.split_seed"),
        ({"label_column": 1.5}, "data.label_column"),
        ({"variant": "moons"}, "data.variant"),
        ({"variant": 3}, "data.variant"),
        ({"path": 3}, "data.path"),
    ],
)
def test_bad_arguments_name_their_field(kwargs, field):
    assert _field_of(lambda: load_data("synthetic", **kwargs)) == field


def test_variant_on_a_dataset_without_variants_and_too_small_mnist1d():
    assert _field_of(lambda: load_data("digits", variant="teacher")) == "data.variant"
    assert _field_of(lambda: load_data("mnist1d", size=5)) == "data.size"


def test_too_few_examples_to_split():
    assert _field_of(lambda: load_data("synthetic", size=1)) == "data"


def test_nan_and_inf_rows_are_named(tmp_path):
    x = np.zeros((30, 4))
    x[3, 1] = np.nan
    x[17, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(30) % 2)
    with pytest.raises(InputError) as info:
        load_data("npz", path=tmp_path / "bad.npz")
    assert info.value.field == "data" and "rows 3, 17 contain NaN/Inf" in str(info.value)


def test_empty_data_and_label_count_mismatch(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3)), y=np.zeros(0, dtype=np.int64))
    with pytest.raises(InputError, match="no"):
        load_data("npz", path=tmp_path / "empty.npz")
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((10, 3)), y=np.zeros(9, dtype=np.int64))
    with pytest.raises(InputError) as info:
        load_data("npz", path=tmp_path / "mismatch.npz")
    assert info.value.field == "data" and "10 examples but 9 labels" in str(info.value)


def test_path_is_ignored_by_datasets_that_take_none(tmp_path):
    assert len(load_data("synthetic", path=os.fspath(tmp_path / "nothing"), size=50).y_train) == 36
