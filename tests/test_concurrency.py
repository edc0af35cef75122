"""Concurrency (docs/RELIABILITY.md): two processes on one study, one run directory, one store.

- Two ``tricklab study`` drivers of the same study and store: the second is refused at once with a message naming
  the study, the store and the first driver's pid; run again after the first ends, it trains nothing.
- Two processes on one run directory (a resumed run whose first process still lives — e.g. a study worker left
  by a killed driver): the second waits for the first, then continues from its last checkpoint.
- Two processes writing one store (different studies): every write lands; SQLite serialises them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import ROOT, count_trials, last_json
from tricklab.cli.main import main
from tricklab.errors import InputError
from tricklab.fsutil import LockBusy, exclusive_lock
from tricklab.store import Store
from tricklab.study import study_from_dict
from tricklab.study.runner import run_study, study_lock_path
from tricklab.train import train
from tricklab.train.run import LOCK_FILE

SPEC = {"name": "shared", "base": {"data": {"name": "synthetic"}, "model": {"name": "mlp", "depth": 1, "width": 16},
                                   "epochs": 3},
        "factors": {"model.dropout": [0.0, 0.3]}, "seeds": 1}


@pytest.mark.slow
def test_a_second_driver_of_the_same_study_is_refused_and_nothing_runs_twice(tmp_path, capsys):
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    store = tmp_path / "s.sqlite"
    args = ["study", str(spec), "--store", str(store), "--workers", "1", "--no-report", "--quiet", "--json"]
    first = subprocess.Popen([sys.executable, "-m", "tricklab", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 240
        while count_trials(store, "running") == 0:  # the first driver holds the study and trains
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "timeout"
            time.sleep(0.05)
        assert main(args) == 2  # a second driver, in this process
        err = capsys.readouterr().err
        assert err.startswith("error: study: study 'shared' in ") and str(store) in err
        assert f"pid {first.pid} on {socket.gethostname()}" in err and "Traceback" not in err
        out, err_first = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err_first
    assert last_json(out)["trials_completed"] == 2

    assert main(args) == 0  # once the first has ended: nothing left to do, nothing trained again
    again = last_json(capsys.readouterr().out)
    assert again["trained_now"] == 0 and again["trials_completed"] == 2
    with Store(store) as db:
        trials = db.trials("shared")
        assert len(trials) == 2 and all(t["attempts"] == 1 and t["status"] == "completed" for t in trials)
        assert len(db.runs("shared")) == 2


def test_the_study_lock_is_per_study_and_store_and_dies_with_its_holder(tmp_path):
    store = tmp_path / "s.sqlite"
    spec = study_from_dict(SPEC)
    with exclusive_lock(study_lock_path(store, "shared"), wait=False):
        with pytest.raises(InputError) as err:
            run_study(spec, store=store, workers=1, progress=False, report=False)
        assert err.value.field == "study" and f"pid {os.getpid()}" in str(err.value)
        assert not store.exists()  # refused before the store was even opened
        # another study, or the same study in another store, is another lock
        for other in (study_lock_path(store, "other"), study_lock_path(tmp_path / "t.sqlite", "shared")):
            with exclusive_lock(other, wait=False):
                pass
    # a holder that dies (SIGKILL included) releases it: the OS drops the lock with the process
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(study_lock_path(store, "shared")), "60"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(LockBusy) as busy:
        with exclusive_lock(study_lock_path(store, "shared"), wait=False):
            pass
    assert f"pid {holder.pid}" in busy.value.holder
    holder.kill()
    holder.wait()
    with exclusive_lock(study_lock_path(store, "shared"), wait=False):
        pass


# A process that holds a lock file as ``tricklab.fsutil.exclusive_lock`` does (flock + "pid N on HOST"), without
# importing tricklab (and torch): argv = path, seconds to hold it.
_HOLD = """
import fcntl, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_two_processes_on_one_run_directory_take_turns(tmp_path, capsys):
    """While another process holds a run directory, ``--resume`` of it waits (saying so), then continues from the
    last checkpoint: the result is the one a single process gets."""
    run = tmp_path / "run"
    expected = train(None, overrides=["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16",
                                      "epochs=2"], run_dir=run).to_json()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run / LOCK_FILE), "1.5"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        assert main(["train", "--resume", str(run), "--json", "--quiet", "--store", "none"]) == 0
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    captured = capsys.readouterr()
    assert f"{run} is in use by pid {holder.pid}" in captured.err and "waiting for it to end" in captured.err
    assert waited >= 1.0
    got = last_json(captured.out)
    assert got["test_loss"] == expected["test_loss"] and got["epochs"] == expected["epochs"]


def _write_trials(path: str, study: str, n: int) -> None:
    with Store(path) as db:
        db.ensure_study(study, "h", {}, [("a", s) for s in range(n)])
        for s in range(n):
            db.start_trial(study, "a", s, "test")
            db.finish_trial(study, "a", s, status="completed", run_id=f"{study}/{s}", result={"v": s},
                            metrics=[(k, 1, "loss", k / 7) for k in range(30)])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    """Two processes, two studies, one store, 150 trials each written at the same time: all 300 land."""
    store = str(tmp_path / "s.sqlite")
    Store(store).close()
    ctx = multiprocessing.get_context("fork")  # the children use sqlite only, never torch
    procs = [ctx.Process(target=_write_trials, args=(store, name, 150)) for name in ("left", "right")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Store(store) as db:
        assert db.integrity_ok()
        for name in ("left", "right"):
            trials = db.trials(name)
            assert len(trials) == 150 and all(t["status"] == "completed" for t in trials)
            assert len(db.runs(name)) == 150
            assert json.dumps(db.metrics(f"{name}/149")["loss"][-1]) == json.dumps([29, 29 / 7])
