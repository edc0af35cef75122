"""``checkpoint: {monitor, top_k}``: the best epochs' weights by a metric, beside the run's latest checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import last_json, run_cli
from tricklab.recipe import load_recipe
from tricklab.train import train
from tricklab.train.best_checkpoints import BEST_DIR, INDEX_FILE, best_weights
from tricklab.train.run import build_recipe_model, prepare_data
from tricklab.train.trainer import evaluate

TINY = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16", "epochs=5",
        "schedule.name=constant", "optimizer.lr=0.05"]


@pytest.mark.parametrize("monitor", ["val_accuracy", "val_loss"])
def test_the_top_k_epochs_by_the_monitor_are_kept_and_load_back(tmp_path, monitor):
    result = train(None, overrides=[*TINY, f"checkpoint.monitor={monitor}", "checkpoint.top_k=2"],
                   runs_root=tmp_path)
    best = tmp_path / result.run_dir.split("/")[-1] / BEST_DIR
    index = json.loads((best / INDEX_FILE).read_text())
    values = [h[monitor] for h in result.history]
    higher = monitor.endswith("accuracy")
    order = sorted(range(len(values)), key=lambda i: (-values[i] if higher else values[i], i))[:2]
    assert [k["epoch"] for k in index["kept"]] == [i + 1 for i in order]           # best first, earlier on a tie
    assert sorted(p.name for p in best.glob("*.safetensors")) == sorted(k["file"] for k in index["kept"])
    # the best epoch's weights, loaded into a fresh model, give that epoch's validation numbers again
    recipe = load_recipe(None, TINY)
    splits = prepare_data(recipe)
    model = build_recipe_model(recipe, splits, recipe.seed)
    model.load_state_dict(best_weights(best.parent))
    metrics = evaluate(model, splits.x_val, splits.y_val)
    assert metrics["accuracy" if higher else "loss"] == pytest.approx(index["kept"][0]["value"], rel=1e-5)


def test_no_monitor_keeps_nothing_and_a_bad_monitor_is_refused(tmp_path):
    result = train(None, overrides=TINY, runs_root=tmp_path)
    assert not (tmp_path / result.run_dir.split("/")[-1] / BEST_DIR).exists()
    done = run_cli("train", *TINY, "checkpoint.monitor=val_acc", "--json", "--store", "none", cwd=tmp_path)
    assert done.returncode == 2
    error = last_json(done.stdout)["error"]
    assert error["field"] == "checkpoint.monitor" and "val_accuracy" in error["message"]


def test_a_resumed_run_ranks_on_against_what_it_kept(tmp_path):
    first = train(None, overrides=[*TINY, "epochs=2", "checkpoint.monitor=val_loss", "checkpoint.top_k=3"],
                  runs_root=tmp_path)
    run = tmp_path / first.run_dir.split("/")[-1]
    more = train(resume=run, overrides=["epochs=5"])
    index = json.loads((run / BEST_DIR / INDEX_FILE).read_text())
    losses = {h["epoch"]: h["val_loss"] for h in more.history}
    assert len(index["kept"]) == 3 and {k["epoch"] for k in index["kept"]} == set(
        sorted(losses, key=lambda e: (losses[e], e))[:3])
    assert all(torch.isfinite(t).all() for t in best_weights(run).values())
