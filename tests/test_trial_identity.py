"""Trial identity (docs/RELIABILITY.md rows 22-23): a stored result always belongs to its recipe.

A trial is the hash of its fully resolved recipe (seed included). The hash ends its run directory's name and
is in its store row; a directory holding anything else is never resumed. The property test builds grids whose
arm names collide once sanitised or cut (long keys, unicode, separators, arms that differ only past character
80) and checks that trials → directories is one-to-one and inside the runs root; the end-to-end tests train
real studies and check that every stored result's recipe is its trial's recipe — also after the spec changed
and the study is run again under a fresh store with the same runs directory, on every executor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import last_json, run_cli
from tricklab.recipe import recipe_to_dict
from tricklab.recipe.identity import recipe_differences, recipe_hash, with_absolute_paths
from tricklab.store import Store
from tricklab.study import study_from_dict
from tricklab.study.executors import TrialTask, claim_run_dir
from tricklab.study.runner import run_study, trial_tasks

BASE = {"data": {"name": "synthetic", "batch_size": 64, "size": 600}, "model": {"name": "mlp", "depth": 1, "width": 8},
        "epochs": 1}

# Labels that a directory name cannot keep apart: separators, unicode, dots, case, length
ALIKE = ["a/b", "a_b", "a b", "a:b", "a\\b", "..", ".", "é", "ü", "漢字", "a" * 79 + "x", "a" * 79 + "y",
         "a" * 200 + "1", "a" * 200 + "2", "A", "a", "-", "_", "=", "a.b", "a..b"]


def _label_sets(labels: list[str], key: str, values: list[float]) -> dict[str, dict[str, float]]:
    return {label: {key: v} for label, v in zip(labels, values)}


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ALIKE) | st.text(min_size=1, max_size=120), min_size=2, max_size=6, unique=True),
       st.lists(st.sampled_from(ALIKE) | st.text(min_size=1, max_size=120), min_size=1, max_size=4, unique=True),
       st.integers(1, 3))
def test_trials_map_one_to_one_onto_directories_inside_the_root(tmp_path_factory, lr_labels, drop_labels, seeds):
    labels = [x for x in lr_labels if x.strip()]
    drops = [x for x in drop_labels if x.strip()]
    if len(labels) < 2 or not drops:
        return
    factors = {"learning rate " * 6: _label_sets(labels, "optimizer.lr", [0.1 / (i + 1) for i in range(len(labels))]),
               "dropout": _label_sets(drops, "model.dropout", [0.1 * i for i in range(len(drops))])}
    try:
        spec = study_from_dict({"name": "grid", "base": BASE, "factors": factors, "seeds": seeds})
    except Exception as err:  # noqa: BLE001 - labels the spec refuses (two equal after stripping, ...) are fine
        assert type(err).__name__ == "InputError", err
        return
    root = tmp_path_factory.mktemp("runs").resolve()
    tasks = trial_tasks(spec, root, spec.trials())
    dirs = [Path(t.run_dir) for t in tasks]
    assert len(set(dirs)) == len(tasks) == len(spec.arm_names()) * seeds
    for d in dirs:
        assert ".." not in d.parts and d.resolve().is_relative_to(root), d
        assert len(d.name) < 100 and all(len(part) <= 80 for part in d.relative_to(root).parts)
    for task in tasks:
        assert task.trial_hash == recipe_hash(task.recipe)
        assert Path(task.run_dir).name.endswith(task.trial_hash[:12])
    assert len({t.trial_hash for t in tasks}) == len(tasks)


def test_the_hash_is_of_the_resolved_recipe():
    short = {"optimizer": {"lr": 0.1}}
    spec = study_from_dict({"name": "s", "base": short, "factors": {"epochs": [3]}})
    spelled = recipe_to_dict(spec.trial_recipe("epochs=3", 0))
    assert recipe_hash(spelled) == recipe_hash({**short, "name": "s/epochs=3", "epochs": 3, "seed": 0})   # defaults
    assert recipe_hash({**spelled, "seed": 1}) != recipe_hash(spelled)
    assert recipe_differences(spelled, {**spelled, "optimizer": {**spelled["optimizer"], "lr": 0.2}}) == [
        "optimizer.lr: 0.1 → 0.2"]


def _stored_recipes_are_the_trials(store: Path, spec) -> None:
    with Store(store) as db:
        trials = db.trials(spec.name)
        for t in trials:
            assert t["status"] in ("completed", "stopped_early", "diverged"), t
            wanted = with_absolute_paths(recipe_to_dict(spec.trial_recipe(t["arm"], t["seed"])))
            run = db.get_run(t["run_id"])
            assert run is not None and recipe_hash(run["recipe"]) == recipe_hash(wanted) == t["trial_hash"]
            assert recipe_hash(t["result"]["recipe"]) == t["trial_hash"]
            on_disk = yaml.safe_load((Path(run["run_dir"]) / "recipe.yaml").read_text())
            assert recipe_hash(on_disk) == t["trial_hash"]
        assert len({t["run_id"] for t in trials}) == len(trials)
        assert len({t["result"]["run_dir"] for t in trials}) == len(trials)


def _grid(name: str, lr: float, **base) -> dict:
    """A 2×2 grid whose factor keys are spelled out, each arm name long and alike once cut at 80 characters (the
    property test above covers large grids without training them)."""
    long = "x" * 90
    return {"name": name, "base": {**BASE, **base}, "seeds": 1, "factors": {
        f"optimizer learning rate {long}": {f"{long}-lr-high": {"optimizer.lr": lr},
                                            f"{long}-lr-low": {"optimizer.lr": lr / 10}},
        "model.dropout": [0.0, 0.2]}}


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "population", "ray"])
def test_a_changed_spec_under_a_fresh_store_never_records_an_old_result(tmp_path, executor):
    """The report's advice after a spec change is a fresh --store; with the same runs directory, the old trial
    directories (same study, same arm names, other recipes) must not be resumed into the new store."""
    if executor == "ray":
        pytest.importorskip("ray")
    runs = tmp_path / "runs"
    old = study_from_dict(_grid("g", 0.1))
    run_study(old, store=tmp_path / "old.sqlite", executor=executor, workers=2, runs_root=runs, progress=False,
              report=False)
    _stored_recipes_are_the_trials(tmp_path / "old.sqlite", old)
    new = study_from_dict(_grid("g", 0.03, epochs=2))
    out = run_study(new, store=tmp_path / "new.sqlite", executor=executor, workers=2, runs_root=runs,
                    progress=False, report=False)
    assert out.trained_now == len(new.trials()) == 4
    _stored_recipes_are_the_trials(tmp_path / "new.sqlite", new)
    with Store(tmp_path / "new.sqlite") as db:
        assert all(t["result"]["epochs"] == 2 for t in db.trials("g"))   # trained now, not the old 1-epoch runs
    # the old directories are intact: 4 + 4 trial directories, none shared
    assert len(list(runs.glob("g/*/seed-*"))) == 8


def test_a_directory_of_another_recipe_is_set_aside_never_resumed(tmp_path):
    """A trial directory that holds another recipe's checkpoint (copied, edited, a hash prefix shared) is renamed
    ``NAME.mismatch-1`` and the trial starts fresh; the same trial's own directory is resumed."""
    spec = study_from_dict({"name": "s", "base": BASE, "factors": {"model.dropout": [0.0, 0.2]}, "seeds": 1})
    first = run_study(spec, store=tmp_path / "a.sqlite", workers=1, runs_root=tmp_path / "runs", progress=False,
                      report=False)
    a, b = trial_tasks(spec, (tmp_path / "runs").resolve(), spec.trials())
    assert claim_run_dir(a) and claim_run_dir(b)   # each its own: resumable
    stranger = TrialTask(b.arm, b.seed, a.recipe, b.run_dir, recipe_hash(a.recipe))   # b's directory, a's recipe
    assert claim_run_dir(stranger) is False
    assert not Path(b.run_dir).exists() and Path(b.run_dir + ".mismatch-1", "recipe.yaml").is_file()
    assert first.counts["trials_completed"] == 2


def test_resume_refuses_a_recipe_edited_after_the_checkpoint_naming_the_keys(tmp_path):
    argv = ["train", "--set", "data.name=synthetic", "--set", "data.size=600", "--set", "model.name=mlp",
            "--set", "model.depth=1", "--set", "model.width=8", "--set", "epochs=1", "--json", "--store", "none"]
    done = run_cli(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = Path(last_json(done.stdout)["run_dir"])
    if not run_dir.is_absolute():
        run_dir = tmp_path / run_dir
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe["optimizer"]["lr"] = 0.5
    recipe["model"]["width"] = 16
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    again = run_cli("train", "--resume", str(run_dir), "--store", "none", cwd=tmp_path)
    assert again.returncode == 2, again.stderr
    assert again.stderr.startswith("error: --resume: ") and "Traceback" not in again.stderr
    assert "model.width: 8 → 16" in again.stderr and "optimizer.lr" in again.stderr


def test_resume_from_another_directory_uses_the_recorded_data_file_and_refuses_a_changed_one(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.normal(size=(300, 6)).astype("float32"), y=rng.integers(0, 3, 300))
    argv = ["train", "--set", "data.name=npz", "--set", "data.path=d.npz", "--set", "model.name=mlp",
            "--set", "model.depth=1", "--set", "model.width=8", "--set", "epochs=1", "--json", "--store", "none"]
    done = run_cli(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = (tmp_path / last_json(done.stdout)["run_dir"]).resolve()
    recorded = yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["path"]
    assert recorded == str(data)   # absolute
    identity = json.loads((run_dir / "identity.json").read_text())
    assert identity["data"]["sha256"] and identity["data"]["path"] == str(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    same = run_cli("train", "--resume", str(run_dir), "--store", "none", "--json", cwd=elsewhere)
    assert same.returncode == 0, same.stderr   # the relative path was recorded as absolute: found from anywhere
    assert last_json(same.stdout)["test_accuracy"] == last_json(done.stdout)["test_accuracy"]
    np.savez(data, x=rng.normal(size=(300, 6)).astype("float32"), y=rng.integers(0, 3, 300))
    again = run_cli("train", "--resume", str(run_dir), "--store", "none", cwd=elsewhere)
    assert again.returncode == 2 and again.stderr.startswith("error: --resume: "), again.stderr
    assert str(data) in again.stderr and "changed" in again.stderr


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
