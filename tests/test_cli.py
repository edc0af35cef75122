"""The CLI contract of DESIGN.md, exercised as a user would: real subprocesses, exit codes, --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, last_json, run_cli

FAST = ["--set", "data.name=digits", "--set", "model.name=mlp", "--set", "model.depth=2", "--set", "epochs=2"]


def test_help_on_every_command():
    for args in ([], ["train"], ["tricks"]):
        r = run_cli(*args, "--help")
        assert r.returncode == 0 and "usage" in r.stdout.lower()


def test_train_json_contract(tmp_path):
    r = run_cli("train", *FAST, "--json", "--runs-dir", str(tmp_path / "runs"), "--store", str(tmp_path / "s.sqlite"),
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    for key in ("status", "test_accuracy", "test_loss", "best_epoch", "epochs", "steps", "wall_seconds", "run_dir",
                "alarms"):
        assert key in out
    assert out["status"] == "completed" and out["epochs"] == 2 and 0.5 < out["test_accuracy"] <= 1
    assert Path(out["run_dir"]).is_dir()
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--set", "init.scheme=fancy"], ["init.scheme", "lecun", "he"]),
        (["--set", "optimizer.lr=-1"], ["optimizer.lr", "greater than 0"]),
        (["--set", "model.dropout=1.5"], ["model.dropout", "less than 1"]),
        (["--set", "data.name=idx", "--set", "data.path=/no/such/dir"], ["data.path", "/no/such/dir"]),
        (["--set", "optimizer.learnin_rate=1"], ["optimizer.learnin_rate", "unknown key", "lr"]),
        (["--set", "nonsense"], ["--set", "key=value"]),
        (["--frobnicate"], ["--frobnicate"]),
        (["does-not-exist.yaml"], ["not found"]),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, args, words):
    r = run_cli("train", *args, "--runs-dir", str(tmp_path), "--store", "none", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr


def test_malformed_yaml_exits_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: {name: mlp\n  depth: [\n")
    r = run_cli("train", str(p), cwd=tmp_path)
    assert r.returncode == 2 and "malformed YAML" in r.stderr and "Traceback" not in r.stderr


def test_diverged_run_is_exit_0(tmp_path):
    r = run_cli("train", *FAST, "--set", "optimizer.name=sgd", "--set", "optimizer.lr=1e6", "--set",
                "schedule.name=constant", "--set", "model.norm=none", "--json", "--runs-dir", str(tmp_path),
                "--store", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["status"] == "diverged" and out["alarms"][0]["kind"] == "nan_loss"


def test_tricks_json_lists_every_name_of_the_catalogue():
    r = run_cli("tricks", "--json")
    assert r.returncode == 0, r.stderr
    data = last_json(r.stdout)
    names = {(e["kind"], e["name"]) for e in data["tricks"]}
    aliases = {(e["kind"], a) for e in data["tricks"] for a in e["aliases"]}
    expected = {
        "scaling": ["none", "minmax01", "minmax11", "standard"],
        "init": ["normal", "uniform", "gaussian", "lecun", "glorot", "glorot_uniform", "he", "he_uniform",
                 "orthogonal", "lsuv", "default"],
        "norm": ["batch", "layer", "group", "weight", "none"],
        "optimizer": ["sgd", "momentum", "nesterov", "normalized", "adagrad", "rmsprop", "adam", "adamw"],
        "clip": ["norm", "unit", "value", "agc"],
        "schedule": ["constant", "exponential", "step", "cosine", "warmup", "one_cycle", "plateau"],
        "lr_finder": ["lr_find"],
        "averaging": ["ensemble", "ema", "swa"],
        "model": ["mlp", "cnn", "resnet", "inception"],
        "early_stopping": ["early_stopping"],
        "regularization": ["dropout", "weight_decay_l2", "weight_decay_decoupled", "capacity_check"],
    }
    for kind, wanted in expected.items():
        for name in wanted:
            assert (kind, name) in names, (kind, name)
    assert ("init", "xavier") in aliases and ("init", "kaiming") in aliases
    for e in data["tricks"]:
        assert e["formula"] and e["reference"], e["name"]
    assert set(data["floating_point"]["epsilon"]) >= {"float32", "float16", "bfloat16"}


def test_tricks_table_renders():
    r = run_cli("tricks")
    assert r.returncode == 0 and "glorot" in r.stdout and "epsilon" in r.stdout


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A real SIGKILL while an epoch is running; --resume must end with exactly the uninterrupted metrics."""
    args = ["--set", "data.name=digits", "--set", "model.name=cnn", "--set", "model.width=32", "--set", "epochs=6",
            "--set", "data.batch_size=16", "--json", "--quiet", "--store", "none"]
    full = run_cli("train", *args, "--runs-dir", str(tmp_path / "full"), cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    expected = last_json(full.stdout)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tricklab", "train", *args, "--runs-dir", str(killed_dir)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:  # wait until epoch 2 finished (a checkpoint exists), then kill inside epoch 3
        found = list(killed_dir.glob("*/metrics.json"))
        if found:
            try:
                history = json.loads(found[0].read_text())
            except (json.JSONDecodeError, OSError):
                history = []
            if len(history) >= 2:
                metrics = found[0]
                break
        time.sleep(0.02)
    assert metrics is not None, "the run never reached epoch 2"
    time.sleep(0.15)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = metrics.parent
    assert not (run_dir / "result.json").exists()

    resumed = run_cli("train", "--resume", str(run_dir), "--json", "--quiet", "--store", "none", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    got = last_json(resumed.stdout)
    assert got["status"] == expected["status"] == "completed"
    assert got["test_loss"] == expected["test_loss"]
    assert got["test_accuracy"] == expected["test_accuracy"]
    assert got["steps"] == expected["steps"] and got["epochs"] == expected["epochs"]
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in expected["history"]]
    assert [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in got["history"]] == strip


def test_the_tricks_catalogue_lists_every_registry_of_the_tricks_package():
    """A trick added to tricklab.tricks with a registry of its own shows in `tricklab tricks` (CATALOGUE)."""
    import importlib
    import pkgutil

    import tricklab.tricks
    from tricklab.cli.tricks_cmd import CATALOGUE
    from tricklab.registry import Registry

    # the registries the tricks package defines (ALL_REGISTRIES also holds those of whatever else the process
    # imported — tricklab.data's datasets are no trick)
    kinds = {value.kind for module in pkgutil.iter_modules(tricklab.tricks.__path__)
             for value in vars(importlib.import_module(f"tricklab.tricks.{module.name}")).values()
             if isinstance(value, Registry)}
    assert len(kinds) >= 15 and kinds - set(CATALOGUE) == set()
