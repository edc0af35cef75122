"""Recipes: defaults, YAML in/out, dotted overrides, and one clear error per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tricklab.errors import InputError
from tricklab.recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict, recipe_to_dict, save_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_default_recipe_has_the_design_shape():
    r = recipe_to_dict(Recipe())
    for section, keys in {
        "data": {"name", "scale", "val_fraction", "batch_size"},
        "model": {"name", "depth", "width", "activation", "norm", "dropout"},
        "init": {"scheme"},
        "optimizer": {"name", "lr", "weight_decay", "decay", "momentum"},
        "clip": {"mode", "threshold"},
        "schedule": {"name", "warmup_epochs", "gamma"},
        "early_stopping": {"patience", "monitor"},
        "averaging": {"mode", "k", "decay"},
    }.items():
        assert keys <= set(r[section]), section
    assert {"name", "seed", "epochs"} <= set(r)


def test_shipped_default_yaml_equals_the_builtin_default():
    assert load_recipe(ROOT / "recipes" / "default.yaml") == Recipe()


def test_yaml_round_trip(tmp_path):
    r = load_recipe(None, ["optimizer.lr=0.1", "model.depth=20", "clip.mode=norm", "optimizer.betas=[0.8, 0.9]"])
    save_recipe(r, tmp_path / "r.yaml")
    assert load_recipe(tmp_path / "r.yaml") == r
    assert r.optimizer.lr == 0.1 and r.model.depth == 20 and r.clip.mode == "norm" and r.optimizer.betas == (0.8, 0.9)


def test_the_shipped_speedrun_recipe_is_valid_and_is_the_one_the_benchmark_times():
    """``examples/mnist1d-speedrun.yaml`` (issue 19: >= 0.985 in <= 3 s, ``bench/speedrun.py``) loads as a recipe."""
    recipe = load_recipe(ROOT / "examples" / "mnist1d-speedrun.yaml")
    assert recipe.data.name == "mnist1d" and recipe.data.val_fraction == 0.0 and recipe.model.activation == "gelu"
    assert 'ROOT / "examples" / "mnist1d-speedrun.yaml"' in (ROOT / "bench" / "speedrun.py").read_text()


def test_aliases_resolve_to_canonical_names():
    r = load_recipe(None, ["init.scheme=xavier"])
    assert r.init.scheme == "glorot"
    assert load_recipe(None, ["init.scheme=kaiming"]).init.scheme == "he"


def test_overrides_do_not_touch_the_input():
    base = {"optimizer": {"lr": 1.0}}
    out = apply_overrides(base, ["optimizer.lr=2"])
    assert base == {"optimizer": {"lr": 1.0}} and out == {"optimizer": {"lr": 2}}


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        (["init.scheme=fancy"], "init.scheme", ["lecun", "glorot", "he"]),
        (["optimizer.name=adamx"], "optimizer.name", ["adam", "sgd", "momentum"]),
        (["optimizer.lr=-0.1"], "optimizer.lr", ["greater than 0"]),
        (["model.dropout=1.5"], "model.dropout", ["less than 1"]),
        (["clip.mode=sometimes"], "clip.mode", ["norm", "unit", "value", "agc"]),
        (["schedule.name=linear"], "schedule.name", ["cosine", "one_cycle"]),
        (["data.name=imagenet"], "data.name", ["mnist1d", "digits"]),
        (["data.name=csv"], "data.path", ["local path"]),
        (["model.activation=swish"], "model.activation", ["relu", "tanh"]),
        (["optimizer.lr=.nan"], "optimizer.lr", []),
        (["optimizer.decay=l2"], "optimizer.decay", ["adam"]),
        (["epochs=zero"], "epochs", ["integer"]),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(overrides, field, words):
    with pytest.raises(InputError) as err:
        load_recipe(None, overrides)
    assert err.value.field == field
    for w in words:
        assert w in str(err.value)


def test_unknown_set_key_lists_the_keys():
    with pytest.raises(InputError) as err:
        load_recipe(None, ["optimizer.learning_rate=0.1"])
    assert err.value.field == "--set optimizer.learning_rate"
    assert "lr" in str(err.value) and "weight_decay" in str(err.value)
    with pytest.raises(InputError, match="section.key=value"):
        load_recipe(None, ["optimizer.lr"])


def test_unknown_yaml_key_is_refused(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"model": {"name": "mlp", "layers": 3}}))
    with pytest.raises(InputError) as err:
        load_recipe(p)
    assert err.value.field == "model.layers" and "depth" in str(err.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("model: {name: mlp\n", ["malformed YAML", "line"]),
        ("!!python/object/apply:os.system ['echo pwned']\n", ["malformed YAML"]),
        ("- just\n- a list\n", ["mapping"]),
    ],
)
def test_malformed_yaml(tmp_path, text, words):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as err:
        load_recipe(p)
    for w in words:
        assert w in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="directory"):
        load_recipe(tmp_path)


def test_empty_file_is_the_default(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_recipe(p) == Recipe()


def test_recipe_from_dict_rejects_non_mapping():
    with pytest.raises(InputError):
        recipe_from_dict([1, 2])
