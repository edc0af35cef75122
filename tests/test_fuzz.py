"""Fuzzed input (docs/RELIABILITY.md): any recipe, ``--set`` override or study spec is either valid or refused with
an ``InputError`` (exit code 2) whose message names the field — never another exception, never a traceback.

Hypothesis generates the values YAML can produce (``yaml.safe_load``: null, booleans, integers of any size,
floats with NaN/Inf, unicode text, dates, ``!!binary`` bytes, lists, mappings with non-string keys), shaped
like recipes and specs so that valid inputs are generated too, and checks the parsing functions in-process,
1000 examples per property. Two real CLI subprocesses check the exit code and message end to end.
"""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.conftest import run_cli
from tricklab.errors import InputError
from tricklab.recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict, recipe_to_dict
from tricklab.recipe.io import key_label
from tricklab.recipe.schema import _registry
from tricklab.study import load_study, study_from_dict
from tricklab.study.spec import METRICS, RECIPE_KEYS, StudySpec

FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

NAMES = {kind: _registry(kind).allowed() for kind in ("dataset", "model", "scaling", "init", "norm", "activation",
                                                         "optimizer", "clip", "schedule", "averaging")}
SECTIONS = [name for name, f in Recipe.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]

# -- values YAML can hand us ----------------------------------------------------------------------------------------
hostile_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\x00", "\u202e", "<script>alert(1)</script>", "名前", "🚀", "nan", "NaN", "inf",
                     "-inf",
                     "1e400", "0x10", "1_000", "~", "null", "yes", "../../etc/passwd", "a:b", "os:system",
                     "!!python/object/apply:os.system", "9" * 5000]),
)
numbers = st.one_of(
    st.integers(min_value=-3, max_value=130),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=2.0),
    st.sampled_from([0, 1, -1, 0.0, 1e-320, 1e308, 2**63, 2**63 - 1, -(2**63)]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, hostile_text, st.dates(), st.datetimes(), st.binary(max_size=6),
                    st.sampled_from([n for names in NAMES.values() for n in names]))
any_value = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.one_of(hostile_text, st.integers()),
                                                                          inner, max_size=3)), max_leaves=8)
odd_keys = st.one_of(hostile_text, st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))


def _plausible(key: str) -> st.SearchStrategy[Any]:
    """Values near the valid ones for a recipe key (a name of its registry, a number), mixed with anything."""
    last = key.split(".")[-1]
    registry = {"data.name": "dataset", "data.scale": "scaling", "model.name": "model", "model.norm": "norm",
                "model.activation": "activation", "init.scheme": "init", "optimizer.name": "optimizer",
                "clip.mode": "clip", "schedule.name": "schedule", "averaging.mode": "averaging"}.get(key)
    if registry:
        near = st.sampled_from(NAMES[registry])
    elif last in ("betas",):
        near = st.lists(st.floats(min_value=-0.5, max_value=1.5), min_size=0, max_size=3)
    elif last in ("decay", "monitor", "device"):
        near = st.sampled_from(["decoupled", "l2", "val_loss", "val_accuracy", "auto", "cpu", "cuda", "tpu"])
    else:
        near = numbers
    return st.one_of(near, near, scalars, any_value)


@st.composite
def recipe_mappings(draw: st.DrawFn) -> dict[Any, Any]:
    """Recipe-shaped mappings: known sections and keys with plausible or hostile values, sometimes unknown keys."""
    data: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(RECIPE_KEYS), max_size=6, unique=True)):
        section, _, field = key.partition(".")
        value = draw(_plausible(key))
        if field:
            node = data.setdefault(section, {})
            if isinstance(node, dict):
                node[field] = value
        else:
            data[section] = value
    if draw(st.integers(0, 9)) == 9:  # an unknown key, now and then
        data[draw(odd_keys)] = draw(any_value)
    if draw(st.integers(0, 9)) == 9:
        data[draw(st.sampled_from(SECTIONS))] = draw(any_value)
    return data


def _assert_names_a_field(err: InputError, given_keys: set[str], known: set[str]) -> None:
    """The message starts with a non-empty field whose first part is a key the input had or a known field."""
    message = str(err)
    assert err.field and err.field.strip() == err.field, repr(err.field)
    assert message.startswith(f"{err.field}: "), message
    assert "Traceback" not in message
    elided = re.fullmatch(r"(.*)\.\.\. \(\d+ more characters\)", err.field, re.DOTALL)   # a 5000-character key
    if elided:
        assert any(k.startswith(elided.group(1)) for k in given_keys | known), (err.field, given_keys)
        return
    assert any(err.field == k or err.field.startswith((k + ".", k + " ")) for k in given_keys | known), \
        (err.field, given_keys)


# -- recipes -------------------------------------------------------------------------------------------------------
@FUZZ
@given(recipe_mappings())
def test_any_recipe_mapping_is_valid_or_names_the_field(data):
    try:
        recipe = recipe_from_dict(data)
    except InputError as err:
        _assert_names_a_field(err, {key_label(k) for k in data}, set(Recipe.model_fields) | {"recipe"})
        return
    # valid: what it resolves to survives a YAML round trip unchanged (what a run directory keeps)
    assert recipe_from_dict(yaml.safe_load(yaml.safe_dump(recipe_to_dict(recipe)))) == recipe
    assert all(math.isfinite(v) for v in _numbers(recipe_to_dict(recipe)))


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


set_keys = st.one_of(st.sampled_from(RECIPE_KEYS), st.sampled_from(SECTIONS), hostile_text,
                     st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(SECTIONS), hostile_text))
set_values = st.one_of(
    hostile_text,
    numbers.map(str),
    st.sampled_from(NAMES["optimizer"] + NAMES["dataset"] + ["[0.9, 0.99]", "[.nan, 0.1]", "{a: 1}", "[", "]", "{",
                    "'", '"', "- x", "&a [*a]", "!!binary aGk=", "!!python/object/apply:os.system ['true']",
                    "2024-01-01", "[" * 200]),
)


@FUZZ
@given(st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", set_keys, set_values), hostile_text), max_size=4),
       st.booleans())
def test_any_set_override_is_valid_or_names_the_field(pairs, on_the_default):
    base = recipe_to_dict(Recipe()) if on_the_default else {}
    try:
        recipe = recipe_from_dict(apply_overrides(base, pairs))
    except InputError as err:
        keys = {p.partition("=")[0].strip() for p in pairs}
        _assert_names_a_field(err, {"--set"} | {k.split(".")[0] for k in keys if k}, set())
        return
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe
    # overrides set values, they do not accumulate: applied again to their own result they change nothing
    assert recipe_from_dict(apply_overrides(recipe_to_dict(recipe), pairs)) == recipe


# -- study specs ----------------------------------------------------------------------------------------------------
small_recipe = st.fixed_dictionaries({"data": st.just({"name": "synthetic"}), "model": st.just({"name": "mlp"})},
                                     optional={"epochs": _plausible("epochs"),
                                               "optimizer": st.fixed_dictionaries({}, optional={
                                                   "lr": _plausible("optimizer.lr"),
                                                   "name": _plausible("optimizer.name")})})
factor_values = st.one_of(st.lists(st.one_of(numbers, scalars), max_size=3),
                          st.dictionaries(hostile_text, st.dictionaries(st.sampled_from(RECIPE_KEYS), scalars,
                                                                        max_size=2), max_size=2),
                          any_value)


good_factors = st.dictionaries(
    st.sampled_from(["model.dropout", "optimizer.lr"]),
    st.lists(st.floats(min_value=0.0, max_value=0.9), min_size=1, max_size=3, unique=True), min_size=1, max_size=2)


@st.composite
def study_mappings(draw: st.DrawFn) -> dict[Any, Any]:
    """Study-shaped mappings: each part well formed three times in four (so valid specs are generated too), else
    wild."""
    def part(good: st.SearchStrategy[Any], wild: st.SearchStrategy[Any] = any_value) -> Any:
        return draw(wild if draw(st.integers(0, 3)) == 3 else good)

    spec: dict[Any, Any] = {"name": part(st.sampled_from(["s", "dropout", "名前", "<script>x</script>"]),
                                         st.one_of(hostile_text, scalars))}
    if draw(st.booleans()):
        spec["base"] = part(small_recipe, st.one_of(st.none(), any_value))
    spec["factors"] = part(good_factors, st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(["model.dropout", "optimizer.lr", "model.depth", "epochs",
                                                   "optimizer.name", "seed", "name", "model"]), hostile_text),
                        factor_values, max_size=2),
        any_value))
    optional = {
        "seeds": (st.one_of(st.integers(1, 4), st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True)),
                  st.one_of(st.integers(-2, 5), st.lists(st.integers(-1, 6), max_size=4), any_value)),
        "metric": (st.one_of(st.sampled_from(list(METRICS)), st.lists(st.sampled_from(list(METRICS)), min_size=1,
                                                                      max_size=3, unique=True)), any_value),
        "baseline": (st.sampled_from(["model.dropout=0.0", "optimizer.lr=0.1"]), st.one_of(
            hostile_text, st.dictionaries(st.sampled_from(["model.dropout", "optimizer.lr"]), numbers, max_size=2),
            any_value)),
        "design": (st.just("grid"), st.one_of(st.just("leave_one_out"), any_value)),
        "remove": (st.none(), st.one_of(st.dictionaries(hostile_text, st.dictionaries(st.sampled_from(RECIPE_KEYS),
                                                                                      scalars, max_size=2),
                                                        max_size=2), any_value)),
        "overrides": (st.fixed_dictionaries({"epochs": st.integers(1, 3)}),
                      st.one_of(st.dictionaries(st.sampled_from(RECIPE_KEYS), scalars, max_size=2), any_value)),
        "target": (st.fixed_dictionaries({"metric": st.sampled_from(["val_accuracy", "val_loss"]),
                                          "value": st.floats(0, 1)}),
                   st.one_of(st.fixed_dictionaries({"metric": hostile_text, "value": numbers}), any_value)),
        "executor": (st.sampled_from(["local", "ray"]), st.one_of(st.just("population"), any_value)),
        "max_retries": (st.integers(0, 5), numbers),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), max_size=3, unique=True)):
        spec[key] = part(*optional[key])
    if draw(st.integers(0, 9)) == 9:  # an unknown key, now and then
        spec[draw(odd_keys)] = draw(any_value)
    return spec


@FUZZ
@given(study_mappings())
def test_any_study_spec_is_valid_or_names_the_field(data):
    try:
        spec = study_from_dict(data)
    except InputError as err:
        _assert_names_a_field(err, {key_label(k) for k in data}, set(StudySpec.model_fields) | {"study"})
        return
    arms = spec.arm_names()
    assert len(set(arms)) == len(arms) and spec.baseline_arm() in arms
    assert len(spec.trials()) == len(arms) * len(spec.seed_list())
    # the store keeps self_contained(); rebuilt from it, the study is the same set of runs
    assert study_from_dict(spec.self_contained()).spec_hash() == spec.spec_hash()


# -- whole YAML files -------------------------------------------------------------------------------------------------
yaml_fragments = st.sampled_from([
    "name: x\n", "epochs: 3\n", "optimizer: {lr: .nan}\n", "data:\n  name: synthetic\n", "model: [1, 2]\n", "- 1\n",
    "!!python/object/apply:os.system ['true']\n", "name: !!python/name:os.system\n", "a: &a [*a]\n", "{", "}\n",
    "\t\n", "---\n", "...\n", "%YAML 1.1\n", "? [a, b]\n: c\n", "seed: 99999999999999999999999\n",
    "epochs: 1e400\n", "name: \"\\u0000\"\n", "!!binary aGk=\n", "data: {name: csv, path: /dev/null}\n",
    "factors: {model.dropout: [0.0, 0.5]}\n", "seeds: 2\n", "base: {data: {name: synthetic}}\n",
])


@pytest.fixture(scope="module")
def yaml_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("yaml")


@FUZZ
@given(st.lists(st.one_of(yaml_fragments, st.text(max_size=20)), max_size=5), st.booleans())
def test_any_yaml_file_is_a_recipe_or_study_or_names_the_field(yaml_dir, parts, as_study):
    path: Path = yaml_dir / "input.yaml"
    path.write_text("".join(parts), encoding="utf-8")
    try:
        load_study(path) if as_study else load_recipe(path)
    except InputError as err:
        message = str(err)
        assert err.field and message.startswith(f"{err.field}: ") and "Traceback" not in message
        known = (set(StudySpec.model_fields) | {"study"}) if as_study else (set(Recipe.model_fields) | {"recipe"})
        assert err.field.split(".")[0] in known or str(path) in message or err.field.startswith("'"), message


def test_the_generators_reach_valid_inputs_too():
    """The properties above mean little if every example is refused: a fair share must be valid."""
    valid = {"recipe": 0, "study": 0}

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(recipe_mappings(), study_mappings())
    def count(recipe, study):
        for kind, fn, data in (("recipe", recipe_from_dict, recipe), ("study", study_from_dict, study)):
            try:
                fn(data)
                valid[kind] += 1
            except InputError:
                pass

    count()
    assert valid["recipe"] >= 20 and valid["study"] >= 30, valid


# -- end to end: the real command, exit code 2, the message, no traceback ---------------------------------------------
@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["train", "--set", "optimizer.lr=.nan", "--set", "name=<script>"], "optimizer.lr"),
        (["study", "SPEC"], "seeds"),
    ],
)
def test_cli_exits_2_naming_the_field(tmp_path, args, field):
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({"name": "名前 ✓", "base": {"data": {"name": "synthetic"}},
                                    "factors": {"model.dropout": [0.0, 0.5]}, "seeds": [1, 1]}))
    r = run_cli(*[str(spec) if a == "SPEC" else a for a in args], "--store", str(tmp_path / "s.sqlite"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: {field}: ") and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.glob("runs")), "a refused input must not start a run"


def test_dates_and_binary_values_are_refused_not_crashed():
    """Regression: dates and ``!!binary`` bytes in a factor once crashed naming the arm (json.dumps)."""
    for value in (datetime.date(2024, 1, 1), b"\xff"):
        with pytest.raises(InputError) as err:
            study_from_dict({"name": "s", "factors": {"optimizer.momentum": [value, 0.5]}})
        assert err.value.field == "factors.optimizer.momentum"
    for bad in ({"a": 1}, [["x"]]):  # unhashable metric names once raised TypeError
        with pytest.raises(InputError, match="unknown metric"):
            study_from_dict({"name": "s", "factors": {"model.dropout": [0.0, 0.5]}, "metric": bad})
    for key in ("", " ", "\t"):  # a blank key once gave an error naming the empty field
        with pytest.raises(InputError) as err:
            recipe_from_dict({key: 1})
        assert err.value.field == repr(key)
        with pytest.raises(InputError) as err:
            study_from_dict({"name": "s", key: 1})
        assert err.value.field == repr(key)
