"""The LR range test on a recipe (``tricklab.train.lr_search``) and ``tricklab lr-find``."""

from __future__ import annotations

import json

import pytest

from tests.conftest import last_json, run_cli
from tricklab.recipe import load_recipe
from tricklab.train.lr_search import LR_FIND_JSON, LR_FIND_PNG, find_lr, write_lr_find
from tricklab.train.run import build_recipe_model, prepare_data

TINY = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16"]


@pytest.fixture(scope="module")
def tiny():
    recipe = load_recipe(None, TINY)
    return recipe, prepare_data(recipe)


def test_the_range_test_is_seeded_and_trains_nothing(tiny):
    recipe, splits = tiny
    first = find_lr(recipe, splits, num_steps=40)
    again = find_lr(recipe, splits, num_steps=40)
    assert first == again                                   # same seed: same model, batches, curve, suggestion
    assert len(first.lrs) <= 40 and first.lrs[0] == pytest.approx(1e-7)
    assert 1e-7 <= first.suggestion <= 10.0
    other = find_lr(recipe.model_copy(update={"seed": 1}), splits, num_steps=40)
    assert other.raw_losses != first.raw_losses             # another seed: other weights and batches
    # the model a run builds afterwards is the untouched initial one (the test restores what it used)
    a, b = build_recipe_model(recipe, splits, recipe.seed), build_recipe_model(recipe, splits, recipe.seed)
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters()))


def test_plot_marks_the_suggestion_and_files_are_written(tiny, tmp_path):
    recipe, splits = tiny
    result = find_lr(recipe, splits, num_steps=30)
    fig = result.plot()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    verticals = [line for line in ax.lines if len(set(line.get_xdata())) == 1]
    assert any(line.get_xdata()[0] == pytest.approx(result.suggestion) for line in verticals)
    payload = write_lr_find(result, tmp_path / "out")
    stored = json.loads((tmp_path / "out" / LR_FIND_JSON).read_text())
    assert stored == json.loads(json.dumps(payload)) and stored["suggestion"] == result.suggestion
    assert (tmp_path / "out" / LR_FIND_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_find_command(tmp_path):
    out = tmp_path / "lr"
    done = run_cli("lr-find", *TINY, "--steps", "30", "--out", str(out), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = last_json(done.stdout)
    assert payload["png"] == f"{out}/{LR_FIND_PNG}" and (out / LR_FIND_PNG).is_file()
    assert payload["suggestion"] == json.loads((out / LR_FIND_JSON).read_text())["suggestion"]
    for bad, field in ((["--steps", "1"], "--steps"), (["--lr-min", "1", "--lr-max", "0.5"], "--lr-min/--lr-max")):
        refused = run_cli("lr-find", *TINY, *bad, "--json", cwd=tmp_path)
        assert refused.returncode == 2 and last_json(refused.stdout)["error"]["field"] == field
