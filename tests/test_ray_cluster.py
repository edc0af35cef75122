"""A study on a real two-node Ray cluster on 127.0.0.1 that loses its worker node mid-study.

The head and the worker are separate ``ray start`` processes with one CPU each (``--executor ray --ray-address``
connects the study to them as a user connects to an existing cluster). When the first trial is stored, the
worker node's whole process group is SIGKILLed while it trains a trial; Ray runs that trial again on the head
(a system failure, ``SYSTEM_RETRIES``), where it resumes from its checkpoint. The study must finish with every
trial stored exactly once."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, count_trials, last_json
from tricklab.store import Store

pytestmark = pytest.mark.slow

SPEC = {
    "name": "cluster",
    "base": {"data": {"name": "synthetic", "batch_size": 32}, "model": {"name": "mlp", "depth": 2, "width": 64},
             "epochs": 12},
    "factors": {"model.dropout": [0.0, 0.2, 0.4]},
    "seeds": 2,
    "metric": "test_accuracy",
}
TRIALS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    return subprocess.run([ray, *args], capture_output=True, text=True, timeout=120, **kwargs)


def _cluster_env() -> dict[str, str]:
    """Every process of the cluster and its drivers share one token (Ray's token authentication)."""
    return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    """Alive nodes of the cluster, asked from a separate driver process (the test never joins the cluster)."""
    code = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print('ALIVE_NODES', sum(bool(n['Alive']) for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    # Ray writes its own warnings to stdout too ("raylet has lagging heartbeats" under load): read our line only
    counts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("ALIVE_NODES ")]
    return int(counts[-1]) if out.returncode == 0 and counts else 0


@pytest.fixture
def cluster():
    pytest.importorskip("ray")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="trkray", dir="/tmp")    # Ray's socket paths must stay short
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", str(100 * 2**20)]
    env = _cluster_env()
    head = _ray("start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp, *common,
                env=env)
    assert head.returncode == 0, head.stderr[-2000:]
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    worker = subprocess.Popen([ray, "start", "--address", address, "--block", *common], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while _alive_nodes(address, env) < 2:
            assert time.time() < deadline, "the worker node did not join the cluster"
            assert worker.poll() is None, "ray start --address exited"
            time.sleep(1)
        yield address, worker, env
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        _ray("stop", "--force", env=env)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_study_loses_its_worker_node_and_completes_with_nothing_lost_or_duplicated(tmp_path, cluster):
    address, worker, env = cluster
    spec, store, runs = tmp_path / "cluster.yaml", tmp_path / "s.sqlite", tmp_path / "runs"
    spec.write_text(yaml.safe_dump(SPEC))
    env = dict(env, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    study = subprocess.Popen([sys.executable, "-m", "tricklab", "study", str(spec), "--executor", "ray",
                              "--ray-address", address, "--store", str(store), "--runs-dir", str(runs),
                              "--no-report", "--json", "--quiet"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (store.exists() and count_trials(store) >= 1):
            assert study.poll() is None, study.communicate()[1][-3000:]
            assert time.time() < deadline, "no trial finished"
            time.sleep(0.1)
        stored_at_kill = count_trials(store)
        started_at_kill = len(list(runs.glob("*/*/seed-*")))
        os.killpg(worker.pid, signal.SIGKILL)       # the worker node: raylet, its workers and the trial they run
        worker.wait(timeout=30)
        out, err = study.communicate(timeout=600)
    finally:
        if study.poll() is None:
            study.kill()
    assert stored_at_kill < TRIALS - 1, "the node died after the study had as good as finished"
    # two trials in flight on two one-CPU nodes: one of them was the worker's (the one Ray ran again)
    assert started_at_kill - stored_at_kill >= 2, (started_at_kill, stored_at_kill)
    assert study.returncode == 0, err[-3000:]
    summary = last_json(out)
    assert summary["trials_total"] == summary["trials_completed"] == TRIALS and summary["trials_failed"] == 0
    with Store(store) as db:
        assert db.integrity_ok()
        trials = db.trials("cluster")
        assert len(trials) == len({(t["arm"], t["seed"]) for t in trials}) == TRIALS
        assert all(t["status"] == "completed" and t["attempts"] == 1 for t in trials)
        assert len(db.runs("cluster")) == TRIALS
    deadline = time.time() + 120                        # the cluster really lost the node (once its health
    while _alive_nodes(address, env) != 1:              # checks have failed: the study may finish before that)
        assert time.time() < deadline, "the killed node is still alive to the cluster"
        time.sleep(2)
