"""The design of a study: from a validated spec to the exact set of runs — arms × seeds.

``design: grid`` crosses every factor's values (a full factorial design); ``design: leave_one_out`` takes the full
recipe and, for each trick in ``remove``, the full recipe with that one trick switched off. Every arm is a
recipe built and validated here, at load time, so a typo in a factor fails before any training starts, with an
``InputError`` naming the study field that caused it (``factors.model.dropout``). Every arm runs the same seeds
(a paired design, see ``tricklab.study.spec``); ``spec_hash`` identifies the set of runs.

``tricklab.study.spec`` validates the spec's shape (its fields, one by one) and builds a ``Design`` from it;
``StudySpec``'s ``arms()``, ``trials()``, ``trial_recipe()``, ``baseline_arm()`` and ``spec_hash()`` are this
module's.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from tricklab.errors import InputError, brief
from tricklab.recipe import Recipe, recipe_from_dict, recipe_to_dict
from tricklab.recipe.io import key_label, read_yaml

FULL_ARM = "full"
MAX_ARMS = 10_000            # a grid larger than this is almost surely a typo (and weeks of compute)
MAX_TRIALS = 100_000
"""Arms × seeds at most: 10⁵ trials of the smallest recipe (~1 s each) are more than a day on one core; a larger
count is a typo (``seeds: 100000`` over a grid), refused with its count before a single arm is built."""
_RESERVED = {"seed": "the study sets each trial's seed from `seeds`",
             "name": "the study names each arm's recipe '<study name>/<arm name>'"}
_HASH_VERSION = "tricklab-study-1"

Levels = dict[str, list[tuple[Any, str]]]
"""Per grid factor, its levels as (value for baseline matching, label in arm names), in order."""


class Spec(Protocol):
    """The fields of a validated spec a design is built from (``tricklab.study.spec.StudySpec`` has them; declared
    here so that the design does not import the spec that builds it)."""

    @property
    def name(self) -> str: ...
    @property
    def base(self) -> str | dict[str, Any] | None: ...
    @property
    def overrides(self) -> dict[str, Any]: ...
    @property
    def design(self) -> str: ...
    @property
    def factors(self) -> dict[str, list[Any] | dict[str, dict[str, Any]]]: ...
    @property
    def remove(self) -> dict[str, dict[str, Any]] | None: ...
    @property
    def seeds(self) -> int | list[int]: ...
    @property
    def split_per_seed(self) -> bool: ...
    @property
    def baseline(self) -> str | dict[str, Any] | None: ...


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


def check_name(name: Any, field: str, what: str) -> None:
    """Refuse a key of the spec that must name something (a factor, a label, a trick, a recipe key) but is no
    non-empty string: ``"<what> must be non-empty strings, got ..."`` at ``field``."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(field, f"{what} must be non-empty strings, got {brief(name)}")


def _flatten(mapping: Any, field: str, prefix: str = "") -> dict[str, Any]:
    """``{optimizer: {lr: 0.1}, epochs: 3}`` → ``{"optimizer.lr": 0.1, "epochs": 3}``; keys are checked."""
    if not isinstance(mapping, dict):
        raise InputError(field, f"expected a mapping of recipe keys to values, got {type(mapping).__name__}",
                         allowed="e.g. {optimizer.lr: 0.1} or {optimizer: {lr: 0.1}}")
    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        check_name(k, field, "keys")
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


def _without(recipe: Recipe, key: str) -> dict[str, Any]:
    """The recipe as data less one top-level key (``name`` or ``seed``): what two arms must not both be."""
    return {k: v for k, v in recipe_to_dict(recipe).items() if k != key}


@dataclass
class Arm:
    """One recipe of the study: its name, its own overrides (on top of base + common overrides), the recipe.

    ``recipe.name`` is ``"<study>/<arm>"``; ``recipe.seed`` is the base's — each trial replaces it with its seed
    (``Design.trial_recipe``).
    """

    name: str
    overrides: dict[str, Any]
    recipe: Recipe


def read_base(base: str | dict[str, Any] | None, base_dir: Path) -> dict[str, Any]:
    """The base recipe as data, validated: ``{}`` for the built-in default, a copy of an inline mapping, or the
    recipe file (a relative path starts at ``base_dir``, the study file's directory). Read once per spec."""
    if base is None:
        return {}
    if isinstance(base, dict):
        try:
            recipe_from_dict(base)
        except InputError as err:
            raise InputError(f"base.{err.field}", err.problem, err.allowed) from None
        return copy.deepcopy(base)
    path = Path(base).expanduser()
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


class Design:
    """The runs a study consists of: its arms (validated recipes, in design order), the baseline arm, the seeds.

    Build with ``Design.of(spec, base_dir)``; the spec's own field checks have passed by then."""

    def __init__(self, study: str, arms: list[Arm], baseline: str, seeds: list[int], base: dict[str, Any],
                 split_per_seed: bool = False) -> None:
        self.study = study
        self.split_per_seed = split_per_seed   # each trial's data.split_seed is its seed (a split drawn per seed)
        self._arms = arms
        self._baseline = baseline
        self._seeds = seeds
        self.base = base   # the base recipe as data (inlined into the stored spec: ``StudySpec.self_contained``)

    @classmethod
    def of(cls, spec: Spec, base_dir: Path) -> Design:
        """Resolve and validate every arm of ``spec``; a relative ``base`` path starts at ``base_dir``."""
        seeds = list(range(spec.seeds)) if isinstance(spec.seeds, int) else list(spec.seeds)
        base = read_base(spec.base, base_dir)
        common = _with(base, _flatten(spec.overrides, "overrides"))
        try:
            recipe_from_dict(common)
        except InputError as err:
            raise InputError(f"overrides.{err.field}", err.problem, err.allowed) from None
        if spec.design == "grid":
            arms, levels = _grid_arms(spec, common, len(seeds))
        else:
            arms, levels = _leave_one_out_arms(spec, common), {}
        _check_trial_count(len(arms), len(seeds))
        _check_distinct(arms, spec.design)
        return cls(spec.name, arms, _resolve_baseline(spec, arms, levels), seeds, base, bool(spec.split_per_seed))

    # -- what the study runs ----------------------------------------------------------------------------------
    def arms(self) -> list[Arm]:
        """Every arm, in design order (grid: factors vary fastest to the right); copies, safe to modify."""
        return [Arm(a.name, copy.deepcopy(a.overrides), a.recipe.model_copy(deep=True)) for a in self._arms]

    def arm_names(self) -> list[str]:
        return [a.name for a in self._arms]

    def seed_list(self) -> list[int]:
        """The seeds every arm runs: ``0..n-1`` for a count, else the list as given."""
        return list(self._seeds)

    def baseline_arm(self) -> str:
        """The name of the arm every other arm is compared with."""
        return self._baseline

    def trials(self) -> list[tuple[str, int]]:
        """Every (arm, seed) to run, seed-major: after k seeds, k complete pairs exist even if the rest fail."""
        return [(arm.name, seed) for seed in self._seeds for arm in self._arms]

    def trial_recipe(self, arm: str, seed: int) -> Recipe:
        """The recipe one trial runs: the arm's recipe with ``seed`` (and, with ``split_per_seed``, its data split
        drawn with that seed)."""
        for a in self._arms:
            if a.name == arm:
                update: dict[str, Any] = {"seed": int(seed)}
                if self.split_per_seed:
                    update["data"] = a.recipe.data.model_copy(update={"split_seed": int(seed)})
                return a.recipe.model_copy(update=update, deep=True)
        raise InputError("arm", f"{arm!r} is not an arm of study {self.study!r}", allowed=_short(self.arm_names()))

    def spec_hash(self) -> str:
        """sha256 of the resolved arms (name + recipe, less the per-trial seed) and the seeds.

        Only what decides which runs exist enters the hash: reordering keys, changing the metric, the executor
        or the retry count gives the same study; changing a recipe value, an arm or a seed gives another.
        """
        arms = sorted([a.name, _without(a.recipe, "seed")] for a in self._arms)
        payload: dict[str, Any] = {"version": _HASH_VERSION, "arms": arms, "seeds": sorted(self._seeds)}
        if self.split_per_seed:   # only when set: every study without it keeps its hash
            payload["split_per_seed"] = True
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- building the arms ----------------------------------------------------------------------------------------
def _recipe(study: str, data: dict[str, Any], arm: str, flat: dict[str, Any]) -> Recipe:
    full_name = f"{study}/{arm}"
    if len(full_name) > 200:
        raise InputError("name", f"study name + arm name must be at most 200 characters; arm {arm!r} makes "
                         f"{len(full_name)}", allowed="a shorter study name or shorter labels")
    return recipe_from_dict({**_with(data, flat), "name": full_name})


def _check_trial_count(arms: int, seeds: int) -> None:
    if arms * seeds > MAX_TRIALS:
        raise InputError("seeds", f"{arms} arms × {seeds} seeds is {arms * seeds} trials",
                         allowed=f"at most {MAX_TRIALS} trials in one study")


def _grid_arms(spec: Spec, common: dict[str, Any], seeds: int) -> tuple[list[Arm], Levels]:
    if spec.remove:
        raise InputError("remove", "only used with design: leave_one_out", allowed="design: leave_one_out")
    if not spec.factors:
        raise InputError("factors", "a grid study needs at least one factor",
                         allowed="{recipe.key: [values]} or {factor name: {label: {recipe.key: value}}}")
    # per factor: its levels as (label in arm names, value for baseline matching, dotted overrides)
    table: list[list[tuple[str, Any, dict[str, Any]]]] = []
    owner: dict[str, str] = {}
    for key, values in spec.factors.items():
        field = f"factors.{key_label(key)}"
        levels: list[tuple[str, Any, dict[str, Any]]] = []
        if isinstance(values, list):
            _check_key(key, field)
            for value in values:
                if any(_same(value, seen) for _, seen, _ in levels):
                    raise InputError(field, f"value {brief(value)} is listed twice")
                levels.append((f"{key}={_show(value)}", value, {key: value}))
        else:
            for label, sets in values.items():
                levels.append((label.strip(), label.strip(), _flatten(sets, f"{field}.{key_label(label)}")))
        for label, value, flat in levels:
            for k in flat:
                if owner.setdefault(k, key) != key:
                    raise InputError(field, f"recipe key {k!r} is also set by factor {owner[k]!r}",
                                     allowed="each recipe key in one factor only")
            try:
                recipe_from_dict(_with(common, flat))
            except InputError as err:
                what = f"value {brief(value)}" if isinstance(values, list) else f"override set {label!r}"
                raise _rewrap(err, field, what) from None
        table.append(levels)
    count = math.prod(len(levels) for levels in table)
    if count > MAX_ARMS:
        raise InputError("factors", f"the grid has {count} arms", allowed=f"at most {MAX_ARMS} arms")
    _check_trial_count(count, seeds)   # before a single combination is built
    arms: list[Arm] = []
    for combo in itertools.product(*table):
        name = ",".join(label for label, _, _ in combo)
        flat = {k: v for _, _, part in combo for k, v in part.items()}
        try:
            recipe = _recipe(spec.name, common, name, flat)
        except InputError as err:
            if err.field == "name":
                raise
            raise _rewrap(err, "factors", f"the combination {name!r}") from None
        arms.append(Arm(name, flat, recipe))
    level_values = {key: [(value, label) for label, value, _ in levels] for key, levels in zip(spec.factors, table)}
    return arms, level_values


def _leave_one_out_arms(spec: Spec, common: dict[str, Any]) -> list[Arm]:
    if spec.factors:
        raise InputError("factors", "design leave_one_out takes its arms from `remove`, not from factors",
                         allowed="design: grid for factors, or remove: {trick: {recipe.key: value}}")
    if not spec.remove:
        raise InputError("remove", "design leave_one_out needs the tricks to switch off",
                         allowed="remove: {trick: {recipe.key: value that switches it off}}, "
                                 "e.g. {batchnorm: {model.norm: none}}")
    arms = [Arm(FULL_ARM, {}, _recipe(spec.name, common, FULL_ARM, {}))]
    for label, sets in spec.remove.items():
        flat = _flatten(sets, f"remove.{key_label(label)}")
        name = f"without {label.strip()}"
        try:
            arms.append(Arm(name, flat, _recipe(spec.name, common, name, flat)))
        except InputError as err:
            if err.field == "name":
                raise
            raise _rewrap(err, f"remove.{key_label(label)}", "switching it off") from None
    return arms


def _check_distinct(arms: list[Arm], design: str) -> None:
    """Two arms that resolve to the same recipe would measure nothing (e.g. aliases, a no-op removal)."""
    seen: dict[str, str] = {}
    for arm in arms:
        key = json.dumps(_without(arm.recipe, "name"), sort_keys=True)
        if key in seen:
            other = seen[key]
            if design == "leave_one_out":
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


def _resolve_baseline(spec: Spec, arms: list[Arm], levels: Levels) -> str:
    names = [a.name for a in arms]
    b = spec.baseline
    if b is None:
        return names[0]  # grid: the first value of every factor; leave_one_out: "full"
    if isinstance(b, str):
        b = b.strip()
        if b in names:
            return b
        if spec.design == "leave_one_out" and f"without {b}" in names:
            return f"without {b}"
        raise InputError("baseline", f"{brief(b)} is not an arm of this study", allowed=_short(names))
    if spec.design == "leave_one_out":
        raise InputError("baseline", "leave_one_out compares with an arm by name", allowed=_short(names))
    wanted = _baseline_settings(b, levels)
    matches = [arm for arm, combo in zip(arms, itertools.product(*levels.values()))
               if all(_same(combo[list(levels).index(k)][0], v) for k, v in wanted.items())]
    if not matches:
        choices = [f"{k}: {' | '.join(_show(v) for v, _ in vals)}" for k, vals in levels.items()]
        raise InputError("baseline", f"no arm has the settings {wanted}", allowed=choices)
    if len(matches) > 1:
        raise InputError("baseline", f"{wanted} matches {len(matches)} arms; give a value for every factor",
                         allowed=list(levels))
    return matches[0].name


def _baseline_settings(baseline: Mapping[Any, Any], levels: Levels) -> dict[str, Any]:
    """``{model: {dropout: 0.0}}`` or ``{model.dropout: 0.0}`` → ``{"model.dropout": 0.0}``, each key a factor."""
    wanted: dict[str, Any] = {}
    for key, value in baseline.items():
        if isinstance(value, dict) and str(key) not in levels:
            wanted.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            wanted[str(key)] = value
    for key in wanted:
        if key not in levels:
            raise InputError(f"baseline.{key_label(key)}", "not a factor of this study", allowed=list(levels))
    return wanted
