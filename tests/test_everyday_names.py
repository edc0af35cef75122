"""Runs named after what they are (issue 18 item 1): ``<data>-<model>`` (or the user factory's name), then the
time and a short random id — unless the recipe names the run itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import last_json
from tests.test_everyday_errors import FAST, tricklab
from tricklab.recipe import Recipe, load_recipe
from tricklab.recipe.identity import recipe_hash
from tricklab.train.run import named, new_run_dir, run_name

STAMP = r"\d{8}-\d{6}-[0-9a-f]{6}"


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], "mnist1d-cnn"),
    (["data.name=digits", "model.name=mlp"], "digits-mlp"),
    (["model.name=resnet"], "mnist1d-resnet"),
    (["data.name=synthetic", "data.variant=spirals", "model.name=mlp"], "synthetic-spirals-mlp"),
    (["model.python=my_models.nets:make_net"], "mnist1d-make_net"),
    (["data.python=my_data.sensors:load_sensors", "model.name=mlp"], "load_sensors-mlp"),
    (["data.name=csv", "data.path=/data/iris.v2.csv", "model.name=mlp"], "iris.v2-mlp"),
])
def test_a_run_is_named_after_its_data_and_model(overrides, expected):
    recipe = load_recipe(None, overrides)
    assert "name" not in recipe.model_fields_set
    assert run_name(recipe) == expected
    assert named(recipe, explicit=False).name == expected
    assert re.fullmatch(rf"{re.escape(expected)}-{STAMP}", new_run_dir(named(recipe, False), "runs").name)


def test_a_name_the_recipe_gives_is_kept(tmp_path):
    recipe = load_recipe(None, ["name=baseline", "model.name=mlp"])
    assert "name" in recipe.model_fields_set and named(recipe, explicit=True).name == "baseline"
    (tmp_path / "r.yaml").write_text("name: mine\nmodel: {name: mlp}\n")
    assert "name" in load_recipe(tmp_path / "r.yaml").model_fields_set


def test_the_default_recipe_file_names_nothing():
    """recipes/default.yaml leaves the name to the run, so that --set model.name=mlp makes an mnist1d-mlp run."""
    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "default.yaml", ["model.name=mlp"])
    assert run_name(recipe) == "mnist1d-mlp" and "name" not in recipe.model_fields_set


def test_the_default_recipe_keeps_its_identity():
    """Naming a default run after its data and model changes nothing in its recipe: the hash is the one a run of
    Recipe() always had (studies name their trials themselves, so their hashes are untouched too)."""
    assert named(Recipe(), explicit=False) == Recipe()
    assert recipe_hash(named(Recipe(), explicit=False)) == recipe_hash(Recipe())


def test_the_cli_names_the_run_directory_and_the_recipe(tmp_path):
    r = tricklab("train", *FAST, "--json", "--quiet", "--store", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    run_dir = tmp_path / out["run_dir"]
    assert re.fullmatch(rf"digits-mlp-{STAMP}", run_dir.name), run_dir.name
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["name"] == "digits-mlp"
    r = tricklab("train", *FAST, "name=my-baseline", "--json", "--quiet", "--store", "none", cwd=tmp_path)
    assert re.fullmatch(rf"my-baseline-{STAMP}", Path(last_json(r.stdout)["run_dir"]).name)


def test_the_doctor_and_lr_find_name_their_runs_alike(tmp_path):
    r = tricklab("doctor", *FAST, "--json", "--quiet", "--store", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"digits-mlp-{STAMP}", Path(last_json(r.stdout)["run_dir"]).name)
    r = tricklab("lr-find", *FAST, "--steps", "10", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"lr-find-digits-mlp-\d{8}-\d{6}", Path(last_json(r.stdout)["png"]).parent.name)


def test_a_users_module_beside_the_command_and_a_factory_without_arguments(tmp_path):
    """``mymodels.py`` in the directory the console script runs in is found (as ``python -m`` finds it), and
    ``def make(): return Net()`` — the sizes fixed in the user's code — is called without arguments."""
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"
        "def sized(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
        "def wrong():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))\n")
    for factory in ("make", "sized"):
        r = tricklab("train", *FAST, f"model.python=mymodels:{factory}", "--json", "--quiet", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert last_json(r.stdout)["status"] == "completed"
    r = tricklab("train", *FAST, "model.python=mymodels:wrong", "--json", cwd=tmp_path)
    assert r.returncode == 2 and "model.python" in last_json(r.stdout)["error"]["field"]   # 3 outputs for 10
    r = tricklab("train", *FAST, "model.python=nothere:make", "--json", cwd=tmp_path)
    assert r.returncode == 2 and "current directory" in last_json(r.stdout)["error"]["message"]
