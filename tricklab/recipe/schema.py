"""The recipe: one validated description of a run — which data, which model, which tricks.

Every name is checked against the registry of its kind (the same table ``tricklab tricks`` prints), every
number against its allowed range, and unknown keys are refused, so a typo never silently means "default".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tricklab.errors import brief
from tricklab.registry import Registry


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
        raise ValueError(f"unknown {kind} {brief(value)}; allowed: {', '.join(registry.allowed())}")
    return registry.canonical(value)


class Section(BaseModel):
    """A recipe section: unknown keys are errors, NaN/Inf are never valid numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


FILE_DATASETS = frozenset({"idx", "cifar10", "csv", "npz"})


class DataConfig(Section):
    name: str = "mnist1d"
    path: str | None = Field(None, description="local file or directory for idx|cifar10|csv|npz")
    scale: str = "standard"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="only for datasets without their own test split")
    batch_size: int = Field(64, ge=1, le=1_000_000)
    size: int | None = Field(None, ge=10, description="examples to generate (mnist1d: 5000 as in the paper)")
    train_subset: int | None = Field(None, ge=1, description="keep only this many training examples")
    split_seed: int = Field(0, ge=0, description="seed of the train/val(/test) split; fixed across run seeds")
    label_column: str | int = -1
    variant: str | None = Field(None, description="synthetic: spirals|teacher")

    @model_validator(mode="after")
    def _path_given(self) -> DataConfig:
        if self.name in FILE_DATASETS and not self.path:
            raise ValueError(f"path: dataset {self.name!r} loads from a local path only; set data.path")
        return self

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
        if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError(f"expected 'package.module:factory', got {brief(v)}")
        return v


class InitConfig(Section):
    scheme: str = "he"

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return _check_name("init", v)


class OptimizerConfig(Section):
    name: str = "adamw"
    lr: float = Field(0.003, gt=0.0, le=1e6)
    weight_decay: float = Field(0.0005, ge=0.0, le=1e3)
    decay: Literal["decoupled", "l2"] = "decoupled"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="γ of momentum/nesterov/rmsprop")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("optimizer", v)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1)")
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
    warmup_epochs: float = Field(0, ge=0.0)
    gamma: float = Field(0.98, gt=0.0, le=1.0, description="exponential: per epoch; step: per step_size epochs")
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    final_lr: float = Field(0.0, ge=0.0, description="cosine: the LR reached at the last step")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="one_cycle: fraction of steps spent rising")
    patience: int = Field(3, ge=0, description="plateau: stalled evaluations before the LR is cut")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="plateau: multiplier applied to the LR")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("schedule", v)


class EarlyStoppingConfig(Section):
    patience: int = Field(0, ge=0, description="0 = off")
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    min_delta: float = Field(0.0, ge=0.0)


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
    seed: int = Field(0, ge=0, le=2**63 - 1)
    epochs: int = Field(15, ge=1, le=100_000)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    averaging: AveragingConfig = Field(default_factory=AveragingConfig)

