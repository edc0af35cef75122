"""Synthetic classification problems whose difficulty is known, generated in milliseconds.

- ``spirals`` (default): K = 3 interleaved 2-D spirals, the CS231n toy problem (Karpathy, CS231n "Putting it
  together: minimal neural network case study"). Class k's i-th point: r = i/(n_k−1), t = 4k + 4r + 𝒩(0, 0.2²),
  x = (r·sin t, r·cos t). Not linearly separable: a linear model stays near 1/K, a small MLP reaches ≈ 99 %.
- ``teacher``: a random but fixed two-layer teacher network y = argmax(W₂·tanh(W₁x + b₁) + b₂) labels Gaussian
  inputs x ~ 𝒩(0, I₂₀) into 10 classes — the teacher–student setting (Gardner & Derrida 1989; Saad & Solla
  1995): the labels are a known function that a student of the same shape can represent exactly. The output
  bias b₂ is calibrated once so the ten classes are about equally frequent (a raw argmax is very unbalanced).

``split_seed`` seeds the sampled inputs (and spiral noise); the teacher's weights are the same for every seed,
so different seeds are different samples of one task. ``size`` is the number of examples (default 2000).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tricklab.data.registry import DATASETS
from tricklab.data.source import LoadRequest, RawData

DEFAULT_SIZE = 2000
SPIRAL_CLASSES = 3
SPIRAL_NOISE = 0.2  # std of the angle noise, as in CS231n
TEACHER_FEATURES = 20
TEACHER_HIDDEN = 64
TEACHER_CLASSES = 10
_TEACHER_SEED = 20240601  # fixed: the teacher is part of the task's definition, not of a run
_SAMPLE_STREAM = 7  # second seed word of the input stream, apart from the split streams
_CALIBRATION_SAMPLES = 20000
_CALIBRATION_STEPS = 50


def spirals(n: int, rng: np.random.Generator, classes: int = SPIRAL_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on ``classes`` interleaved spirals, classes as equal as ``n`` allows, in class order."""
    counts = np.full(classes, n // classes)
    counts[: n % classes] += 1
    y = np.repeat(np.arange(classes), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(n) - starts[y]
    r = position / np.maximum(counts[y] - 1, 1)
    t = 4.0 * y + 4.0 * r + rng.normal(0.0, SPIRAL_NOISE, n)
    x = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    return x, y.astype(np.int64)


class Teacher:
    """The fixed random teacher network: F=20 inputs → 64 tanh units → 10 class scores."""

    def __init__(self) -> None:
        rng = np.random.default_rng(_TEACHER_SEED)
        f, h, c = TEACHER_FEATURES, TEACHER_HIDDEN, TEACHER_CLASSES
        self.w1 = rng.normal(0.0, 1.0 / np.sqrt(f), (f, h))  # LeCun scaling: pre-activations of unit variance
        self.b1 = rng.normal(0.0, 0.1, h)
        self.w2 = rng.normal(0.0, 1.0 / np.sqrt(h), (h, c))
        self.b2 = np.zeros(c)
        reference = rng.normal(size=(_CALIBRATION_SAMPLES, f))
        scores = self.hidden(reference) @ self.w2
        for _ in range(_CALIBRATION_STEPS):  # push frequent classes down, rare ones up, towards 1/C each
            freq = np.bincount((scores + self.b2).argmax(axis=1), minlength=c) + 1.0
            self.b2 -= 0.5 * np.log(freq / freq.mean()) * scores.std()

    def hidden(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.w1 + self.b1)

    def label(self, x: np.ndarray) -> np.ndarray:
        """The class the teacher assigns to each row of ``x``."""
        return (self.hidden(x) @ self.w2 + self.b2).argmax(axis=1).astype(np.int64)


@lru_cache(maxsize=1)
def teacher() -> Teacher:
    """The one teacher (built once per process: the calibration takes a fraction of a second)."""
    return Teacher()


@DATASETS.register(
    "synthetic",
    formula="spirals: x (N, 2), 3 classes; teacher: x (N, 20) ~ N(0, I), 10 classes from a fixed 2-layer net",
    reference="spirals: Karpathy, CS231n neural network case study; teacher: Gardner & Derrida 1989, "
    "Saad & Solla 1995 (teacher-student)",
    note="variant spirals (default) | teacher; size examples (default 2000) seeded by split_seed; test split carved",
)
def load_synthetic(request: LoadRequest) -> RawData:
    """Sample ``request.size`` examples of the requested variant."""
    variant = request.choose_variant(("spirals", "teacher"), "spirals")
    n = request.size or DEFAULT_SIZE
    rng = np.random.default_rng([request.split_seed, _SAMPLE_STREAM])
    if variant == "teacher":
        x = rng.normal(size=(n, TEACHER_FEATURES))
        return RawData(
            x=x, y=teacher().label(x), num_classes=TEACHER_CLASSES, generated=True, where="synthetic/teacher"
        )
    x, y = spirals(n, rng)
    return RawData(x=x, y=y, num_classes=SPIRAL_CLASSES, generated=True, where="synthetic/spirals")
