"""Errors a person can act on (issue 18 item 2), through the real console script: "did you mean" for recipe keys,
registry names, subcommands, flags and choices; bare ``key=value`` overrides; one JSON error object as the last
line of stdout for every non-zero exit under ``--json``; help texts without markup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, last_json, sigint_as_in_a_terminal

TRICKLAB = str(Path(sys.executable).parent / "tricklab")   # the console script pip installed
FAST = ["data.name=digits", "model.name=mlp", "model.depth=2", "model.width=32", "epochs=1"]


def tricklab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([TRICKLAB, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def error_object(r: subprocess.CompletedProcess[str]) -> dict:
    """The ``{"error": ...}`` object on stdout's last line, checked to be the only JSON object there."""
    objects = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(objects) == 1, r.stdout
    out = last_json(r.stdout)
    assert set(out) == {"error"} and set(out["error"]) == {"code", "field", "message"}, out
    assert out["error"]["code"] == r.returncode
    return out["error"]


@pytest.mark.parametrize(("args", "field", "words"), [
    (["train", "--set", "optimzer.lr=0.1"], "--set optimzer.lr", ["did you mean 'optimizer.lr'?"]),
    (["train", "lr=0.1"], "--set lr", ["did you mean 'optimizer.lr'?"]),
    (["train", "--set", "optimizer.learning_rate=0.1"], "--set optimizer.learning_rate",
     ["did you mean 'optimizer.lr'?"]),
    (["train", "--set", "model.name=cnnn"], "model.name", ["did you mean 'cnn'?", "resnet"]),
    (["train", "--set", "schedule.name=cosin"], "schedule.name", ["did you mean 'cosine'?"]),
    (["trian"], "COMMAND", ["did you mean 'train'?", "tricklab --help"]),
    (["train", "--jsn"], "--jsn", ["did you mean '--json'?", "tricklab train --help"]),
    (["train", "--epoch=3"], "--epoch=3", ["did you mean the recipe key 'epochs'?", "--set epochs=VALUE"]),
    (["train", "--learning-rate=0.1"], "--learning-rate=0.1", ["recipe key 'optimizer.lr'?"]),
    (["doctor", "--max-epochs=3"], "--max-epochs=3", ["recipe key 'epochs'?"]),
    (["study", "s.yaml", "--executor", "locl"], "--executor", ["did you mean 'local'?"]),
    (["lesson", "batchnrom", "--quick"], "lesson", ["did you mean 'batchnorm'?"]),
    (["tricks", "--kind", "optimzer"], "--kind", ["did you mean 'optimizer'?"]),
    (["train", "missing.yaml"], "recipe", ["file not found: missing.yaml", "KEY=VALUE"]),
    (["report"], "PATH", ["required: PATH", "tricklab report --help"]),
])
def test_every_input_error_names_the_field_and_the_fix_in_one_json_object(tmp_path, args, field, words):
    r = tricklab(*args, "--json", "--store", "none", cwd=tmp_path) if args[0] == "train" else \
        tricklab(*args, "--json", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = error_object(r)
    assert err["field"] == field
    for w in words:
        assert w in err["message"] and w in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()   # refused before anything was made


def test_a_mistyped_key_in_a_recipe_file_gets_a_suggestion(tmp_path):
    (tmp_path / "r.yaml").write_text("optimzer: {lr: 0.1}\nmodel: {dept: 3}\n")
    r = tricklab("train", "r.yaml", "--json", "--store", "none", cwd=tmp_path)
    err = error_object(r)
    assert r.returncode == 2
    assert "did you mean 'model.depth'?" in err["message"] and "did you mean 'optimizer'?" in err["message"]


def test_no_suggestion_when_nothing_is_close(tmp_path):
    r = tricklab("train", "--set", "zzzz.qqqq=1", "--json", "--store", "none", cwd=tmp_path)
    err = error_object(r)
    assert "did you mean" not in err["message"] and "allowed: name, seed, epochs" in err["message"]


def test_bare_key_value_arguments_are_overrides_in_order(tmp_path):
    """``tricklab train epochs=1 ...`` as Hydra users type it; a later value of one key wins, as with --set."""
    r = tricklab("train", *FAST[:-1], "epochs=3", "--quiet", "epochs=1", "--json", "--store", "none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["epochs"] == 1 and out["status"] == "completed"
    assert yaml_value(tmp_path / out["run_dir"] / "recipe.yaml", "model", "name") == "mlp"


def test_a_bare_argument_that_is_a_file_stays_a_recipe(tmp_path):
    (tmp_path / "lr=0.5.yaml").write_text("data: {name: digits}\nmodel: {name: mlp, depth: 1, width: 16}\n"
                                         "epochs: 1\n")
    r = tricklab("train", "lr=0.5.yaml", "optimizer.lr=0.01", "--json", "--store", "none", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    recipe_file = tmp_path / last_json(r.stdout)["run_dir"] / "recipe.yaml"
    assert yaml_value(recipe_file, "optimizer", "lr") == 0.01
    assert yaml_value(recipe_file, "model", "width") == 16


def test_a_flag_value_with_an_equals_sign_is_left_alone(tmp_path):
    r = tricklab("train", *FAST, "--runs-dir", "a=b", "--json", "--store", "none", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(last_json(r.stdout)["run_dir"]).parent == Path("a=b")


def test_every_failing_trial_exits_1_with_one_json_error(tmp_path):
    from tests.test_study_runner import TRAIN_MODE_FAILURE

    (tmp_path / "fails_in_training.py").write_text(TRAIN_MODE_FAILURE)
    (tmp_path / "s.yaml").write_text(json.dumps({
        "name": "broken", "seeds": 1, "metric": "test_accuracy", "factors": {"model.dropout": [0.0, 0.1]},
        "base": {"data": {"name": "digits"}, "model": {"python": "fails_in_training:make"}, "epochs": 1}}))
    env_path = f"{tmp_path}{os.pathsep}{ROOT}"
    r = subprocess.run([TRICKLAB, "study", "s.yaml", "--json", "--quiet", "--no-report", "--workers", "1"],
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=env_path, OMP_NUM_THREADS="1"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    message = error_object(r)["message"]
    assert "every trial failed (2)" in message and "fails in training mode" in message and "tricklab.sqlite" in message


def test_help_texts_carry_no_markup(tmp_path):
    for command in ([], ["train"], ["doctor"], ["study"], ["report"], ["tricks"], ["lesson"], ["lr-find"]):
        r = tricklab(*command, "--help", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        for markup in ("`", "**", ":class:", ":func:"):
            assert markup not in r.stdout, (command, markup)


def test_help_with_json_is_no_error(tmp_path):
    r = tricklab("train", "--help", "--json", cwd=tmp_path)
    assert r.returncode == 0 and '"error"' not in r.stdout


def yaml_value(path: Path, section: str, key: str) -> object:
    import yaml

    return yaml.safe_load(path.read_text())[section][key]


@pytest.mark.slow
def test_an_interrupted_run_ends_with_one_json_error_too(tmp_path):
    """Ctrl-C (SIGINT) under --json: exit 130, the error object last on stdout, and the command to continue."""
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([TRICKLAB, "train", "data.name=digits", "model.name=mlp", "epochs=500", "--json",
                             "--store", "none"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_in_a_terminal)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("runs/*/checkpoint*")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert r.returncode == 130, err
    message = error_object(r)["message"]
    assert "tricklab train --resume runs/digits-mlp-" in message and "keeps its last complete epoch" in message
