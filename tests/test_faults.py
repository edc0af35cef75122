"""Injected faults (docs/RELIABILITY.md): killed processes, damaged checkpoints and stores, a full disk, NaN/Inf.

Promises under test: a SIGKILL loses nothing (``--resume`` ends exactly where an uninterrupted run ends); a
damaged checkpoint falls back to the previous one; a damaged store is refused with an error naming the file,
never read as fewer results; a full disk gives a clear error and leaves no half-written file; NaN/Inf data is
refused before training with its row indices; an Inf loss is a ``diverged`` result with the doctor's diagnosis.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT, count_trials, last_json, run_cli
from tricklab.cli.main import main
from tricklab.errors import InputError
from tricklab.store import Store
from tricklab.train import train
from tricklab.train.checkpoint import LATEST, PREVIOUS, load_checkpoint, read_checkpoint_file

SMALL = ["data.name=synthetic", "model.name=mlp", "model.depth=2", "model.width=32", "epochs=3",
         "data.batch_size=64", "optimizer.lr=0.01"]


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)


def _same_run(a: dict, b: dict) -> None:
    """Two results of one recipe are the same run: every metric of every epoch, and the final ones."""
    for key in ("status", "test_accuracy", "test_loss", "val_accuracy", "val_loss", "best_epoch", "epochs", "steps"):
        assert a[key] == b[key], key
    strip = lambda history: [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


# -- 1. killed processes ---------------------------------------------------------------------------------------------
def _kill_plan(tmp_path: Path, seed: int = 20240607) -> dict:
    """21 kill points chosen with a fixed seed: 3 at random times early on, 12 at random optimizer steps across all
    epochs, 6 inside checkpoint writes of random epochs (2 each: after the rotation, mid-write, before the rename)."""
    rng = random.Random(seed)
    steps_per_epoch, epochs = 23, 8  # synthetic: 1440 training examples, batches of 64
    total = steps_per_epoch * epochs
    early = [{"kind": "timer", "delay": round(rng.uniform(0.0, 0.15), 3), "step": s} for s in (3, 6, 9)]
    writes = [{"kind": kind, "epoch": epoch, "at": epoch * steps_per_epoch + 0.5}
              for kind, epoch in zip(["rotated", "mid_write", "written"] * 2, rng.sample(range(1, epochs), 6))]
    steps = [{"kind": "step", "step": s, "at": s} for s in rng.sample(range(10, total), 12)]
    later = sorted(writes + steps, key=lambda p: p["at"])  # each point lies beyond the progress the last one kept
    return {
        "recipe_argv": [a for o in ["data.name=synthetic", "model.name=mlp", "model.depth=2", "model.width=32",
                                    "model.dropout=0.1",
                                    f"epochs={epochs}", "data.batch_size=64", "averaging.mode=ema",
                                    "averaging.decay=0.95", "clip.mode=norm", "early_stopping.patience=50"]
                        for a in ("--set", o)],
        "common_argv": ["--json", "--quiet", "--store", str(tmp_path / "store.sqlite")],
        "runs_root": str(tmp_path / "runs"), "baseline_root": str(tmp_path / "baseline"),
        "logs": str(tmp_path / "logs"),
        "points": early + [{k: v for k, v in p.items() if k != "at"} for p in later],
    }


@pytest.mark.slow
def test_sigkill_at_21_points_then_resume_matches_an_uninterrupted_run(tmp_path):
    """SIGKILL ``tricklab train`` 21 times in one run — at random times, at random steps of every epoch, and
    inside checkpoint writes — resuming after each; the end is exactly the uninterrupted run, the store holds
    one completed run with the same series, and no temporary file is left."""
    plan = _kill_plan(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "crash_driver.py"), str(tmp_path / "plan.json")],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    kills = out["kills"]
    assert len(kills) == 21
    assert all(k["exit"] == -signal.SIGKILL for k in kills), [k for k in kills if k["exit"] != -signal.SIGKILL]
    assert all(k["resumed"] for k in kills[4:])  # once a step was reached, every kill hit a resumed run
    epochs_hit = {(k["point"]["step"] - 1) // 23 for k in kills if k["point"]["kind"] == "step"}
    assert len(epochs_hit) >= 5, epochs_hit
    mid_write = [k for k in kills if k["point"]["kind"] in ("mid_write", "written")]
    assert all(any(f.startswith(f".{LATEST}.") and f.endswith(".tmp") for f in k["files"]) for k in mid_write)
    assert all(LATEST not in k["files"] for k in kills if k["point"]["kind"] == "rotated")

    assert out["final_exit"] == 0, out["final_stderr"]
    final, baseline = out["final"], out["baseline"]
    _same_run(final, baseline)
    assert final["status"] == "completed" and final["epochs"] == 8
    run_dir = Path(out["run_dir"])
    assert not list(run_dir.rglob("*.tmp"))
    with Store(tmp_path / "store.sqlite") as db:
        runs = db.runs()
        assert len(runs) == 1 and runs[0]["status"] == "completed"
        series = db.metrics(runs[0]["id"])
        assert [v for _, v in series["val_loss"]] == [h["val_loss"] for h in baseline["history"]]


# -- 2. damaged checkpoints ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    """A finished run of SMALL (its uninterrupted result) — checkpoints of epochs 3 (latest) and 2 (previous)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result = train(None, overrides=SMALL, run_dir=run)
    return run, result.to_json()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "zeroed-middle":
        path.write_bytes(data[:200] + bytes(len(data) - 400) + data[-200:])
    elif how == "a-bare-tensor":
        torch.save(torch.zeros(3), path)
    elif how == "another-programs-dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "zeroed-middle", "a-bare-tensor",
                                 "another-programs-dict"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path, capsys, how):
    """``--resume`` warns, naming the damaged file, continues from the previous checkpoint (epoch 2), retrains
    epoch 3 and ends exactly as the uninterrupted run did."""
    source, expected = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    _damage(run / LATEST, how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--resume", str(run), "--json", "--quiet", "--store", "none"]) == 0
    message = " ".join(str(w.message) for w in caught)
    assert "damaged checkpoint ignored" in message and str(run / LATEST) in message and PREVIOUS in message
    _same_run(last_json(capsys.readouterr().out), expected)
    assert load_checkpoint(run)["epoch"] == 3  # the retrained epoch was saved again ...
    assert read_checkpoint_file(run / PREVIOUS)["epoch"] == 2  # ... without pushing out the good copy
    assert (run / f"{LATEST}.damaged").is_file()  # the damaged file is kept aside, not deleted


def test_every_checkpoint_damaged_is_a_clear_error_naming_each_file(finished_run, tmp_path, capsys):
    source, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    _damage(run / LATEST, "truncated")
    _damage(run / PREVIOUS, "garbage")
    assert main(["train", "--resume", str(run), "--quiet", "--store", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no loadable checkpoint") and "Traceback" not in err
    assert str(run / LATEST) in err and str(run / PREVIOUS) in err


# -- 3. a damaged store ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def intact_store(tmp_path_factory) -> tuple[Path, dict]:
    """A store of one study: 200 finished trials with their runs, metric series and alarms (~140 pages), and
    everything read back from it while intact."""
    path = tmp_path_factory.mktemp("store") / "intact.sqlite"
    trials = [(f"arm{i}", seed) for i in range(20) for seed in range(10)]
    with Store(path) as db:
        db.ensure_study("big", "hash", {"name": "big"}, trials)
        for arm, seed in trials:
            db.finish_trial("big", arm, seed, status="completed", run_id=f"big/{arm}/{seed}", run_name="big",
                            recipe={"pad": "r" * 200}, result={"test_accuracy": seed / 10, "pad": "x" * 300},
                            metrics=[(k, 1, "loss", k / 10) for k in range(20)],
                            alarms=[{"kind": "dead_units", "step": 3, "message": "m"}])
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, nothing in the WAL
    return path, _read_all(path)


def _read_all(path: Path) -> dict:
    with Store(path) as db:
        runs = db.runs("big")
        return {"studies": db.studies(), "trials": db.trials("big"), "runs": runs,
                "metrics": {r["id"]: db.metrics(r["id"]) for r in runs},
                "alarms": {r["id"]: db.alarms(r["id"]) for r in runs}}


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    if how == "truncated":
        del data[len(data) // 2:]
    elif how == "garbage-pages-in-the-middle":
        rng = random.Random(1)
        for page in range(pages // 3, pages // 3 + 3):
            data[page * 4096:(page + 1) * 4096] = rng.randbytes(4096)
    elif how == "every-fifth-page-zeroed":
        for page in range(2, pages, 5):
            data[page * 4096:(page + 1) * 4096] = bytes(4096)
    elif how == "schema-page-garbage":
        data[100:4096] = random.Random(2).randbytes(3996)
    elif how == "header-only":
        del data[100:]
    elif how == "not-sqlite-at-all":
        data[:] = b"tricklab store? no: " * 500
    else:
        raise ValueError(how)
    path.write_bytes(bytes(data))


CORRUPTIONS = ["truncated", "garbage-pages-in-the-middle", "every-fifth-page-zeroed", "schema-page-garbage",
               "header-only", "not-sqlite-at-all"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_damaged_store_is_an_error_naming_the_file_never_fewer_results(intact_store, tmp_path, capsys, how):
    source, expected = intact_store
    path = tmp_path / "damaged.sqlite"
    shutil.copy(source, path)
    _corrupt(path, how)
    try:
        got = _read_all(path)
    except InputError as err:  # refused: the message names the file
        assert err.field == "--store" and str(path) in str(err)
    else:  # or read in full: never a silently shorter answer
        assert got == expected

    # the commands that read a store refuse it whole (they check every page first)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --store: ") and str(path) in err and "Traceback" not in err
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({"name": "big", "base": {"data": {"name": "synthetic"}},
                                    "factors": {"model.dropout": [0.0]}, "seeds": 1}))
    assert main(["study", str(spec), "--store", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --store: ") and str(path) in err
    assert not (tmp_path / "runs").exists(), "nothing is trained on a damaged store"


# -- 3b. a full disk -------------------------------------------------------------------------------------------------
def _fsync_fails_for(monkeypatch, name_part: str, after: int) -> list[str]:
    """Make ``os.fsync`` fail with ENOSPC — as a full disk reports delayed writes — for files whose name holds
    ``name_part``, from the ``after``-th such file on; returns the names it failed for."""
    real = os.fsync
    seen: list[str] = []
    failed: list[str] = []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name_part in name:
            seen.append(name)
            if len(seen) > after:
                failed.append(name)
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file is synced")
def test_a_full_disk_while_checkpointing_is_a_clear_error_and_leaves_nothing_half_written(
        finished_run, tmp_path, monkeypatch, capsys):
    _, expected = finished_run
    failed = _fsync_fails_for(monkeypatch, f".{LATEST}.", after=1)  # epoch 1 saved, epoch 2 hits a full disk
    runs = tmp_path / "runs"
    rc = main(["train", *[a for o in SMALL for a in ("--set", o)], "--runs-dir", str(runs), "--quiet", "--store",
               str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert rc == 1 and len(failed) == 1
    (run,) = runs.iterdir()
    assert err.startswith(f"error: No space left on device ({run / LATEST})"), err
    assert "Traceback" not in err and "bug in tricklab" not in err
    assert not list(run.rglob("*.tmp"))                       # the partial file was removed
    assert load_checkpoint(run)["epoch"] == 1                  # the last good checkpoint is intact
    assert len(json.loads((run / "metrics.json").read_text())) == 2
    with Store(tmp_path / "s.sqlite") as db:
        assert db.integrity_ok() and db.get_run(run.name)["status"] == "running"

    monkeypatch.undo()  # space again: the same run continues and ends as the uninterrupted one
    assert main(["train", "--resume", str(run), "--json", "--quiet", "--store", str(tmp_path / "s.sqlite")]) == 0
    _same_run(last_json(capsys.readouterr().out), expected)


def test_a_full_store_rolls_back_and_names_the_file(tmp_path):
    """SQLITE_FULL (a full disk, or the page limit that stands in for it here): the trial's transaction is rolled
    back whole, the error is OSError(ENOSPC) naming the store, and the same write succeeds once there is room."""
    path = tmp_path / "full.sqlite"
    with Store(path) as db:
        db.ensure_study("s", "h", {}, [("a", 0)])
        pages = db._db.execute("PRAGMA page_count").fetchone()[0]
        db._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        big = {"metrics": [(k, 1, f"m{k % 7}", k / 3) for k in range(5000)]}
        with pytest.raises(OSError) as err:
            db.finish_trial("s", "a", 0, status="completed", run_id="s/a/0", result={"x": 1}, **big)
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
        assert db.trials("s")[0]["status"] == "pending" and db.runs() == [] and db.integrity_ok()
        db._db.execute("PRAGMA max_page_count = 1073741823")
        db.finish_trial("s", "a", 0, status="completed", run_id="s/a/0", result={"x": 1}, **big)
        assert db.trials("s")[0]["status"] == "completed" and len(db.metrics("s/a/0")) == 7


def _can_mount_tmpfs() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp && echo ok"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "ok"


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user namespaces (unshare -rm) to mount a tiny tmpfs")
def test_a_real_full_tmpfs_gives_a_clear_error_and_the_run_resumes(tmp_path):
    """The real thing: ``tricklab train`` on a 100 KiB tmpfs, where the second checkpoint (~78 KB) does not fit
    beside the first. Exit code 1 with the message, no partial file; the run (copied out) resumes to the end."""
    out = tmp_path / "out"
    out.mkdir()
    script = (
        'mount -t tmpfs -o size=100k tmpfs "$MNT" || exit 97\n'
        f'"{sys.executable}" -m tricklab train --set data.name=synthetic --set model.name=mlp --set model.depth=2 '
        '--set model.width=64 --set epochs=3 --store none --quiet --runs-dir "$MNT/runs" 2> "$OUT/stderr"\n'
        'echo $? > "$OUT/rc"\n'
        'cp -a "$MNT/runs" "$OUT/runs"\n'
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=_env(MNT=str(mnt), OUT=str(out)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    err = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "1", err
    assert err.startswith("error: No space left on device (") and f"{LATEST})" in err and "Traceback" not in err
    (run,) = (out / "runs").iterdir()
    assert not list(run.rglob("*.tmp")) and load_checkpoint(run)["epoch"] == 1
    resumed = run_cli("train", "--resume", str(run), "--json", "--quiet", "--store", "none", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed.stdout)["status"] == "completed" and last_json(resumed.stdout)["epochs"] == 3


_FILL_AND_SAVE = """
import errno, json, os, sys
import torch
from tricklab.train.checkpoint import save_checkpoint
mnt, outcomes = sys.argv[1], []
payload = {"epoch": 1, "step": 1, "model": {"w": torch.randn(20000)}, "optimizer": {"m": [torch.randn(100)] * 30}}
for leave_kib in range(0, 160, 4):  # the disk fills up at every point of the ~85 KB write, one by one
    for root, _, files in os.walk(mnt):
        for f in files:
            os.remove(os.path.join(root, f))
    with open(os.path.join(mnt, "filler"), "wb") as fh:
        st = os.statvfs(mnt)
        fh.write(bytes(max(0, st.f_bavail * st.f_frsize - leave_kib * 1024)))
    try:
        save_checkpoint(os.path.join(mnt, "run"), payload)
        outcome = "ok"
    except OSError as err:
        outcome = f"OSError {errno.errorcode.get(err.errno)} {os.path.basename(str(err.filename))}"
    except Exception as err:
        outcome = f"{type(err).__name__}: {err}"
    leftovers = [f for f in os.listdir(os.path.join(mnt, "run")) if f.endswith(".tmp")]
    outcomes.append([outcome, leftovers])
print(json.dumps(outcomes))
"""


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user namespaces (unshare -rm) to mount a tiny tmpfs")
def test_a_checkpoint_on_a_nearly_full_disk_fails_with_enospc_wherever_the_space_ends(tmp_path):
    """``torch.save`` streaming into a file on a full disk fails, depending on where the space ends, with a
    RuntimeError about stream positions; tricklab serialises first, so every fill level gives either a complete
    checkpoint or OSError(ENOSPC) naming checkpoint.pt — and never a temporary file left behind."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f'mount -t tmpfs -o size=512k tmpfs "{mnt}" || exit 97\n"{sys.executable}" -c "$SCRIPT" "{mnt}"\n'
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=_env(SCRIPT=_FILL_AND_SAVE),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    outcomes = json.loads(r.stdout)
    kinds = {outcome for outcome, _ in outcomes}
    assert kinds <= {"ok", f"OSError ENOSPC {LATEST}"}, kinds
    assert kinds == {"ok", f"OSError ENOSPC {LATEST}"}  # both happened: the fill levels span the write
    assert all(leftovers == [] for _, leftovers in outcomes)


# -- 4. numerical faults ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_nan_and_inf_rows_are_refused_before_training_with_their_indices(tmp_path, monkeypatch, capsys, fmt):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.arange(40) % 3
    x[3, 1], x[8, 4], x[21, 0] = np.nan, np.inf, -np.inf
    if fmt == "npz":
        np.savez(tmp_path / "d.npz", x=x, y=y)
    else:
        rows = [",".join([*(repr(float(v)) for v in row), str(label)]) for row, label in zip(x, y)]
        (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    rc = main(["train", "--set", f"data.name={fmt}", "--set", f"data.path=d.{fmt}", "--store", "s.sqlite"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: data: ") and "rows 3, 8, 21 contain NaN/Inf" in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "s.sqlite").exists()  # refused before anything


MASKED_LOGITS = '''
import math
import torch
from torch import nn


class MaskedLogits(nn.Module):
    """A classifier whose class 0 is masked with -inf (a padding mask gone wrong): the loss of every example of
    class 0 is +inf, and the gradients stay finite."""

    def __init__(self, features, classes):
        super().__init__()
        self.linear = nn.Linear(features, classes)

    def forward(self, x):
        out = self.linear(x.flatten(1))
        return torch.cat([torch.full_like(out[:, :1], -math.inf), out[:, 1:]], dim=1)


def make(input_shape, num_classes):
    return MaskedLogits(math.prod(input_shape), num_classes)
'''


def test_an_inf_loss_is_diverged_with_the_doctors_diagnosis(tmp_path, monkeypatch, capsys):
    (tmp_path / "masked_logits_model.py").write_text(MASKED_LOGITS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "masked_logits_model", raising=False)
    rc = main(["doctor", "--set", "data.name=synthetic", "--set", "model.python=masked_logits_model:make",
               "--set", "epochs=2", "--json", "--quiet", "--store", "none", "--runs-dir", str(tmp_path / "runs")])
    out = last_json(capsys.readouterr().out)
    assert rc == 0  # a diverged run is a result
    assert out["status"] == "diverged" and out["diverged_step"] == 0 and out["test_accuracy"] is None
    assert "nan_loss" in out["diagnosis"] and out["advice"]["nan_loss"]
    alarm = next(a for a in out["alarms"] if a["kind"] == "nan_loss")
    assert "NaN/Inf" in alarm["message"] and alarm["step"] == 0
    assert out["history"][0]["train_loss"] is None  # +inf in the run, null in strict JSON


# -- 2b. killed study driver and workers -----------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc/*/stat: the parent is the 4th field)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX":
            kids.append(int(stat.parent.name))
    return kids


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the worker processes through /proc")
def test_sigkill_of_one_worker_then_of_the_driver_alone_then_rerun(tmp_path):
    """SIGKILL one worker mid-trial (its trial fails, the study goes on), then SIGKILL the driver alone — its other
    worker is orphaned and keeps training into its run directory. Re-running the same command while the orphan
    still runs completes every trial exactly once: no duplicate, none lost, each stored result the one in its
    run directory, nothing finished before the kills trained again."""
    spec = {"name": "faults", "base": {"data": {"name": "synthetic"}, "model": {"name": "mlp", "depth": 1,
                                                                                "width": 16}, "epochs": 6},
            "factors": {"model.dropout": [0.0, 0.3]}, "seeds": 3}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    store = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "tricklab", "study", str(tmp_path / "study.yaml"), "--store", str(store),
            "--workers", "2", "--quiet", "--no-report", "--json"]
    driver = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        _wait_for(lambda: count_trials(store, "running") >= 1 and len([p for p in _children(driver.pid) if _is_worker(p)])
                  == 2, 240, "two workers and a running trial")
        victim = [p for p in _children(driver.pid) if _is_worker(p)][0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: count_trials(store, "failed") == 1, 120, "the killed worker's trial to be marked failed")
        _wait_for(lambda: count_trials(store, "completed") >= 2, 240, "two completed trials")
        orphans = [p for p in _children(driver.pid) if _is_worker(p)]
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: its workers live on
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    with Store(store) as db:
        assert db.integrity_ok()
        before = {(t["arm"], t["seed"]): t for t in db.trials("faults")}
    failed = [k for k, t in before.items() if t["status"] == "failed"]
    assert len(failed) == 1 and "worker process died" in before[failed[0]]["error"]
    done_before = {k: t["finished"] for k, t in before.items() if t["status"] == "completed"}
    assert 2 <= len(done_before) < 6

    r = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["trials_total"] == out["trials_completed"] == 6 and out["trials_failed"] == 0
    with Store(store) as db:
        assert db.integrity_ok()
        trials = db.trials("faults")
        assert len(trials) == len({(t["arm"], t["seed"]) for t in trials}) == 6
        for t in trials:
            key = (t["arm"], t["seed"])
            if key in done_before:  # finished before the kills: never trained again
                assert t["finished"] == done_before[key] and t["attempts"] == 1
            on_disk = json.loads((Path(t["result"]["run_dir"]) / "result.json").read_text())
            _same_run(t["result"], on_disk)
        assert {(r["arm"], r["seed"]) for r in db.runs("faults")} == {(t["arm"], t["seed"]) for t in trials}
        assert len(db.runs("faults")) == 6
        assert next(t for t in trials if (t["arm"], t["seed"]) == failed[0])["attempts"] == 2
    _wait_for(lambda: not any(_alive(p) for p in orphans), 60, "orphaned workers to end")


# -- the table of docs/RELIABILITY.md --------------------------------------------------------------------------------
FAULT_TEST_FILES = ("test_fuzz.py", "test_faults.py", "test_hostile.py", "test_concurrency.py", "test_determinism.py",
                    "test_hostile_paths.py", "test_hostile_numbers.py", "test_hostile_models.py", "test_hostile_store.py",
                    "test_trial_identity.py", "test_signals.py")


def test_the_reliability_table_cites_only_existing_tests():
    """Every test the table names exists, and every test of the fault-injection files is in the table."""
    import re

    text = (ROOT / "docs" / "RELIABILITY.md").read_text()
    cited = set(re.findall(r"`tests/(test_\w+\.py)::(test_\w+)`", text))
    assert len(cited) >= 40
    for file, name in sorted(cited):
        source = (ROOT / "tests" / file).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"docs/RELIABILITY.md cites tests/{file}::{name}"
    for file in FAULT_TEST_FILES:
        for name in re.findall(r"^def (test_\w+)\(", (ROOT / "tests" / file).read_text(), re.M):
            assert (file, name) in cited, f"tests/{file}::{name} is missing from docs/RELIABILITY.md"
