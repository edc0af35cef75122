"""The LR range test on a recipe (``tricklab.train.lr_search``) and ``tricklab lr-find``."""

from __future__ import annotations

import json

import pytest

from tests.conftest import last_json, run_cli
from tricklab.recipe import load_recipe
from tricklab.train.lr_search import LR_FIND_JSON, LR_FIND_PNG, find_lr, write_lr_find
from tricklab.train.run import build_recipe_model, build_recipe_optimizer, prepare_data

TINY = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16"]
BUILD = (build_recipe_model, build_recipe_optimizer)


@pytest.fixture(scope="module")
def tiny():
    recipe = load_recipe(None, TINY)
    return recipe, prepare_data(recipe)


def test_the_range_test_is_seeded_and_trains_nothing(tiny):
    recipe, splits = tiny
    first = find_lr(recipe, splits, *BUILD, num_steps=40)
    again = find_lr(recipe, splits, *BUILD, num_steps=40)
    assert first == again                                   # same seed: same model, batches, curve, suggestion
    assert len(first.lrs) <= 40 and first.lrs[0] == pytest.approx(1e-7)
    assert 1e-7 <= first.suggestion <= 10.0
    other = find_lr(recipe.model_copy(update={"seed": 1}), splits, *BUILD, num_steps=40)
    assert other.raw_losses != first.raw_losses             # another seed: other weights and batches
    # the model a run builds afterwards is the untouched initial one (the test restores what it used)
    a, b = build_recipe_model(recipe, splits, recipe.seed), build_recipe_model(recipe, splits, recipe.seed)
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters()))


def test_plot_marks_the_suggestion_and_files_are_written(tiny, tmp_path):
    recipe, splits = tiny
    result = find_lr(recipe, splits, *BUILD, num_steps=30)
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


# -- optimizer.lr: auto -----------------------------------------------------------------------------------------
def test_lr_auto_is_a_recipe_value_and_other_words_are_refused():
    from tricklab.errors import InputError

    assert load_recipe(None, ["optimizer.lr=auto"]).optimizer.lr == "auto"
    assert load_recipe(None, ["optimizer.lr=0.02"]).optimizer.lr == 0.02
    with pytest.raises(InputError, match="optimizer.lr.*or auto"):
        load_recipe(None, ["optimizer.lr=fast"])
    with pytest.raises(InputError, match="greater than 0"):
        load_recipe(None, ["optimizer.lr=-1"])


def test_a_run_with_lr_auto_trains_with_the_suggestion_and_keeps_its_recipe(tmp_path, tiny):
    from tricklab.population.support import population_unsupported
    from tricklab.train import train

    recipe, splits = tiny
    auto = load_recipe(None, [*TINY, "optimizer.lr=auto", "epochs=2"])
    result = train(auto, runs_root=tmp_path)
    expected = find_lr(auto, splits, *BUILD).suggestion
    run = tmp_path / result.run_dir.split("/")[-1]
    assert result.lr_found == expected and result.recipe["optimizer"]["lr"] == "auto"
    assert json.loads((run / "result.json").read_text())["lr_found"] == expected
    assert "lr: auto" in (run / "recipe.yaml").read_text()                # its identity: the recipe as written
    assert f"lr: auto  # the range test chose {expected:.4g}" in (run / "recipe.yaml").read_text()  # and the η
    assert load_recipe(run / "recipe.yaml").optimizer.lr == "auto"
    assert json.loads((run / LR_FIND_JSON).read_text())["suggestion"] == expected and (run / LR_FIND_PNG).is_file()
    # a resumed (here: extended) run trains on with the η its first start chose, read from lr_find.json
    saved = json.loads((run / LR_FIND_JSON).read_text())
    (run / LR_FIND_JSON).write_text(json.dumps({**saved, "suggestion": 0.0123}))
    assert train(resume=run, overrides=["epochs=3"]).lr_found == 0.0123
    assert "# the range test chose 0.0123" in (run / "recipe.yaml").read_text()
    assert population_unsupported(auto) == "optimizer.lr"                   # each trial runs its own range test
    # the run report shows the range test it ran first (redrawn from lr_find.json), or says the file is damaged
    from tricklab.report import write_run_report

    page = write_run_report(run, tmp_path / "report.html").read_text()
    section = page[page.index('<section id="lr-find">'):]
    assert "η = 0.0123" in section and "data:image/png;base64," in section[:section.index("</section>")]
    (run / LR_FIND_JSON).write_text(json.dumps({"suggestion": "fast"}))
    assert "lr_find.json is damaged" in write_run_report(run, tmp_path / "report.html").read_text()


def test_a_study_with_lr_auto_stores_every_trial(tmp_path):
    from tricklab.study import study_from_dict
    from tricklab.study.runner import run_study

    spec = study_from_dict({"name": "auto", "base": {"data": {"name": "synthetic"}, "model": {
        "name": "mlp", "depth": 1, "width": 16}, "epochs": 2, "optimizer": {"lr": "auto"}},
        "factors": {"model.dropout": [0.0, 0.3]}, "seeds": 1})
    out = run_study(spec, store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)
    assert out.counts == {"trials_total": 2, "trials_completed": 2, "trials_failed": 0}
    assert all(t["result"]["lr_found"] > 0 and t["result"]["recipe"]["optimizer"]["lr"] == "auto"
               for t in out.trials)
