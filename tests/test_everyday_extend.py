"""Runs that go on (issue 18 item 5): ``tricklab train --resume RUN --set epochs=N`` extends a finished run, its
schedule planned anew for N epochs and N recorded; a finished study run again says that all its trials are done
and how to train them again (``--rerun``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import last_json
from tests.test_everyday_errors import FAST, error_object, tricklab
from tricklab.recipe import load_recipe
from tricklab.recipe.identity import recipe_hash

SHORT = [*FAST[:-1], "epochs=2"]


def _train(tmp_path: Path, *args: str) -> dict:
    r = tricklab("train", *args, "--json", "--quiet", "--store", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return last_json(r.stdout)


@pytest.mark.slow
def test_a_finished_run_is_extended_with_its_schedule_planned_anew(tmp_path):
    first = _train(tmp_path, *SHORT, "schedule.name=cosine")
    run = tmp_path / first["run_dir"]
    out = _train(tmp_path, "--resume", first["run_dir"], "--set", "epochs=4")
    assert out["run_dir"] == first["run_dir"] and out["status"] == "completed"
    assert out["epochs"] == 4 and [h["epoch"] for h in out["history"]] == [1, 2, 3, 4]
    assert out["history"][:2] == first["history"][:2]              # the first two epochs are the ones trained
    recipe = load_recipe(run / "recipe.yaml")
    assert recipe.epochs == 4
    identity = json.loads((run / "identity.json").read_text())
    assert identity["recipe"]["epochs"] == 4 and identity["recipe_hash"] == recipe_hash(recipe)
    # the LR of epochs 3-4 follows a cosine over 4 epochs: it ends at final_lr (0) at the last step
    from tricklab.train.run import prepare_data, recipe_schedule

    schedule = recipe_schedule(recipe, len(prepare_data(recipe).x_train))
    for h in out["history"][2:]:
        assert h["lr"] == pytest.approx(schedule(int(h["step"]) - 1), rel=1e-12, abs=1e-15)
    assert out["history"][2]["lr"] > 1e-4     # the 2-epoch plan had reached final_lr = 0 and stayed there
    # resumed again without --set: nothing left to do, the same result
    again = _train(tmp_path, "--resume", first["run_dir"])
    assert again["epochs"] == 4 and again["test_accuracy"] == out["test_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_an_extension_at_a_constant_rate_is_the_longer_run(tmp_path, seed):
    """With a schedule that does not depend on the length, 2 epochs extended to 4 are exactly a 4-epoch run."""
    constant = [*SHORT, "schedule.name=constant", f"seed={seed}"]
    short = _train(tmp_path, *constant)
    extended = _train(tmp_path, "--resume", short["run_dir"], "epochs=4")      # bare key=value, as with --set
    straight = _train(tmp_path, *constant[:-2], "epochs=4", "schedule.name=constant", f"seed={seed}")
    assert [h["train_loss"] for h in extended["history"]] == [h["train_loss"] for h in straight["history"]]
    assert extended["test_accuracy"] == straight["test_accuracy"]


def test_what_an_extension_refuses(tmp_path, one_thread):
    from tricklab.train import train

    run = "run"
    train(None, overrides=SHORT, run_dir=tmp_path / run)
    before = (tmp_path / run / "recipe.yaml").read_text()
    for args, field, words in [
        (["--set", "optimizer.lr=0.1"], "--set optimizer.lr", "only epochs may be raised"),
        (["epochs=1"], "--set epochs", "cannot be shortened"),
        (["epochs=0"], "epochs", "greater than or equal to 1"),
    ]:
        r = tricklab("train", "--resume", run, *args, "--json", "--store", "none", cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        err = error_object(r)
        assert err["field"] == field and words in err["message"], err
    assert (tmp_path / run / "recipe.yaml").read_text() == before      # refused before anything was written
    assert yaml.safe_load(before)["epochs"] == 2


SPEC = {"name": "tiny", "seeds": 1, "metric": "test_accuracy", "factors": {"model.dropout": [0.0, 0.3]},
        "base": {"data": {"name": "digits"}, "model": {"name": "mlp", "depth": 1, "width": 16}, "epochs": 1}}


@pytest.mark.slow
def test_a_finished_study_says_so_and_reruns_on_request(tmp_path):
    (tmp_path / "s.yaml").write_text(json.dumps(SPEC))
    first = tricklab("study", "s.yaml", "--json", "--quiet", "--no-report", "--workers", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert last_json(first.stdout)["trained_now"] == 2 and "note" not in last_json(first.stdout)

    again = tricklab("study", "s.yaml", "--quiet", "--no-report", "--executor", "population", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    note = again.stderr.strip().splitlines()[-1]
    assert note.startswith("note: all 2 trials are done") and "by the local executor" in note
    assert "with the population executor" in note and "--rerun" in note

    rerun = tricklab("study", "s.yaml", "--json", "--quiet", "--no-report", "--executor", "population", "--rerun",
                     cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    out = last_json(rerun.stdout)
    assert out["trained_now"] == 2 and out["trials_completed"] == 2 and "note" not in out
    kept = sorted(p.name for p in (tmp_path / "runs" / "tiny").rglob("*.rerun-1"))
    assert len(kept) == 2                                  # the first runs are kept beside the new ones
    from tricklab.store import Store

    with Store(tmp_path / "tricklab.sqlite") as db:
        trials = db.trials("tiny")
        assert {t["executor"] for t in trials} == {"population"} and all(t["attempts"] == 1 for t in trials)
        assert len(db.runs("tiny")) == 2
