"""One run on several processes (``tricklab train --nproc N``, issue 19 item 5): 2 CPU processes under torchrun
(gloo) train the same global batch as 1 process and reach the same metrics up to the order of float sums."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli

pytestmark = pytest.mark.slow

NO_BN = ["data.name=synthetic", "model.name=mlp", "model.depth=2", "model.width=32", "model.norm=none",
         "model.dropout=0", "epochs=3", "--store", "none", "--quiet", "--json"]


def _run(tmp_path: Path, *args: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    done = run_cli("train", *args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path, timeout=600,
                   env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert sum(line.startswith("{") for line in done.stdout.splitlines()) == 1   # process 0 reports, once
    return last_json(done.stdout)


@pytest.mark.parametrize("seed", [0, 1])
def test_two_processes_train_the_same_run_as_one(tmp_path, seed):
    one = _run(tmp_path / "one", *NO_BN, f"seed={seed}")
    two = _run(tmp_path / "two", *NO_BN, f"seed={seed}", "--nproc", "2")
    assert (two["steps"], two["epochs"]) == (one["steps"], one["epochs"])
    for a, b in zip(one["history"], two["history"]):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
        for key in ("train_accuracy", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], abs=0.01), key    # an example or two may flip near a tie
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.005
    runs = list((tmp_path / "two" / "runs").iterdir())                         # process 0's run only
    assert len(runs) == 1 and (runs[0] / "checkpoint.safetensors").is_file()
    assert json.loads((runs[0] / "result.json").read_text())["steps"] == one["steps"]


def test_batch_norm_and_early_stopping_on_two_processes_agree_to_the_end(tmp_path):
    """Batch statistics are per process (each its shard), running statistics are averaged before validation, so
    every process evaluates the same model and stops at the same epoch: the run ends instead of hanging."""
    out = _run(tmp_path, "data.name=synthetic", "model.name=mlp", "model.depth=2", "model.width=32", "epochs=6",
               "early_stopping.patience=1", "early_stopping.min_delta=0.05", "--store", "none", "--quiet", "--json",
               "--nproc", "2")
    assert out["status"] in ("completed", "stopped_early") and len(out["history"]) == out["epochs"]


def test_what_several_processes_cannot_train_is_refused_before_they_start(tmp_path):
    for args, words in ((["accumulate=2"], "accumulate"), (["--nproc", "0"], "from 1 to"),
                        (["--resume", "runs/x"], "resumed on one process")):
        done = run_cli("train", *args, *(["--nproc", "2"] if "--nproc" not in args else []), "--json",
                       "--store", "none", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        error = last_json(done.stdout)["error"]
        assert error["field"] == "--nproc" and words in error["message"]


def test_the_doctor_watches_process_0_and_names_what_one_process_names(tmp_path):
    """``tricklab doctor --nproc 2``: the probe on process 0 sees the all-reduced gradients of the whole batch, so
    a learning rate 500 × SGD's usual one is named as on one process; process 0 alone writes the probes."""
    broken = ["data.name=synthetic", "model.name=mlp", "model.depth=2", "model.width=32", "model.norm=none",
              "epochs=3", "optimizer.name=sgd", "optimizer.lr=50", "--store", "none", "--quiet", "--json"]
    outs = {}
    for nproc in ("1", "2"):
        done = run_cli("doctor", *broken, "--nproc", nproc, "--runs-dir", str(tmp_path / nproc), cwd=tmp_path,
                       timeout=600, env={"OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert sum(line.startswith("{") for line in done.stdout.splitlines()) == 1
        outs[nproc] = last_json(done.stdout)
    assert "lr_too_high" in outs["2"]["diagnosis"]
    assert set(outs["2"]["diagnosis"]) == set(outs["1"]["diagnosis"])
    [run] = list((tmp_path / "2").iterdir())
    probes = (run / "probes.jsonl").read_text().splitlines()
    assert len(probes) == len({json.loads(line)["step"] for line in probes}) > 0     # one writer, no step twice
    refused = run_cli("doctor", "--nproc", "2", "--repair", "--json", "--store", "none", cwd=tmp_path)
    assert refused.returncode == 2 and last_json(refused.stdout)["error"]["field"] == "--repair"
