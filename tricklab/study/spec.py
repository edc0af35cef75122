"""The study spec: which recipes (arms) to compare, over which seeds, on which metric.

A study is a designed experiment on recipes. ``design: grid`` runs every combination of the factors' values
(a full factorial design); ``design: leave_one_out`` runs the full recipe and, for each trick in ``remove``,
the full recipe with that one trick switched off — the ablation study as the field does it. Every arm runs on
the *same* seeds, so arms can be compared pair-wise, seed by seed (a paired design removes the seed-to-seed
variance that otherwise swamps small effects; Bouthillier et al., "Accounting for Variance in Machine Learning
Benchmarks", MLSys 2021).

The spec is YAML (read with ``yaml.safe_load`` only) and is validated as strictly as a recipe: every arm's
recipe is built and validated when the spec is loaded, so a typo in a factor fails before any training starts,
with an ``InputError`` naming the field (``factors.model.dropout``) and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from tricklab.errors import InputError, brief
from tricklab.fsutil import safe_name
from tricklab.recipe import Recipe, recipe_from_dict, recipe_to_dict
from tricklab.recipe.io import key_label, read_yaml, validation_error_to_input_error
from tricklab.study.executors import EXECUTORS

# The metrics a study can compare (fields of ``RunResult``) and which way is better.
METRICS: dict[str, bool] = {
    "test_accuracy": True,
    "test_loss": False,
    "val_accuracy": True,
    "val_loss": False,
    "train_seconds": False,
    "wall_seconds": False,
    "steps": False,
    "best_epoch": False,
}
# The metrics recorded per epoch in a run's history, so a target "reach X" can be timed.
TARGET_METRICS: dict[str, bool] = {"val_accuracy": True, "val_loss": False, "train_accuracy": True,
                                   "train_loss": False}
DESIGNS = ("grid", "leave_one_out")
FULL_ARM = "full"
MAX_ARMS = 10_000            # a grid larger than this is almost surely a typo (and weeks of compute)
MAX_TRIALS = 100_000
"""Arms × seeds at most: 10⁵ trials of the smallest recipe (~1 s each) are more than a day on one core; a larger
count is a typo (``seeds: 100000`` over a grid), refused with its count before a single arm is built."""
MAX_LEVELS = 1_000          # values of one factor; more is a generated list gone wrong (and slow to check)
_RESERVED = {"seed": "the study sets each trial's seed from `seeds`",
             "name": "the study names each arm's recipe '<study name>/<arm name>'"}
_HASH_VERSION = "tricklab-study-1"


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is an improvement (accuracy: yes; loss, time, steps: no)."""
    if metric in METRICS:
        return METRICS[metric]
    if metric in TARGET_METRICS:
        return TARGET_METRICS[metric]
    raise InputError("metric", f"unknown metric {brief(metric)}", allowed=list(METRICS))


def _recipe_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every settable recipe key as a dotted path (``optimizer.lr``), in schema order."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _recipe_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


RECIPE_KEYS: tuple[str, ...] = tuple(_recipe_keys())


def _check_key(key: str, field: str) -> None:
    """Refuse a dotted key that is not a recipe setting, naming what would be allowed at that level."""
    if key in _RESERVED:
        raise InputError(field, f"{brief(key)} cannot be set by a study: {_RESERVED[key]}")
    if key in RECIPE_KEYS:
        return
    section = key.split(".")[0]
    allowed = [k for k in RECIPE_KEYS if k.startswith(section + ".")]
    if allowed and "." not in key:
        problem = (f"{brief(key)} is a recipe section, not a setting; name a setting (e.g. {allowed[0]}), or vary "
                   "several settings together with named override sets {label: {key: value}}")
    else:
        problem = f"unknown recipe key {brief(key)}"
    top = list(dict.fromkeys(k.split(".")[0] for k in RECIPE_KEYS if k not in _RESERVED))
    raise InputError(field, problem, allowed=allowed or top)


def _flatten(mapping: Any, field: str, prefix: str = "") -> dict[str, Any]:
    """``{optimizer: {lr: 0.1}, epochs: 3}`` → ``{"optimizer.lr": 0.1, "epochs": 3}``; keys are checked."""
    if not isinstance(mapping, dict):
        raise InputError(field, f"expected a mapping of recipe keys to values, got {type(mapping).__name__}",
                         allowed="e.g. {optimizer.lr: 0.1} or {optimizer: {lr: 0.1}}")
    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        if not isinstance(k, str) or not k.strip():
            raise InputError(field, f"keys must be non-empty strings, got {brief(k)}")
        key = f"{prefix}{k.strip()}"
        if isinstance(v, dict):
            inner = _flatten(v, field, key + ".")
        else:
            _check_key(key, f"{field}.{key_label(key)}")
            inner = {key: v}
        for ik, iv in inner.items():
            if ik in flat:
                raise InputError(f"{field}.{key_label(ik)}", "set twice (once dotted, once nested)")
            flat[ik] = iv
    return flat


def _with(data: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of recipe data with dotted overrides applied."""
    out = copy.deepcopy(data)
    for key, value in flat.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = copy.deepcopy(value)
    return out


def _show(value: Any) -> str:
    """A value as it appears in an arm name: ``0.2``, ``null``, ``true``, ``sgd``, ``[0.9, 0.99]``.

    Any YAML value must get a name here (dates, ``!!binary`` bytes), because recipe validation, which refuses
    the values no recipe field takes, runs after the arms are named."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _same(a: Any, b: Any) -> bool:
    """Equality of spec values where ``0 == 0.0`` but ``True != 1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _rewrap(err: InputError, field: str, what: str) -> InputError:
    """An error from validating a recipe, re-addressed to the study field that caused it."""
    return InputError(field, f"{what} does not make a valid recipe: {err.field}: {err.problem}", err.allowed)


def _short(names: list[str], limit: int = 20) -> list[str]:
    return names if len(names) <= limit else names[:limit] + [f"... ({len(names) - limit} more)"]


@dataclass
class Arm:
    """One recipe of the study: its name, its own overrides (on top of base + common overrides), the recipe.

    ``recipe.name`` is ``"<study>/<arm>"``; ``recipe.seed`` is the base's — each trial replaces it with its seed
    (``StudySpec.trial_recipe``).
    """

    name: str
    overrides: dict[str, Any]
    recipe: Recipe


class Target(BaseModel):
    """A level a per-epoch metric should reach; the study reports the steps and seconds each trial needed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    metric: str
    value: float
    higher_is_better: bool | None = Field(None, description="default: from the metric (accuracy up, loss down)")

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in TARGET_METRICS:
            raise InputError("target.metric", f"unknown per-epoch metric {brief(v)}", allowed=list(TARGET_METRICS))
        return v

    @property
    def better_is_higher(self) -> bool:
        """Whether reaching the target means going at or above ``value`` (else at or below)."""
        return TARGET_METRICS[self.metric] if self.higher_is_better is None else self.higher_is_better


class StudySpec(BaseModel):
    """A validated study. Build with ``load_study(path)`` or ``study_from_dict(data, base_dir)``.

    Loading resolves and validates every arm; ``arms()``, ``baseline_arm()``, ``seed_list()`` and ``trials()``
    then describe exactly which runs the study consists of, and ``spec_hash()`` identifies that set of runs.
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
    metric: str | list[str] = "test_accuracy"
    baseline: str | dict[str, Any] | None = None
    target: Target | None = None
    executor: Literal["local", "population", "ray"] = "local"
    address: str | None = Field(None, description="ray cluster address (else RAY_ADDRESS)")
    max_retries: int = Field(2, ge=0, le=100, description="times a failed trial is retried on re-run")

    _arms: list[Arm] = PrivateAttr(default_factory=list)
    _baseline: str = PrivateAttr("")
    _base_inline: dict[str, Any] = PrivateAttr(default_factory=dict)

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

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v: Any) -> Any:
        if v is None or isinstance(v, dict) or (isinstance(v, str) and v.strip()):
            return v
        raise InputError("base", f"expected a recipe path or an inline recipe mapping, got {brief(v)}",
                         allowed="a YAML path relative to the study file, a mapping of recipe sections, or null")

    @field_validator("design", mode="before")
    @classmethod
    def _design(cls, v: Any) -> Any:
        if v not in DESIGNS:
            raise InputError("design", f"unknown design {brief(v)}", allowed=DESIGNS)
        return v

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, v: Any) -> Any:
        if v not in EXECUTORS:
            raise InputError("executor", f"unknown executor {brief(v)}", allowed=EXECUTORS)
        return v

    @field_validator("factors", mode="before")
    @classmethod
    def _factors(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise InputError("factors", f"expected a mapping, got {type(v).__name__}",
                             allowed="{recipe.key: [values]} or {factor name: {label: {recipe.key: value}}}")
        for key, values in v.items():
            if not isinstance(key, str) or not key.strip():
                raise InputError("factors", f"factor names must be non-empty strings, got {brief(key)}")
            if isinstance(values, list):
                if not values:
                    raise InputError(f"factors.{key_label(key)}", "empty list of values", allowed="at least one value")
                if len(values) > MAX_LEVELS:
                    raise InputError(f"factors.{key_label(key)}", f"{len(values)} values",
                                     allowed=f"at most {MAX_LEVELS} values per factor")
            elif isinstance(values, dict):
                if not values:
                    raise InputError(f"factors.{key_label(key)}", "no named override sets",
                                     allowed="{label: {recipe.key: value}, ...}")
                for label, sets in values.items():
                    if not isinstance(label, str) or not label.strip():
                        raise InputError(f"factors.{key_label(key)}",
                                         f"labels must be non-empty strings, got {brief(label)}")
                    if not isinstance(sets, dict):
                        raise InputError(f"factors.{key_label(key)}.{key_label(label)}",
                                         f"expected a mapping of recipe keys to values, got {type(sets).__name__}",
                                         allowed="{recipe.key: value}")
            else:
                raise InputError(f"factors.{key_label(key)}", f"expected a list of values or named override sets, "
                                 f"got {type(values).__name__}",
                                 allowed="[v1, v2, ...] or {label: {recipe.key: value}, ...}")
        return v

    @field_validator("remove", mode="before")
    @classmethod
    def _remove(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, dict):
            raise InputError("remove", f"expected a mapping, got {type(v).__name__}",
                             allowed="{trick: {recipe.key: value that switches it off}}")
        for label, sets in v.items():
            if not isinstance(label, str) or not label.strip():
                raise InputError("remove", f"trick names must be non-empty strings, got {brief(label)}")
            if not isinstance(sets, dict) or not sets:
                raise InputError(f"remove.{key_label(label)}", "expected a non-empty mapping of recipe keys to values",
                                 allowed="e.g. {model.norm: none}")
        return v

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise InputError("overrides", f"expected a mapping, got {type(v).__name__}",
                             allowed="e.g. {epochs: 10} or {optimizer.lr: 0.1}")
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
            if not isinstance(m, str) or m not in METRICS:
                raise InputError("metric", f"unknown metric {brief(m)}", allowed=list(METRICS))
        if len(set(names)) != len(names):
            raise InputError("metric", f"a metric is listed twice: {names}", allowed=list(METRICS))
        return v

    @field_validator("baseline", mode="before")
    @classmethod
    def _baseline_shape(cls, v: Any) -> Any:
        if v is None or isinstance(v, dict) or (isinstance(v, str) and v.strip()):
            return v
        raise InputError("baseline", f"expected an arm name or a mapping of factor settings, got {brief(v)}",
                         allowed="e.g. {model.dropout: 0.0} or an arm name")

    # -- resolution: every arm built and validated at load time ---------------------------------------------
    def model_post_init(self, context: Any, /) -> None:
        base_dir = context.get("base_dir") if isinstance(context, dict) else None
        self._base_inline = self._base_data(Path(base_dir) if base_dir is not None else Path.cwd())
        common = self._common_data(Path(base_dir) if base_dir is not None else Path.cwd())
        if self.design == "grid":
            arms, levels = self._grid_arms(common)
        else:
            arms, levels = self._leave_one_out_arms(common), {}
        self._check_trial_count(len(arms))
        self._check_distinct(arms)
        self._arms = arms
        self._baseline = self._resolve_baseline(arms, levels)

    def _base_data(self, base_dir: Path) -> dict[str, Any]:
        if self.base is None:
            return {}
        if isinstance(self.base, dict):
            try:
                recipe_from_dict(self.base)
            except InputError as err:
                raise InputError(f"base.{err.field}", err.problem, err.allowed) from None
            return copy.deepcopy(self.base)
        path = Path(self.base).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.exists():
            raise InputError("base", f"recipe file not found: {path} (relative paths start at the study file's "
                             "directory)", allowed="a recipe YAML path, an inline recipe mapping, or null")
        data = read_yaml(path, field="base")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError("base", f"{path} must hold a mapping of recipe sections, got {type(data).__name__}",
                             allowed=list(Recipe.model_fields))
        recipe_from_dict(data, source=str(path))
        return data

    def _common_data(self, base_dir: Path) -> dict[str, Any]:
        data = _with(self._base_data(base_dir), _flatten(self.overrides, "overrides"))
        try:
            recipe_from_dict(data)
        except InputError as err:
            raise InputError(f"overrides.{err.field}", err.problem, err.allowed) from None
        return data

    def _recipe(self, data: dict[str, Any], arm: str, flat: dict[str, Any]) -> Recipe:
        full_name = f"{self.name}/{arm}"
        if len(full_name) > 200:
            raise InputError("name", f"study name + arm name must be at most 200 characters; arm {arm!r} makes "
                             f"{len(full_name)}", allowed="a shorter study name or shorter labels")
        return recipe_from_dict({**_with(data, flat), "name": full_name})

    def _check_trial_count(self, arms: int) -> None:
        seeds = self.seeds if isinstance(self.seeds, int) else len(self.seeds)
        if arms * seeds > MAX_TRIALS:
            raise InputError("seeds", f"{arms} arms × {seeds} seeds is {arms * seeds} trials",
                             allowed=f"at most {MAX_TRIALS} trials in one study")

    def _grid_arms(self, common: dict[str, Any]) -> tuple[list[Arm], dict[str, list[tuple[Any, str]]]]:
        if self.remove:
            raise InputError("remove", "only used with design: leave_one_out", allowed="design: leave_one_out")
        if not self.factors:
            raise InputError("factors", "a grid study needs at least one factor",
                             allowed="{recipe.key: [values]} or {factor name: {label: {recipe.key: value}}}")
        # per factor: its levels as (label in arm names, value for baseline matching, dotted overrides)
        table: list[list[tuple[str, Any, dict[str, Any]]]] = []
        owner: dict[str, str] = {}
        for key, spec in self.factors.items():
            field = f"factors.{key_label(key)}"
            levels: list[tuple[str, Any, dict[str, Any]]] = []
            if isinstance(spec, list):
                _check_key(key, field)
                for value in spec:
                    if any(_same(value, seen) for _, seen, _ in levels):
                        raise InputError(field, f"value {brief(value)} is listed twice")
                    levels.append((f"{key}={_show(value)}", value, {key: value}))
            else:
                for label, sets in spec.items():
                    levels.append((label.strip(), label.strip(), _flatten(sets, f"{field}.{key_label(label)}")))
            for label, value, flat in levels:
                for k in flat:
                    if owner.setdefault(k, key) != key:
                        raise InputError(field, f"recipe key {k!r} is also set by factor {owner[k]!r}",
                                         allowed="each recipe key in one factor only")
                try:
                    recipe_from_dict(_with(common, flat))
                except InputError as err:
                    what = f"value {brief(value)}" if isinstance(spec, list) else f"override set {label!r}"
                    raise _rewrap(err, field, what) from None
            table.append(levels)
        count = math.prod(len(levels) for levels in table)
        if count > MAX_ARMS:
            raise InputError("factors", f"the grid has {count} arms", allowed=f"at most {MAX_ARMS} arms")
        self._check_trial_count(count)
        arms: list[Arm] = []
        for combo in itertools.product(*table):
            name = ",".join(label for label, _, _ in combo)
            flat = {k: v for _, _, part in combo for k, v in part.items()}
            try:
                recipe = self._recipe(common, name, flat)
            except InputError as err:
                if err.field == "name":
                    raise
                raise _rewrap(err, "factors", f"the combination {name!r}") from None
            arms.append(Arm(name, flat, recipe))
        level_values = {key: [(value, label) for label, value, _ in levels]
                        for key, levels in zip(self.factors, table)}
        return arms, level_values

    def _leave_one_out_arms(self, common: dict[str, Any]) -> list[Arm]:
        if self.factors:
            raise InputError("factors", "design leave_one_out takes its arms from `remove`, not from factors",
                             allowed="design: grid for factors, or remove: {trick: {recipe.key: value}}")
        if not self.remove:
            raise InputError("remove", "design leave_one_out needs the tricks to switch off",
                             allowed="remove: {trick: {recipe.key: value that switches it off}}, "
                                     "e.g. {batchnorm: {model.norm: none}}")
        arms = [Arm(FULL_ARM, {}, self._recipe(common, FULL_ARM, {}))]
        for label, sets in self.remove.items():
            flat = _flatten(sets, f"remove.{key_label(label)}")
            name = f"without {label.strip()}"
            try:
                arms.append(Arm(name, flat, self._recipe(common, name, flat)))
            except InputError as err:
                if err.field == "name":
                    raise
                raise _rewrap(err, f"remove.{key_label(label)}", "switching it off") from None
        return arms

    def _check_distinct(self, arms: list[Arm]) -> None:
        """Two arms that resolve to the same recipe would measure nothing (e.g. aliases, a no-op removal)."""
        seen: dict[str, str] = {}
        for arm in arms:
            key = json.dumps({k: v for k, v in recipe_to_dict(arm.recipe).items() if k != "name"}, sort_keys=True)
            if key in seen:
                other = seen[key]
                if self.design == "leave_one_out":
                    label = arm.name.removeprefix("without ")
                    raise InputError(f"remove.{key_label(label)}",
                                     f"arm {arm.name!r} is the same recipe as {other!r}: it "
                                     "switches nothing off (the base already has these settings)",
                                     allowed="settings that differ from the full recipe")
                raise InputError("factors", f"arms {other!r} and {arm.name!r} are the same recipe "
                                 "(aliases of one name, or a value equal to another after validation)")
            seen[key] = arm.name
        names = [a.name for a in arms]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise InputError("factors", f"two arms are both named {dup!r}", allowed="labels that keep names unique")

    def _resolve_baseline(self, arms: list[Arm], levels: dict[str, list[tuple[Any, str]]]) -> str:
        names = [a.name for a in arms]
        b = self.baseline
        if b is None:
            return names[0]  # grid: the first value of every factor; leave_one_out: "full"
        if isinstance(b, str):
            b = b.strip()
            if b in names:
                return b
            if self.design == "leave_one_out" and f"without {b}" in names:
                return f"without {b}"
            raise InputError("baseline", f"{brief(b)} is not an arm of this study", allowed=_short(names))
        if self.design == "leave_one_out":
            raise InputError("baseline", "leave_one_out compares with an arm by name", allowed=_short(names))
        wanted: dict[str, Any] = {}
        for key, value in b.items():
            if isinstance(value, dict) and str(key) not in levels:
                wanted.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                wanted[str(key)] = value
        for key in wanted:
            if key not in levels:
                raise InputError(f"baseline.{key_label(key)}", "not a factor of this study", allowed=list(levels))
        matches = [arm for arm, combo in zip(arms, itertools.product(*levels.values()))
                   if all(_same(combo[list(levels).index(k)][0], v) for k, v in wanted.items())]
        if not matches:
            choices = [f"{k}: {' | '.join(_show(v) for v, _ in vals)}" for k, vals in levels.items()]
            raise InputError("baseline", f"no arm has the settings {wanted}", allowed=choices)
        if len(matches) > 1:
            raise InputError("baseline", f"{wanted} matches {len(matches)} arms; give a value for every factor",
                             allowed=list(levels))
        return matches[0].name

    # -- what the study runs ----------------------------------------------------------------------------------
    def arms(self) -> list[Arm]:
        """Every arm, in design order (grid: factors vary fastest to the right); copies, safe to modify."""
        return [Arm(a.name, copy.deepcopy(a.overrides), a.recipe.model_copy(deep=True)) for a in self._arms]

    def arm_names(self) -> list[str]:
        return [a.name for a in self._arms]

    def seed_list(self) -> list[int]:
        """The seeds every arm runs: ``0..n-1`` for a count, else the list as given."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def metrics(self) -> list[str]:
        """The metrics to compare; the first is the primary one (the verdict's)."""
        return list(self.metric) if isinstance(self.metric, list) else [self.metric]

    def baseline_arm(self) -> str:
        """The name of the arm every other arm is compared with."""
        return self._baseline

    def trials(self) -> list[tuple[str, int]]:
        """Every (arm, seed) to run, seed-major: after k seeds, k complete pairs exist even if the rest fail."""
        return [(arm.name, seed) for seed in self.seed_list() for arm in self._arms]

    def trial_recipe(self, arm: str, seed: int) -> Recipe:
        """The recipe one trial runs: the arm's recipe with ``seed``."""
        for a in self._arms:
            if a.name == arm:
                return a.recipe.model_copy(update={"seed": int(seed)}, deep=True)
        raise InputError("arm", f"{arm!r} is not an arm of study {self.name!r}", allowed=_short(self.arm_names()))

    def self_contained(self) -> dict[str, Any]:
        """The spec as JSON data with its base recipe inlined, so a store keeps the whole study even when the
        recipe file moves or is edited (what a report rebuilds the spec from)."""
        data = self.model_dump(mode="json")
        data["base"] = copy.deepcopy(self._base_inline)
        return data

    def spec_hash(self) -> str:
        """sha256 of the resolved arms (name + recipe, less the per-trial seed) and the seeds.

        Only what decides which runs exist enters the hash: reordering keys, changing the metric, the executor
        or the retry count gives the same study; changing a recipe value, an arm or a seed gives another.
        """
        arms = sorted(
            [a.name, {k: v for k, v in recipe_to_dict(a.recipe).items() if k != "seed"}] for a in self._arms
        )
        payload = {"version": _HASH_VERSION, "arms": arms, "seeds": sorted(self.seed_list())}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
