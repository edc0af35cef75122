"""Shared fixtures: an isolated cache and working directory, and a way to run the real CLI."""

from __future__ import annotations

import json
import os
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


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tricklab ARGS`` in a subprocess, as a user would."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRICKLAB_CACHE=os.environ["TRICKLAB_CACHE"])
    return subprocess.run([sys.executable, "-m", "tricklab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    """The JSON object on the last line of stdout (the --json contract)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])
