"""MNIST and Fashion-MNIST from their IDX files in a local directory (nothing is downloaded).

LeCun, Bottou, Bengio & Haffner 1998 (MNIST, http://yann.lecun.com/exdb/mnist/); Xiao, Rasul & Vollgraf 2017
(Fashion-MNIST, arXiv:1708.07747) — same file format, same sizes: 60000 train + 10000 test images of 28×28.

The four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` may each be raw or gzipped (``.gz``); the spelling ``train-images.idx3-ubyte`` is
accepted too. IDX format: two zero bytes, a type byte (0x08 = unsigned byte, ...), the number of dimensions,
then each dimension as a big-endian uint32, then the values in C order. The header is parsed and checked here
(magic number, dimensions, file length) so that a wrong or truncated file is named instead of misread.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from tricklab.data.registry import DATASETS
from tricklab.data.source import LoadRequest, RawData, member
from tricklab.errors import InputError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED = "the IDX files " + ", ".join(FILES.values()) + " (each raw or .gz)"

# IDX type byte → big-endian numpy dtype
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_INTEGER_TYPES = (0x08, 0x09, 0x0B, 0x0C)

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]


def find_file(directory: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``directory``: raw or ``.gz``, with ``-idx`` or ``.idx`` before the type. A FIFO or
    device of one of these names is refused (``source.member``), never opened."""
    spellings = (stem, stem.replace("-idx", ".idx"))
    for spelling in spellings:
        for name in (spelling, f"{spelling}.gz"):
            found = member(directory, name, EXPECTED)
            if found is not None:
                return found
    return None


def _read_bytes(file: Path) -> bytes:
    try:
        if file.suffix == ".gz":
            with gzip.open(file, "rb") as fh:
                return fh.read()
        return file.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise InputError("data.path", f"cannot read {file}: {err}") from None


def read_idx(file: Path, ndim: int, *, integer: bool = False) -> np.ndarray:
    """The array stored in IDX ``file``, which must have ``ndim`` dimensions (and an integer type if asked).

    Returns a read-only view into the file's bytes, in the file's big-endian type (converted later, once).
    """
    raw = _read_bytes(file)
    expected_magic = 0x0800 | ndim
    if len(raw) < 4:
        raise InputError("data.path", f"{file} is not an IDX file: only {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    type_code, dims_count = raw[2], raw[3]
    allowed_types = _INTEGER_TYPES if integer else tuple(_TYPES)
    if raw[:2] != b"\0\0" or type_code not in allowed_types or dims_count != ndim:
        raise InputError(
            "data.path",
            f"{file} has magic number 0x{magic:08X}; expected 0x{expected_magic:08X} "
            f"(an IDX file with {ndim} dimension{'s' if ndim > 1 else ''})",
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError("data.path", f"{file} is truncated inside its header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[type_code])
    expected_len = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected_len:
        raise InputError(
            "data.path",
            f"{file}: the header announces shape {dims} ({expected_len} bytes) but the file has {len(raw)} bytes",
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _pair(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as (N, 1, H, W) and their labels, checked to be equally many."""
    images = read_idx(images_file, 3)
    labels = read_idx(labels_file, 1, integer=True)
    if images.shape[0] != labels.shape[0]:
        raise InputError(
            "data",
            f"{images_file.name} holds {images.shape[0]} images but {labels_file.name} holds {labels.shape[0]} labels",
        )
    return images[:, None, :, :], labels.astype(np.int64)


@DATASETS.register(
    "idx",
    formula="x: (N, 1, 28, 28) grey levels 0..255; y: 10 classes; own test split (t10k files)",
    reference="LeCun et al. 1998 (MNIST); Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747 (Fashion-MNIST)",
    note="reads the four IDX files (raw or .gz) from the local directory data.path; variant mnist | fashion "
    "only names the classes",
)
def load_idx(request: LoadRequest) -> RawData:
    """Read the train and t10k IDX pairs from ``request.path``."""
    variant = request.choose_variant(("mnist", "fashion"), None)
    directory = request.require_directory(f"a directory with {EXPECTED}")
    found = {key: find_file(directory, stem) for key, stem in FILES.items()}
    files = {key: file for key, file in found.items() if file is not None}
    if len(files) < len(FILES):
        missing = ", ".join(FILES[key] for key in FILES if key not in files)
        raise InputError("data.path", f"{str(directory)!r} lacks {missing}; expected {EXPECTED}")
    x, y = _pair(files["train_images"], files["train_labels"])
    x_test, y_test = _pair(files["test_images"], files["test_labels"])
    if x.shape[1:] != x_test.shape[1:]:
        raise InputError("data", f"{directory}: train images are {x.shape[2:]}, test images {x_test.shape[2:]}")
    num_classes = int(max(y.max(initial=0), y_test.max(initial=0))) + 1
    classes = {"fashion": FASHION_CLASSES, "mnist": DIGIT_CLASSES}.get(variant or "")
    if classes is not None and num_classes > len(classes):
        raise InputError(
            "data", f"{directory}: labels go up to {num_classes - 1}, but {variant} has {len(classes)} classes"
        )
    if classes is not None:
        num_classes = len(classes)
    return RawData(
        x=x, y=y, x_test=x_test, y_test=y_test, num_classes=num_classes, classes=classes, where=str(directory)
    )
