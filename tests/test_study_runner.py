"""Studies end to end: resume without re-running, a real SIGKILL of the driver, worker crashes, Ray, bad specs."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.conftest import kill_study_when, last_json, run_cli
from tricklab.store import Store
from tricklab.study import study_from_dict
from tricklab.study.executors import LocalExecutor, TrialOutcome, TrialTask
from tricklab.study.runner import run_study

TINY = {
    "name": "tiny",
    "base": {"data": {"name": "synthetic", "batch_size": 64}, "model": {"name": "mlp", "depth": 1, "width": 16},
             "epochs": 2},
    "factors": {"model.dropout": [0.0, 0.3]},
    "seeds": 2,
    "metric": "test_accuracy",
}


def _spec(**changes):
    return study_from_dict({**TINY, **changes})


def test_rerun_completes_what_is_missing_and_redoes_nothing(tmp_path):
    spec = _spec()
    first = run_study(spec, store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)
    assert first.counts == {"trials_total": 4, "trials_completed": 4, "trials_failed": 0}
    assert first.trained_now == 4
    finished = {(t["arm"], t["seed"]): t["finished"] for t in first.trials}
    again = run_study(spec, store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)
    assert again.trained_now == 0
    assert {(t["arm"], t["seed"]): t["finished"] for t in again.trials} == finished
    # one more seed: only its two trials run
    more = run_study(_spec(seeds=[0, 1, 2]), store=tmp_path / "s2.sqlite", workers=1, progress=False, report=False)
    assert more.trained_now == 6
    out = again.to_json()
    assert {a["name"] for a in out["arms"]} == {"model.dropout=0.0", "model.dropout=0.3"}
    assert all(a["n"] == 2 for a in out["arms"])


def test_a_changed_spec_under_the_same_name_is_refused(tmp_path):
    from tricklab.errors import InputError

    run_study(_spec(seeds=1), store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)
    with pytest.raises(InputError, match="different spec"):
        run_study(_spec(seeds=2), store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)


def test_a_crashing_worker_fails_only_its_trial(tmp_path):
    """A worker process that dies mid-trial (os._exit) marks exactly that trial failed; the others finish."""
    tasks = [TrialTask("a", 0, {}, str(tmp_path / "a")), TrialTask("b", 0, {}, str(tmp_path / "b")),
             TrialTask("c", 0, {}, str(tmp_path / "c"))]
    outcomes: list[TrialOutcome] = []
    LocalExecutor(workers=2, trial_fn=_die_on_b).run(tasks, lambda t: None, outcomes.append)
    by_arm = {o.arm: o for o in outcomes}
    assert set(by_arm) == {"a", "b", "c"}
    assert by_arm["b"].status == "failed" and "died" in by_arm["b"].error
    assert by_arm["a"].status == by_arm["c"].status == "completed"


def _die_on_b(task):  # module level: the spawned worker imports it by name
    if task.arm == "b":
        os._exit(9)
    return TrialOutcome(task.arm, task.seed, "completed", {"test_accuracy": 1.0})


TRAIN_MODE_FAILURE = """
import torch
from torch import nn


class Net(nn.Module):   # passes the dry run (eval mode) that refuses broken models before work; fails in training
    def __init__(self, n_in, n_out):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x):
        if self.training:
            raise RuntimeError("the user's model fails in training mode")
        return self.fc(x.flatten(1))


def make(input_shape, num_classes):
    return Net(int(torch.tensor(input_shape).prod()), num_classes)
"""


def test_failed_trials_are_recorded_and_retried(tmp_path, monkeypatch, capsys):
    (tmp_path / "fails_in_training.py").write_text(TRAIN_MODE_FAILURE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _spec(base={**TINY["base"], "model": {"python": "fails_in_training:make"}}, seeds=1)
    out = run_study(spec, store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)
    assert out.counts["trials_failed"] == 2
    assert all("fails in training mode" in t["error"] for t in out.trials)
    for _ in range(3):
        out = run_study(spec, store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)
    assert all(t["attempts"] == spec.max_retries + 1 for t in out.trials)  # retried up to the limit, then left
    # every trial failed: the command exits 1 with one line per kind of failure
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**TINY, "base": spec.base, "seeds": 1}))
    from tricklab.cli.main import main

    assert main(["study", str(tmp_path / "s.yaml"), "--store", str(tmp_path / "t.sqlite"), "--quiet",
                 "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "every trial failed (2)" in err and "2 × RuntimeError: the user's model fails in training mode" in err


def test_a_missing_data_file_is_refused_before_any_trial_starts(tmp_path):
    from tricklab.errors import InputError

    spec = _spec(base={**TINY["base"], "data": {"name": "npz", "path": str(tmp_path / "missing.npz")}}, seeds=1)
    with pytest.raises(InputError, match="missing.npz.*checked before any trial started") as err:
        run_study(spec, store=tmp_path / "s.sqlite", workers=1, progress=False, report=False)
    assert err.value.field == "data.path"
    assert list(tmp_path.iterdir()) == []   # no store, no lock, no run directory


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"factors": {"model.dropuot": [0.1]}}, "factors"),
        ({"seeds": []}, "seeds"),
        ({"baseline": {"model.dropout": 0.9}}, "baseline"),
    ],
)
def test_malformed_spec_exits_2_naming_the_field(tmp_path, change, field):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump({**TINY, **change}))
    r = run_cli("study", str(p), "--store", str(tmp_path / "s.sqlite"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert field in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_sigkill_of_the_driver_then_rerun(tmp_path):
    """Kill the driver mid-study (real SIGKILL); the same command again ends with exactly arms × seeds
    completed trials, no duplicates, no finished trial trained again, and an intact store."""
    spec = {**TINY, "name": "killme", "seeds": 3, "base": {**TINY["base"], "epochs": 4}}
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(spec))
    store = tmp_path / "s.sqlite"
    # kill the driver and its workers at once, when some (not all) trials are finished
    done_before = kill_study_when(["study", str(p), "--store", str(store), "--workers", "2", "--quiet", "--no-report"],
                                  tmp_path, store, completed=2)
    assert 2 <= done_before < 6, done_before
    with Store(store) as db:
        assert db.integrity_ok()
        finished_at = {(t["arm"], t["seed"]): t["finished"] for t in db.trials("killme") if t["status"] == "completed"}

    r = run_cli("study", str(p), "--store", str(store), "--workers", "2", "--json", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["trials_total"] == out["trials_completed"] == 6 and out["trials_failed"] == 0
    assert out["trained_now"] == 6 - len(finished_at)
    with Store(store) as db:
        assert db.integrity_ok()
        trials = db.trials("killme")
        assert len(trials) == len({(t["arm"], t["seed"]) for t in trials}) == 6
        for t in trials:  # nothing finished before the kill was trained again
            if (t["arm"], t["seed"]) in finished_at:
                assert t["finished"] == finished_at[(t["arm"], t["seed"])] and t["attempts"] == 1
        runs = db.runs("killme")
        assert len(runs) == 6


@pytest.mark.slow
def test_ray_executor_fills_the_same_trial_set(tmp_path):
    pytest.importorskip("ray")
    spec = _spec(name="rayed")
    local = run_study(spec, store=tmp_path / "local.sqlite", workers=2, progress=False, report=False)
    rayed = run_study(spec, store=tmp_path / "ray.sqlite", executor="ray", workers=2, progress=False, report=False)
    key = lambda out: sorted((t["arm"], t["seed"], t["status"]) for t in out.trials)  # noqa: E731
    assert key(local) == key(rayed) and len(rayed.trials) == 4
    assert all(t["executor"] == "ray" for t in rayed.trials)
    # the same recipes and seeds give the same results in a Ray worker as in a local one
    acc = lambda out: {(t["arm"], t["seed"]): t["result"]["test_accuracy"] for t in out.trials}  # noqa: E731
    assert acc(local) == acc(rayed)
    assert json.dumps(rayed.to_json())
