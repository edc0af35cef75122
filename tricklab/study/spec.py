"""The study spec: which recipes (arms) to compare, over which seeds, on which metric.

A study is a designed experiment on recipes. ``design: grid`` runs every combination of the factors' values
(a full factorial design); ``design: leave_one_out`` runs the full recipe and, for each trick in ``remove``,
the full recipe with that one trick switched off — the ablation study as the field does it. Every arm runs on
the *same* seeds, so arms can be compared pair-wise, seed by seed (a paired design removes the seed-to-seed
variance that otherwise swamps small effects; Bouthillier et al., "Accounting for Variance in Machine Learning
Benchmarks", MLSys 2021).

The spec is YAML (read with ``yaml.safe_load`` only) and is validated as strictly as a recipe. This module
checks its shape, field by field; ``tricklab.study.design`` then builds and validates every arm's recipe when
the spec is loaded, so a typo in a factor fails before any training starts, with an ``InputError`` naming the
field (``factors.model.dropout``) and what is allowed. ``StudySpec`` answers for both (``arms()``, ``trials()``,
``spec_hash()``, ...).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tricklab.errors import InputError, brief
from tricklab.fsutil import safe_name
from tricklab.recipe import Recipe
from tricklab.recipe.io import key_label, read_yaml, validation_error_to_input_error
from tricklab.study.design import FULL_ARM, MAX_ARMS, MAX_TRIALS, RECIPE_KEYS, Arm, Design, check_name
from tricklab.study.executor_registry import EXECUTORS
from tricklab.tricks.monitor import Monitor

__all__ = ["DESIGNS", "FULL_ARM", "MAX_ARMS", "MAX_LEVELS", "MAX_TRIALS", "METRICS", "RECIPE_KEYS", "TARGET_METRICS",
           "Arm", "StudySpec", "Target", "higher_is_better", "load_study", "study_from_dict"]

METRICS: tuple[str, ...] = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_seconds",
                            "wall_seconds", "steps", "best_epoch")
"""The metrics a study can compare (fields of ``RunResult``); which way is better: ``tricks.monitor``."""
TARGET_METRICS: tuple[str, ...] = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
"""The metrics recorded per epoch in a run's history, so a target "reach X" can be timed."""
DESIGNS = ("grid", "leave_one_out")
MAX_LEVELS = 1_000          # values of one factor; more is a generated list gone wrong (and slow to check)

# Fields checked alike share one validator; these tables hold each field's own words (its error messages are
# part of the interface: tests and users read them).
_CHOICES = {"design": DESIGNS, "executor": EXECUTORS}
_NAME_OR_MAPPING = {
    "base": ("a recipe path or an inline recipe mapping",
             "a YAML path relative to the study file, a mapping of recipe sections, or null"),
    "baseline": ("an arm name or a mapping of factor settings", "e.g. {model.dropout: 0.0} or an arm name"),
}
_MAPPINGS = {
    "overrides": "e.g. {epochs: 10} or {optimizer.lr: 0.1}",
    "factors": "{recipe.key: [values]} or {factor name: {label: {recipe.key: value}}}",
    "remove": "{trick: {recipe.key: value that switches it off}}",
}


def _known_metric(metric: Any, field: str, known: tuple[str, ...], what: str = "metric") -> str:
    """``metric`` when it is one of ``known``, else an ``InputError`` at ``field`` listing them."""
    if not isinstance(metric, str) or metric not in known:
        raise InputError(field, f"unknown {what} {brief(metric)}", allowed=list(known))
    return metric


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is an improvement (accuracy: yes; loss, time, steps: no —
    ``tricks.monitor``); an ``InputError`` for a metric no study records."""
    if metric not in TARGET_METRICS:
        _known_metric(metric, "metric", METRICS)
    return Monitor(metric).higher_is_better


def _check_factors(factors: dict[Any, Any]) -> None:
    """Each factor: a non-empty list of values, or named override sets ``{label: {recipe.key: value}}``."""
    for key, values in factors.items():
        check_name(key, "factors", "factor names")
        field = f"factors.{key_label(key)}"
        if isinstance(values, list):
            if not values:
                raise InputError(field, "empty list of values", allowed="at least one value")
            if len(values) > MAX_LEVELS:
                raise InputError(field, f"{len(values)} values", allowed=f"at most {MAX_LEVELS} values per factor")
        elif isinstance(values, dict):
            if not values:
                raise InputError(field, "no named override sets", allowed="{label: {recipe.key: value}, ...}")
            for label, sets in values.items():
                check_name(label, field, "labels")
                if not isinstance(sets, dict):
                    raise InputError(f"{field}.{key_label(label)}",
                                     f"expected a mapping of recipe keys to values, got {type(sets).__name__}",
                                     allowed="{recipe.key: value}")
        else:
            raise InputError(field, f"expected a list of values or named override sets, got {type(values).__name__}",
                             allowed="[v1, v2, ...] or {label: {recipe.key: value}, ...}")


def _check_removals(remove: dict[Any, Any]) -> None:
    """Each trick to switch off: a name and the non-empty recipe settings that switch it off."""
    for label, sets in remove.items():
        check_name(label, "remove", "trick names")
        if not isinstance(sets, dict) or not sets:
            raise InputError(f"remove.{key_label(label)}", "expected a non-empty mapping of recipe keys to values",
                             allowed="e.g. {model.norm: none}")


class Target(BaseModel):
    """A level a per-epoch metric should reach; the study reports the steps and seconds each trial needed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    metric: str
    value: float
    higher_is_better: bool | None = Field(None, description="default: from the metric (accuracy up, loss down)")

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, v: Any) -> Any:
        return _known_metric(v, "target.metric", TARGET_METRICS, "per-epoch metric")

    @property
    def monitor(self) -> Monitor:
        """The target's metric with its direction (``higher_is_better`` when given, else from the name)."""
        return Monitor(self.metric, self.higher_is_better)

    @property
    def better_is_higher(self) -> bool:
        """Whether reaching the target means going at or above ``value`` (else at or below)."""
        return self.monitor.higher_is_better


class StudySpec(BaseModel):
    """A validated study. Build with ``load_study(path)`` or ``study_from_dict(data, base_dir)``.

    Loading checks every field and resolves every arm (``tricklab.study.design``); ``arms()``, ``baseline_arm()``,
    ``seed_list()`` and ``trials()`` then describe exactly which runs the study consists of, and ``spec_hash()``
    identifies that set of runs.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    base: str | dict[str, Any] | None = Field(None, description="recipe path (relative to the spec's directory), "
                                                                "inline recipe mapping, or null = built-in default")
    overrides: dict[str, Any] = Field(default_factory=dict, description="applied to the base in every arm")
    design: Literal["grid", "leave_one_out"] = "grid"
    factors: dict[str, list[Any] | dict[str, dict[str, Any]]] = Field(default_factory=dict)
    remove: dict[str, dict[str, Any]] | None = None
    seeds: int | list[int] = 5
    split_per_seed: bool = Field(False, description="each trial draws its own train/val/test split "
                                                    "(data.split_seed = the trial's seed)")
    metric: str | list[str] = "test_accuracy"
    baseline: str | dict[str, Any] | None = None
    target: Target | None = None
    executor: Literal["local", "population", "ray"] = "local"
    address: str | None = Field(None, description="ray cluster address (else RAY_ADDRESS)")
    max_retries: int = Field(2, ge=0, le=100, description="times a failed trial is retried on re-run")

    _design: Design | None = PrivateAttr(None)

    # -- shape checks (each raises an InputError naming the exact field) -------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise InputError("study", f"a study spec must be a mapping, got {type(data).__name__}",
                             allowed=list(cls.model_fields))
        for key in data:
            if key not in cls.model_fields:
                raise InputError(key_label(key), "unknown key in the study spec", allowed=list(cls.model_fields))
        target = data.get("target")
        if target is not None and not isinstance(target, dict):
            raise InputError("target", "expected a mapping {metric: ..., value: ...}",
                             allowed="e.g. {metric: val_accuracy, value: 0.95}")
        for key in target or {}:
            if key not in Target.model_fields:
                raise InputError(f"target.{key_label(key)}", "unknown key", allowed=list(Target.model_fields))
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = safe_name(v.strip(), "name")  # the study's directory under the runs root, and its run names' prefix
        return v

    @field_validator("design", "executor", mode="before")
    @classmethod
    def _choice(cls, v: Any, info: ValidationInfo) -> Any:
        field = info.field_name or ""
        if v not in _CHOICES[field]:
            raise InputError(field, f"unknown {field} {brief(v)}", allowed=_CHOICES[field])
        return v

    @field_validator("base", "baseline", mode="before")
    @classmethod
    def _name_or_mapping(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or isinstance(v, dict) or (isinstance(v, str) and v.strip()):
            return v
        field = info.field_name or ""
        expected, allowed = _NAME_OR_MAPPING[field]
        raise InputError(field, f"expected {expected}, got {brief(v)}", allowed=allowed)

    @field_validator("overrides", "factors", "remove", mode="before")
    @classmethod
    def _mapping(cls, v: Any, info: ValidationInfo) -> Any:
        field = info.field_name or ""
        if v is None:
            return None if field == "remove" else {}
        if not isinstance(v, dict):
            raise InputError(field, f"expected a mapping, got {type(v).__name__}", allowed=_MAPPINGS[field])
        if field == "factors":
            _check_factors(v)
        elif field == "remove":
            _check_removals(v)
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        allowed = "a count n >= 1 (seeds 0..n-1) or a non-empty list of distinct integers >= 0"
        if is_int(v):
            if not 1 <= v <= 100_000:
                raise InputError("seeds", f"the seed count must be between 1 and 100000, got {v}", allowed=allowed)
            return v
        if isinstance(v, list):
            if not v:
                raise InputError("seeds", "empty list of seeds", allowed=allowed)
            bad = [x for x in v if not is_int(x) or not 0 <= x <= 2**63 - 1]
            if bad:
                raise InputError("seeds", f"seeds must be integers >= 0, got {brief(bad[0])}", allowed=allowed)
            dupes = sorted({x for x in v if v.count(x) > 1})
            if dupes:
                raise InputError("seeds", f"duplicate seeds {dupes}", allowed=allowed)
            return v
        raise InputError("seeds", f"expected a count or a list of integers, got {brief(v)}", allowed=allowed)

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, v: Any) -> Any:
        names = v if isinstance(v, list) else [v]
        if not names:
            raise InputError("metric", "empty list of metrics", allowed=list(METRICS))
        for m in names:
            _known_metric(m, "metric", METRICS)
        if len(set(names)) != len(names):
            raise InputError("metric", f"a metric is listed twice: {names}", allowed=list(METRICS))
        return v

    # -- resolution: every arm built and validated at load time ---------------------------------------------
    def model_post_init(self, context: Any, /) -> None:
        base_dir = context.get("base_dir") if isinstance(context, dict) else None
        self._design = Design.of(self, Path(base_dir) if base_dir is not None else Path.cwd())

    @property
    def resolved(self) -> Design:
        """The study's design: its arms, baseline and seeds, resolved and validated when the spec was loaded."""
        assert self._design is not None
        return self._design

    # -- what the study runs (``Design``'s answers) -----------------------------------------------------------
    def arms(self) -> list[Arm]:
        """Every arm, in design order (grid: factors vary fastest to the right); copies, safe to modify."""
        return self.resolved.arms()

    def arm_names(self) -> list[str]:
        return self.resolved.arm_names()

    def seed_list(self) -> list[int]:
        """The seeds every arm runs: ``0..n-1`` for a count, else the list as given."""
        return self.resolved.seed_list()

    def metrics(self) -> list[str]:
        """The metrics to compare; the first is the primary one (the verdict's)."""
        return list(self.metric) if isinstance(self.metric, list) else [self.metric]

    def baseline_arm(self) -> str:
        """The name of the arm every other arm is compared with."""
        return self.resolved.baseline_arm()

    def trials(self) -> list[tuple[str, int]]:
        """Every (arm, seed) to run, seed-major: after k seeds, k complete pairs exist even if the rest fail."""
        return self.resolved.trials()

    def trial_recipe(self, arm: str, seed: int) -> Recipe:
        """The recipe one trial runs: the arm's recipe with ``seed``."""
        return self.resolved.trial_recipe(arm, seed)

    def self_contained(self) -> dict[str, Any]:
        """The spec as JSON data with its base recipe inlined, so a store keeps the whole study even when the
        recipe file moves or is edited (what a report rebuilds the spec from)."""
        data = self.model_dump(mode="json")
        data["base"] = copy.deepcopy(self.resolved.base)
        return data

    def spec_hash(self) -> str:
        """sha256 of the resolved arms and the seeds (``Design.spec_hash``: only what decides which runs exist)."""
        return self.resolved.spec_hash()


def study_from_dict(data: Any, base_dir: str | os.PathLike[str] | None = None, *,
                    source: str = "study") -> StudySpec:
    """Validate a mapping as a study spec; a relative ``base`` path starts at ``base_dir`` (default: cwd)."""
    context = {"base_dir": str(base_dir) if base_dir is not None else None}
    try:
        return StudySpec.model_validate(data, context=context)
    except ValidationError as err:
        raise validation_error_to_input_error(err, source=source, model=StudySpec) from None
    except InputError as err:
        if source == "study" or "[in " in err.problem:
            raise
        raise InputError(err.field, f"{err.problem} [in {source}]", err.allowed) from None


def load_study(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate the study spec at ``path`` (YAML, ``safe_load``); every arm is checked here."""
    data = read_yaml(path, field="study")
    if data is None:
        raise InputError("study", f"{path} is empty", allowed=list(StudySpec.model_fields))
    return study_from_dict(data, Path(path).parent, source=str(path))
