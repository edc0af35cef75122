"""Signals (docs/RELIABILITY.md row 24): Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or
SIGTERM (to the driver alone, as ``kill`` or a scheduler sends it) ends ``tricklab study``, ``tricklab lesson``
and ``tricklab train`` cleanly: exit 130, no traceback from any process, every worker ended (the process tree
is listed before the signal and checked after), running trials marked ``interrupted`` in the store (never left
``running``), one line that says how to continue — and continuing completes the work.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, sigint_as_in_a_terminal

SPEC = {"name": "sig", "seeds": 2, "factors": {"model.dropout": [0.0, 0.2]},
        "base": {"data": {"name": "synthetic", "size": 2000, "batch_size": 32},
                 "model": {"name": "mlp", "depth": 2, "width": 64}, "epochs": 40}}
"""Four trials long enough that the signal (a second after the first probe) comes while they train — under the
population executor too, which trains all four at once — and continuing trains what is left."""


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "tricklab", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc: each process's parent)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(proc: subprocess.Popen[str], condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the command ended before the signal (exit {proc.returncode}): {err[-2000:]}")
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def _trial_states(store: Path) -> list[str]:
    if not store.exists():
        return []
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return [r[0] for r in db.execute("SELECT status FROM trials")]
    except sqlite3.Error:
        return []


def _interrupt(proc: subprocess.Popen[str], how: str) -> tuple[int, str, set[int]]:
    """Send the signal (``ctrl-c``: SIGINT to the group; ``sigterm``: SIGTERM to the driver); returns the exit
    code, stderr and the processes that lived below the driver just before."""
    below = _descendants(proc.pid)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    return proc.returncode, err, below


def _checks(rc: int, err: str, below: set[int]) -> str:
    assert rc == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "to continue: tricklab " in lines[0], err[-2000:]
    time.sleep(0.5)
    left = [p for p in below if _alive(p)]
    assert not left, f"processes left running: {left}"
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(("executor", "how"), [("local", "ctrl-c"), ("local", "sigterm"), ("population", "ctrl-c"),
                                               ("ray", "ctrl-c")])
def test_an_interrupted_study_ends_every_worker_marks_its_trials_and_continues(tmp_path, executor, how):
    if executor == "ray":
        pytest.importorskip("ray")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPEC))
    store = tmp_path / "s.sqlite"
    argv = ["study", "s.yaml", "--store", "s.sqlite", "--executor", executor, "--workers", "2", "--quiet",
            "--no-report", "--json"]
    proc = _start(argv, tmp_path)
    _wait_for(proc, lambda: "running" in _trial_states(store) and any((tmp_path / "runs").rglob("probes.jsonl")))
    time.sleep(1.0)
    line = _checks(*_interrupt(proc, how))
    assert "tricklab study s.yaml" in line
    states = _trial_states(store)
    assert "running" not in states and "interrupted" in states, states
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = _start(argv, tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["trials_completed"] == 4
    assert set(_trial_states(store)) == {"completed"}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_train_names_its_run_directory_and_the_resume_command(tmp_path, how):
    argv = ["train", "--set", "data.name=synthetic", "--set", "data.size=2000", "--set", "model.name=mlp",
            "--set", "model.depth=2", "--set", "model.width=64", "--set", "epochs=200", "--set", "data.batch_size=32",
            "--store", "t.sqlite", "--quiet"]
    proc = _start(argv, tmp_path)
    _wait_for(proc, lambda: any((tmp_path / "runs").rglob("checkpoint.safetensors")))
    line = _checks(*_interrupt(proc, how))
    run_dir = next((tmp_path / "runs").iterdir())
    assert f"tricklab train --resume {run_dir.relative_to(tmp_path)}" in line or str(run_dir) in line, line
    with sqlite3.connect(tmp_path / "t.sqlite") as db:
        assert [r[0] for r in db.execute("SELECT status FROM runs")] == ["interrupted"]


@pytest.mark.slow
def test_an_interrupted_lesson_leaves_no_worker_and_says_how_to_continue(tmp_path):
    proc = _start(["lesson", "dropout", "--quick", "--quiet", "--out", "out"], tmp_path)
    _wait_for(proc, lambda: any((tmp_path / "out").rglob("probes.jsonl")))
    line = _checks(*_interrupt(proc, "ctrl-c"))
    assert "tricklab lesson dropout --quick" in line
    for store in (tmp_path / "out").rglob("*.sqlite"):
        assert "running" not in _trial_states(store)
