"""Shared fixtures: an isolated cache and working directory, and a way to run the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """One MNIST-1D cache for the whole session (generation takes seconds), never the user's own cache."""
    cache = os.environ.get("TRICKLAB_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["TRICKLAB_CACHE"] = cache
    yield cache


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored afterwards: tiny networks gain nothing from intra-op threads, and
    on a busy 2-core machine OpenMP's spinning threads wait on each other in every op (10-100x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count_trials(store: Path, status: str = "completed") -> int:
    """How many of the store's trials have ``status`` now (0 while the store is not readable yet)."""
    import sqlite3

    try:
        with sqlite3.connect(store, timeout=1) as db:
            return db.execute("SELECT count(*) FROM trials WHERE status = ?", (status,)).fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_study_when(args: list[str], cwd: Path, store: Path, completed: int, timeout: float = 180) -> int:
    """Start ``python -m tricklab ARGS`` in its own process group, SIGKILL the group (driver and workers at once)
    as soon as ``store`` holds ``completed`` completed trials; returns how many it held then."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tricklab", *args], cwd=cwd,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, done = time.time() + timeout, 0
    while time.time() < deadline:
        done = count_trials(store) if store.exists() else 0
        if done >= completed:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return done


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tricklab ARGS`` in a subprocess, as a user would (``env``: variables set on top)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRICKLAB_CACHE=os.environ["TRICKLAB_CACHE"], **(env or {}))
    return subprocess.run([sys.executable, "-m", "tricklab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` of a child that a test interrupts with Ctrl-C (SIGINT): SIGINT at its default, as a shell's
    foreground job has it. A test run started with SIGINT ignored (under ``nohup``, as a background job of a
    script) hands the ignored signal down to every child, and Python keeps an ignored SIGINT ignored (it raises
    KeyboardInterrupt only where SIGINT was at its default), so the child would never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def last_json(stdout: str) -> dict:
    """The JSON object on the last line of stdout (the --json contract)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])
