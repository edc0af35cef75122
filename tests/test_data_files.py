"""Datasets read from local files: IDX (MNIST), CIFAR-10 python batches, CSV and NPZ — each written here in its
real format — plus the restricted unpickler against a hostile pickle."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from tricklab.data import load_data, load_pickle
from tricklab.errors import InputError

# ---------------------------------------------------------------------------------------------- IDX


def write_idx(file, array: np.ndarray, *, gz: bool = False, type_code: int = 0x08) -> None:
    """An IDX file: 0, 0, type byte, ndim, big-endian uint32 dims, then the values (uint8 here)."""
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(f"{file}.gz", "wb") as fh:
            fh.write(payload)
    else:
        file.write_bytes(payload)


def mnist_dir(root, *, n_train=40, n_test=10, gz=(False, True, False, True)):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for (name, array), zipped in zip(arrays.items(), gz):
        write_idx(root / name, array, gz=zipped)
    return arrays


@pytest.mark.parametrize("gz", [(False,) * 4, (True,) * 4, (False, True, True, False)])
def test_idx_reads_raw_and_gzipped_files(tmp_path, gz):
    arrays = mnist_dir(tmp_path, gz=gz)
    s = load_data("idx", path=str(tmp_path), val_fraction=0.25)
    assert s.x_train.shape == (30, 1, 28, 28) and s.x_val.shape == (10, 1, 28, 28) and s.input_shape == (1, 28, 28)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert torch.equal(s.x_test[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"].astype(np.float32)))
    assert s.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert s.num_classes == 10 and s.classes is None
    assert float(torch.cat([s.x_train, s.x_val]).max()) == 255.0  # raw grey levels


def test_idx_dot_spelling_and_fashion_class_names(tmp_path):
    arrays = mnist_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").rename(tmp_path / "train-images.idx3-ubyte")
    s = load_data("idx", path=tmp_path, variant="fashion")
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    assert len(s.y_train) + len(s.y_val) == len(arrays["train-labels-idx1-ubyte"])


def _idx_error(tmp_path) -> InputError:
    with pytest.raises(InputError) as info:
        load_data("idx", path=tmp_path)
    return info.value


def test_idx_bad_magic_number_names_the_file(tmp_path):
    mnist_dir(tmp_path, gz=(False,) * 4)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28), np.uint8))  # 2 dims: magic 0x802
    err = _idx_error(tmp_path)
    assert err.field == "data.path" and "t10k-images-idx3-ubyte" in str(err) and "0x00000802" in str(err)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x1f\x8b\x08\x00garbage")
    assert "magic number" in str(_idx_error(tmp_path))


def test_idx_truncated_file_names_the_file(tmp_path):
    mnist_dir(tmp_path, gz=(False,) * 4)
    file = tmp_path / "train-images-idx3-ubyte"
    file.write_bytes(file.read_bytes()[:-5])
    err = _idx_error(tmp_path)
    assert err.field == "data.path" and "train-images-idx3-ubyte" in str(err) and "bytes" in str(err)


def test_idx_broken_gzip_and_count_mismatch(tmp_path):
    mnist_dir(tmp_path, gz=(False, False, False, True))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    err = _idx_error(tmp_path)
    assert err.field == "data.path" and "t10k-labels-idx1-ubyte.gz" in str(err)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8), gz=True)
    err = _idx_error(tmp_path)
    assert err.field == "data" and "10 images" in str(err) and "7 labels" in str(err)


def test_idx_missing_files_and_missing_path(tmp_path):
    mnist_dir(tmp_path)
    os.remove(tmp_path / "t10k-images-idx3-ubyte")
    err = _idx_error(tmp_path)
    assert err.field == "data.path" and "lacks t10k-images-idx3-ubyte" in str(err)
    assert "train-labels-idx1-ubyte" in str(err)  # says what was expected
    with pytest.raises(InputError) as info:
        load_data("idx")
    assert info.value.field == "data.path" and "needs a path" in str(info.value)
    with pytest.raises(InputError) as info:
        load_data("idx", path=tmp_path / "nowhere")
    assert info.value.field == "data.path" and "nowhere" in str(info.value) and "does not exist" in str(info.value)


# ---------------------------------------------------------------------------------------------- CIFAR-10

CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def cifar_dir(root, *, protocol: int = 3, python2_numpy_name: bool = False) -> dict:
    """Five training batches of 4 images, a test batch of 6, and batches.meta, in the real dict format."""
    root.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": _batch(4, i) for i in range(1, 6)}
    batches["test_batch"] = _batch(6, 99)
    batches["batches.meta"] = {b"label_names": CIFAR_NAMES, b"num_cases_per_batch": 4, b"num_vis": 3072}
    for name, content in batches.items():
        blob = pickle.dumps(content, protocol=protocol)
        if python2_numpy_name:  # as written by Python 2 / NumPy 1: the GLOBAL opcode names numpy.core
            blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        (root / name).write_bytes(blob)
    return batches


@pytest.mark.parametrize(("protocol", "py2_name"), [(3, False), (4, False), (3, True)])
def test_cifar10_reads_python_batches(tmp_path, protocol, py2_name):
    batches = cifar_dir(tmp_path, protocol=protocol, python2_numpy_name=py2_name)
    s = load_data("cifar10", path=tmp_path, val_fraction=0.25)
    assert s.x_train.shape == (15, 3, 32, 32) and len(s.y_val) == 5 and s.x_test.shape == (6, 3, 32, 32)
    assert s.classes == [n.decode() for n in CIFAR_NAMES] and s.num_classes == 10
    test = batches["test_batch"]
    first = test[b"data"][0]  # 1024 red, 1024 green, 1024 blue values, each image row-major
    assert torch.equal(s.x_test[0, 1], torch.from_numpy(first[1024:2048].reshape(32, 32).astype(np.float32)))
    assert s.y_test.tolist() == test[b"labels"]
    train_ids = sorted(s.x_train[:, 0, 0, :4].tolist() + s.x_val[:, 0, 0, :4].tolist())
    expected = sorted(
        b[b"data"][i, :4].astype(float).tolist() for k, b in batches.items() if k.startswith("data") for i in range(4)
    )
    assert train_ids == expected


def test_cifar10_nested_directory_and_missing_batch(tmp_path):
    cifar_dir(tmp_path / "cifar-10-batches-py")
    assert len(load_data("cifar10", path=tmp_path).y_test) == 6
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(InputError) as info:
        load_data("cifar10", path=tmp_path)
    assert info.value.field == "data.path" and "data_batch_3" in str(info.value) and "test_batch" in str(info.value)


class _Hostile:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    cifar_dir(tmp_path)
    hostile = _Hostile()
    hostile.marker = tmp_path / "pwned"
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": hostile, b"labels": []}))
    with pytest.raises(InputError) as info:
        load_data("cifar10", path=tmp_path)
    assert info.value.field == "data.path" and "system" in str(info.value) and "data_batch_2" in str(info.value)
    assert not hostile.marker.exists()


@pytest.mark.parametrize("payload", [(eval, ("1+1",)), (getattr, ("text", "upper")), (bytearray, (3,))])
def test_only_plain_data_globals_are_allowed(tmp_path, payload):
    class Gadget:
        def __reduce__(self):
            return payload

    file = tmp_path / "gadget.pkl"
    file.write_bytes(pickle.dumps([Gadget()]))
    with pytest.raises(InputError, match="refused"):
        load_pickle(file)


def test_broken_pickle_is_an_input_error(tmp_path):
    batches = cifar_dir(tmp_path)
    assert load_pickle(tmp_path / "batches.meta") == batches["batches.meta"]
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batches["test_batch"])[:100])
    with pytest.raises(InputError) as info:
        load_data("cifar10", path=tmp_path)
    assert info.value.field == "data.path" and "test_batch" in str(info.value)


# ---------------------------------------------------------------------------------------------- CSV


def test_csv_with_header_and_string_labels(tmp_path):
    file = tmp_path / "iris.csv"
    rows = ["sepal,petal,species"] + [
        f"{i}.5,{2 * i},{['virginica', 'setosa', 'versicolor'][i % 3]}" for i in range(30)
    ]
    file.write_text("\n".join(rows) + "\n\n")
    s = load_data("csv", path=file, val_fraction=0.0, test_fraction=0.1)
    assert s.classes == ["setosa", "versicolor", "virginica"] and s.num_classes == 3
    assert s.x_train.shape == (27, 2) and s.input_shape == (2,)
    for x, y in zip(torch.cat([s.x_train, s.x_test]), torch.cat([s.y_train, s.y_test])):
        i = int(x[1]) // 2
        assert float(x[0]) == i + 0.5 and s.classes[int(y)] == ["virginica", "setosa", "versicolor"][i % 3]


def test_csv_label_column_by_name_and_index_semicolons_no_header(tmp_path):
    file = tmp_path / "data.csv"
    file.write_text("a;label;b\n" + "".join(f"{i};{i % 2};{-i}\n" for i in range(20)))
    by_name = load_data("csv", path=file, label_column="label")
    by_index = load_data("csv", path=file, label_column=1)
    assert torch.equal(by_name.x_train, by_index.x_train) and by_name.classes is None  # labels already 0..C-1
    assert torch.equal(by_name.x_train[:, 1], -by_name.x_train[:, 0])
    plain = tmp_path / "plain.csv"
    plain.write_text("".join(f"{i},{i * 3},{i % 3 + 1}\n" for i in range(20)))
    s = load_data("csv", path=plain)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 20  # no header: the first row is data
    assert s.classes == ["1", "2", "3"]  # 1..3 mapped to 0..2


def _csv_error(file, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        load_data("csv", path=file, **kwargs)
    return info.value


def test_csv_non_numeric_feature_names_column_and_line(tmp_path):
    file = tmp_path / "bad.csv"
    file.write_text("x1,x2,y\n1,2,a\n3,oops,b\n5,6,a\n")
    err = _csv_error(file)
    assert err.field == "data" and "'x2'" in str(err) and "line 3" in str(err) and "'oops'" in str(err)
    file.write_text("x1,x2,y\n1,2,a\n3,,b\n")
    assert "missing value" in str(_csv_error(file))


def test_csv_label_column_errors_list_the_columns(tmp_path):
    file = tmp_path / "d.csv"
    file.write_text("x1,x2,y\n1,2,a\n3,4,b\n")
    err = _csv_error(file, label_column="target")
    assert err.field == "data.label_column" and "x1, x2, y" in str(err)
    err = _csv_error(file, label_column=3)
    assert err.field == "data.label_column" and "-3..2" in str(err)


def test_csv_ragged_rows_nan_rows_and_regression_labels(tmp_path):
    file = tmp_path / "d.csv"
    file.write_text("1,2,0\n3,4,1\n5,6\n")
    err = _csv_error(file)
    assert err.field == "data.path" and "line 3 has 2 fields" in str(err)
    file.write_text("1,2,0\nnan,4,1\n5,6,0\n7,inf,1\n")
    assert "rows 1, 3 contain NaN/Inf" in str(_csv_error(file))
    file.write_text("1,2,0.5\n3,4,1.0\n5,6,0\n")
    assert "regression" in str(_csv_error(file))
    (tmp_path / "empty.csv").write_text("\n\n")
    assert _csv_error(tmp_path / "empty.csv").field == "data"
    assert _csv_error(tmp_path / "absent.csv").field == "data.path"


# ---------------------------------------------------------------------------------------------- NPZ


def test_npz_keeps_the_example_shape_and_maps_string_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 2, 3)).astype(np.float32)
    y = np.array(["cat", "dog"])[np.arange(50) % 2]
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:5], y_test=y[:5])
    s = load_data("npz", path=tmp_path / "d.npz")
    assert s.input_shape == (2, 3) and s.classes == ["cat", "dog"]
    assert torch.equal(s.x_test, torch.from_numpy(x[:5])) and s.y_test.tolist() == [0, 1, 0, 1, 0]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2))}, "expected an .npz file with arrays x and y"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4), "x_test": np.zeros((1, 2))}, "only one of x_test and y_test"),
        ({"x": np.array([{"a": 1}] * 4, dtype=object), "y": np.zeros(4)}, "cannot read"),
    ],
)
def test_npz_refuses_missing_arrays_and_pickled_objects(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError, match=message) as info:
        load_data("npz", path=tmp_path / "d.npz")
    assert info.value.field == "data.path"


def test_npz_that_is_not_an_archive(tmp_path):
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(InputError, match="single array"):
        load_data("npz", path=tmp_path / "single.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(InputError, match="cannot read"):
        load_data("npz", path=tmp_path / "text.npz")
