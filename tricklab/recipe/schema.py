"""The recipe: one validated description of a run — which data, which model, which tricks.

Every name is checked against the registry of its kind (the same table ``tricklab tricks`` prints), every
number against its allowed range, and unknown keys are refused, so a typo never silently means "default".

Numbers are checked against what they become, not only against what they are in the YAML file:

- **No booleans for numbers.** YAML reads ``true``/``yes``/``on`` as booleans and pydantic would take them as
  1 (``epochs: yes`` → one epoch, ``optimizer.lr: true`` → η = 1); every numeric field refuses them.
- **Floats fit float32.** Tensors hold the recipe's floats in float32 (η and λ as the ``alpha`` of in-place
  updates, ε, γ, β, the clipping threshold, EMA's decay), so a value finite in float64 can still become ∞ or 0
  there: ``schedule.final_lr: 1e308`` overflows, ``optimizer.eps: 1e-50`` becomes 0 (a division by zero).
  One rule for every float of the recipe, not a list of fields that meet tensors today (such a list goes stale
  when the code changes; no recipe float needs more than float32's range): its magnitude must be 0 or in
  float32's normal range, and its float32 value must still satisfy the field's bounds (``momentum: 0.99999999``
  rounds to 1.0 in float32, where momentum never forgets). Denormals are refused too: many devices flush them
  to 0 (CUDA with ``-ftz``, CPUs with ``torch.set_flush_denormal``).
- **Counts stay in range.** Every epoch count (``schedule.warmup_epochs``, ``step_size``, ``patience``,
  ``early_stopping.patience``) is at most ``MAX_EPOCHS``, the most a run can have: ``warmup_epochs: 1e308``
  times the steps per epoch overflowed the integer conversion of the warmup step count. A warm-up or patience
  longer than *this* run is allowed (the run ends inside its warm-up; patience that never runs out is early
  stopping switched off): a study that varies ``epochs`` with one warm-up must not be refused in its short arms.
  Seeds and example counts are int64, what NumPy and torch hold. Whether the data and the model fit in memory is
  checked before anything is built, by ``tricklab.train.preflight``.
"""

from __future__ import annotations

import math
import struct
import typing
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tricklab.errors import brief
from tricklab.registry import Registry, did_you_mean


def _registry(kind: str) -> Registry:
    """The registry of ``kind``; importing the module that fills it on first use."""
    import importlib

    from tricklab.registry import ALL_REGISTRIES

    modules = {
        "dataset": "tricklab.data",
        "model": "tricklab.models",
        "scaling": "tricklab.tricks.scaling",
        "init": "tricklab.tricks.init",
        "norm": "tricklab.tricks.norm",
        "activation": "tricklab.tricks.activations",
        "optimizer": "tricklab.tricks.optimizers",
        "clip": "tricklab.tricks.clipping",
        "schedule": "tricklab.tricks.schedules",
        "averaging": "tricklab.tricks.averaging",
    }
    if kind not in ALL_REGISTRIES:
        importlib.import_module(modules[kind])
    return ALL_REGISTRIES[kind]


def _check_name(kind: str, value: str) -> str:
    registry = _registry(kind)
    if value not in registry:
        raise ValueError(f"unknown {kind} {brief(value)}{did_you_mean(value, registry.allowed())}; "
                         f"allowed: {', '.join(registry.allowed())}")
    return registry.canonical(value)


FLOAT32_MAX = 3.4028234663852886e38
"""(2 − 2⁻²³)·2¹²⁷, the largest finite IEEE 754 binary32 value (``torch.finfo(torch.float32).max``)."""
FLOAT32_TINY = 1.1754943508222875e-38
"""2⁻¹²⁶, the smallest normal binary32 value (``torch.finfo(torch.float32).tiny``)."""
FLOAT32_RANGE = f"0 or {FLOAT32_TINY:.2g} <= |x| <= {FLOAT32_MAX:.2g}, float32's normal range"
MAX_EPOCHS = 100_000
"""The most epochs a recipe may have, and so the bound of every count of epochs in it."""
INT64_MAX = 2**63 - 1
"""Seeds and example counts: what a NumPy or torch integer holds."""
LR_MAX = 1e6
"""The largest learning rate accepted anywhere (η, the schedule's final η): far beyond any that trains."""

_BOUNDS = {  # a pydantic bound → (its attribute, how it reads, whether a value meets it)
    annotated_types.Gt: ("gt", ">", lambda x, b: x > b),
    annotated_types.Ge: ("ge", ">=", lambda x, b: x >= b),
    annotated_types.Lt: ("lt", "<", lambda x, b: x < b),
    annotated_types.Le: ("le", "<=", lambda x, b: x <= b),
}


def as_float32(value: float) -> float:
    """``value`` rounded to the nearest float32, as a tensor would hold it (±inf beyond float32's range)."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def float32_problem(value: float, bounds: list[Any]) -> str | None:
    """Why ``value`` cannot be held as a float32 by a field with ``bounds`` (annotated_types Gt/Ge/Lt/Le), or None."""
    single = as_float32(value)
    if not math.isfinite(single):
        return f"too large for float32: the tensors that hold it would see {single}; allowed: {FLOAT32_RANGE}"
    if value != 0 and abs(single) < FLOAT32_TINY:
        return (f"too small for float32: the tensors that hold it would see {single!r}, a denormal or 0 (below "
                f"float32's smallest normal number; many devices flush denormals to 0); allowed: {FLOAT32_RANGE}")
    for bound in bounds:
        if type(bound) not in _BOUNDS:
            continue
        attr, op, meets = _BOUNDS[type(bound)]
        limit = getattr(bound, attr)
        if not meets(single, limit):
            return (f"rounds to {single!r} in float32, the precision of the tensors that hold it, which is not "
                    f"{op} {limit}; allowed: {op} {limit} after rounding to float32")
    return None


def _factory_reference(v: str | None) -> str | None:
    """``model.python`` / ``data.python``: None or ``package.module:factory`` (imported only when a run needs it)."""
    if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
        raise ValueError(f"expected 'package.module:factory', got {brief(v)}")
    return v


def _is_numeric(annotation: Any) -> bool:
    """Whether a field's type holds numbers (``int``, ``float``, ``int | None``, ``tuple[float, float]``, ...)."""
    if annotation in (int, float):
        return True
    return any(_is_numeric(arg) for arg in typing.get_args(annotation))


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


class Section(BaseModel):
    """A recipe section: unknown keys are errors, NaN/Inf are never valid numbers, booleans are no numbers, and
    every float fits float32 (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if _holds_bool(value) and _is_numeric(annotation):
            kind = "a number or a name" if str in typing.get_args(annotation) else "a number"
            raise ValueError(f"a yes/no value where a number belongs (YAML reads true/false, yes/no and on/off as "
                             f"booleans); allowed: {kind}")
        return value

    @field_validator("*")
    @classmethod
    def _fits_float32(cls, value: Any, info: ValidationInfo) -> Any:
        bounds = cls.model_fields[info.field_name].metadata if info.field_name else []
        for x in value if isinstance(value, tuple) else (value,):
            problem = float32_problem(x, bounds) if isinstance(x, float) else None
            if problem:
                raise ValueError(problem)
        return value


FILE_DATASETS = frozenset({"idx", "cifar10", "csv", "npz"})
USER_DATA_IGNORES = ("name", "path", "scale", "val_fraction", "test_fraction", "size", "train_subset", "split_seed",
                     "label_column", "variant")
"""The data keys of built-in datasets, refused next to ``data.python``."""


class DataConfig(Section):
    name: str = "mnist1d"
    path: str | None = Field(None, description="local file or directory for idx|cifar10|csv|npz")
    scale: str = "standard"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="only for datasets without their own test split")
    batch_size: int = Field(64, ge=1, le=1_000_000)
    size: int | None = Field(None, ge=10, le=INT64_MAX,
                             description="examples to generate (mnist1d: 5000 as in the paper)")
    train_subset: int | None = Field(None, ge=1, le=INT64_MAX, description="keep only this many training examples")
    split_seed: int = Field(0, ge=0, le=INT64_MAX,
                            description="seed of the train/val(/test) split; fixed across run seeds")
    label_column: str | int = -1
    variant: str | None = Field(None, description="synthetic: spirals|teacher")
    python: str | None = Field(None, description='a user\'s datasets "pkg.module:factory" (tricklab.data.user); '
                                                 "replaces name")
    augment: Literal["none", "shift_noise", "crop_flip"] = Field(
        "none", description="per batch, on the device: shift_noise (1-D signals), crop_flip (images)")
    augment_shift: int = Field(4, ge=0, le=1024, description="shift_noise: largest shift; crop_flip: padding")
    augment_noise: float = Field(0.05, ge=0.0, le=100.0, description="shift_noise: std of the added noise")
    mixup: float = Field(0.0, ge=0.0, le=100.0, description="mixup's alpha (Beta(α, α) mixing); 0 = off")

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: Any) -> Any:
        """``shift`` (DESIGN.md's name) is ``shift_noise``: the recipe keeps the canonical name."""
        return "shift_noise" if v == "shift" else v

    @model_validator(mode="after")
    def _path_given(self) -> DataConfig:
        if self.name in FILE_DATASETS and not self.path and not self.python:
            raise ValueError(f"path: dataset {self.name!r} loads from a local path only; set data.path")
        return self

    @model_validator(mode="after")
    def _python_alone(self) -> DataConfig:
        """A user's datasets come as the factory makes them: the keys that pick, load, carve or scale a built-in
        dataset do not apply next to ``python`` (a silently ignored key would be a lie about the run)."""
        if self.python:
            defaults = type(self).model_fields
            clash = [k for k in USER_DATA_IGNORES if getattr(self, k) != defaults[k].default]
            if clash:
                raise ValueError(f"{clash[0]}: does not apply to a user's datasets (data.python: the factory returns "
                                 f"the splits as they are); allowed next to data.python: "
                                 f"{', '.join(k for k in type(self).model_fields if k not in USER_DATA_IGNORES)}")
        return self

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        return _factory_reference(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("dataset", v)

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: str) -> str:
        return _check_name("scaling", v)


class ModelConfig(Section):
    name: str = "cnn"
    depth: int = Field(4, ge=1, le=1000)
    width: int | None = Field(None, ge=1, le=65536,
                              description="channels (conv) or units (mlp); null = the architecture's default: "
                                          "32 channels for cnn/resnet/inception, 256 units for mlp")
    activation: str = "relu"
    norm: str = "batch"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    python: str | None = Field(None, description='a user model "pkg.module:factory"; replaces name')

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("model", v)

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return _check_name("activation", v)

    @field_validator("norm")
    @classmethod
    def _norm(cls, v: str) -> str:
        return _check_name("norm", v)

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        return _factory_reference(v)


class InitConfig(Section):
    scheme: str = "he"

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return _check_name("init", v)


class OptimizerConfig(Section):
    name: str = "adamw"
    lr: float | Literal["auto"] = Field(0.003, description="η, or auto: the learning-rate range test picks it "
                                                         "before the run (tricklab.train.lr_search)")
    weight_decay: float = Field(0.0005, ge=0.0, le=1e3)
    decay: Literal["decoupled", "l2"] = "decoupled"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="γ of momentum/nesterov/rmsprop")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("optimizer", v)

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, v: Any) -> Any:
        """A number in (0, LR_MAX] or the word ``auto``; one message for both (a union would report two)."""
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise ValueError("expected a number greater than 0, or auto (the learning-rate range test picks "
                                 "it)") from None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(v):
                raise ValueError("Input should be a finite number")
            if not v > 0:
                raise ValueError("Input should be greater than 0 (or auto)")
            if v > LR_MAX:
                raise ValueError(f"Input should be less than or equal to {LR_MAX:g}")
            return float(v)
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 and as_float32(b) < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1), also after rounding to float32 (at most 0.99999994)")
        return v

    @model_validator(mode="after")
    def _adamw_is_decoupled(self) -> OptimizerConfig:
        if self.name == "adamw" and self.decay == "l2":
            raise ValueError(
                "decay: adamw is Adam with decoupled weight decay by definition; "
                "for coupled L2 use name: adam with decay: l2"
            )
        return self


class ClipConfig(Section):
    mode: str = "none"
    threshold: float = Field(1.0, gt=0.0, description="θ (the lesson suggests 1 or 10); λ for agc")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        return _check_name("clip", v)


class ScheduleConfig(Section):
    name: str = "one_cycle"
    warmup_epochs: float = Field(0, ge=0.0, le=MAX_EPOCHS, description="linear warm-up; may outlast the run")
    gamma: float = Field(0.98, gt=0.0, le=1.0, description="exponential: per epoch; step: per step_size epochs")
    step_size: int = Field(10, ge=1, le=MAX_EPOCHS, description="step: epochs between decays")
    final_lr: float = Field(0.0, ge=0.0, le=LR_MAX, description="cosine: the LR reached at the last step")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="one_cycle: fraction of steps spent rising")
    patience: int = Field(3, ge=0, le=MAX_EPOCHS, description="plateau: stalled evaluations before the LR is cut")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="plateau: multiplier applied to the LR")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("schedule", v)


class LossConfig(Section):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="ε: the target puts 1 − ε + ε/C on the class, "
                                                                     "ε/C on the others (tricks.regularisers)")


class EarlyStoppingConfig(Section):
    patience: int = Field(0, ge=0, le=MAX_EPOCHS, description="0 = off")
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    min_delta: float = Field(0.0, ge=0.0)


class CheckpointConfig(Section):
    """The best epochs' weights kept beside the run's latest checkpoint (``tricklab.train.best_checkpoints``)."""

    monitor: Literal["none", "val_loss", "val_accuracy", "train_loss", "train_accuracy"] = "none"
    top_k: int = Field(1, ge=1, le=100, description="how many of the best epochs to keep")


class AveragingConfig(Section):
    mode: str = "none"
    k: int = Field(5, ge=2, le=100, description="ensemble: number of members")
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="ema: weight of the old average per step")
    swa_start: float = Field(0.75, ge=0.0, lt=1.0, description="swa: fraction of epochs before averaging starts")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        return _check_name("averaging", v)


class Recipe(Section):
    """A whole run. ``Recipe()`` is the built-in default: MNIST-1D, a 4-layer CNN, sensible tricks."""

    name: str = Field("mnist1d-cnn", min_length=1, max_length=200)
    seed: int = Field(0, ge=0, le=INT64_MAX)
    epochs: int = Field(15, ge=1, le=MAX_EPOCHS)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16: autocast (CPU, CUDA); fp16: autocast and a dynamic loss scale (CUDA only)")
    accumulate: int = Field(1, ge=1, le=4096, description="optimizer steps every N batches (gradients summed): "
                                                          "an N-times larger batch")
    evals_per_epoch: int = Field(1, ge=1, le=1000, description="validation evaluations per epoch, evenly spaced "
                                 "(the last at the epoch's end): time to accuracy at a finer resolution than an epoch")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    averaging: AveragingConfig = Field(default_factory=AveragingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _user_init_left_alone(self) -> Recipe:
        """A user's model (``model.python``) keeps the initialisation its own code gives it unless the recipe
        names a scheme: the default He scheme would silently overwrite the user's init."""
        if self.model.python and "scheme" not in self.init.model_fields_set:
            self.init = InitConfig(scheme="default")
        return self

