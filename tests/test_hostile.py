"""Hostile input (docs/RELIABILITY.md): a hand-written corpus of wrong types, huge numbers, NaN, unicode, empty
files, directories where files belong and YAML bombs — each refused by the real CLI entry point with exit code 2
and a short message naming the field; hostile files (pickles in checkpoints, ``!!python`` YAML tags) never run
code; a user model is imported only when the recipe names it in ``model.python``.

The corpus calls ``tricklab.cli.main.main`` in-process (the same code as the ``tricklab`` command, less the
interpreter start); tests/test_fuzz.py runs the real command in subprocesses.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.conftest import last_json
from tricklab.cli.main import main
from tricklab.errors import InputError
from tricklab.study import study_from_dict
from tricklab.train import train
from tricklab.train.checkpoint import LATEST, PREVIOUS, load_checkpoint

MARKER = "PWNED"  # a file hostile input tries to create; it must never exist



def _alias_bomb(levels: int = 7) -> str:
    """A YAML flow value that is 9**levels strings once aliases are expanded ("billion laughs"), in ~200 bytes."""
    value = '&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
    for prev, name in zip("abcdefghij", "bcdefghijk"[: levels - 1]):
        value = f"&{name} [{value}, {', '.join(['*' + prev] * 8)}]"
    return value


BOMB = _alias_bomb()

# (id, files to create {name: text or bytes}, argv; {tmp} is the test's directory), the field the message names
CORPUS = [
    ("recipe-is-a-directory", {}, ["train", "{tmp}"], "recipe"),
    ("recipe-missing", {}, ["train", "{tmp}/nope.yaml"], "recipe"),
    ("recipe-binary", {"r.yaml": b"\xff\xfe\x00\x01garbage"}, ["train", "{tmp}/r.yaml"], "recipe"),
    ("recipe-nul-character", {"r.yaml": "name: a\x00b\n"}, ["train", "{tmp}/r.yaml"], "recipe"),
    ("recipe-top-level-list", {"r.yaml": "- 1\n- 2\n"}, ["train", "{tmp}/r.yaml"], "recipe"),
    ("recipe-top-level-number", {"r.yaml": "42\n"}, ["train", "{tmp}/r.yaml"], "recipe"),
    ("recipe-nested-10000-deep", {"r.yaml": "[" * 10000 + "]" * 10000}, ["train", "{tmp}/r.yaml"], "recipe"),
    ("recipe-5000-digit-integer", {"r.yaml": "seed: " + "9" * 5000 + "\n"}, ["train", "{tmp}/r.yaml"], "recipe"),
    ("recipe-alias-bomb", {"r.yaml": f"name: {BOMB}\n"}, ["train", "{tmp}/r.yaml"], "name"),
    ("recipe-python-tag", {"r.yaml": f"name: !!python/object/apply:os.system ['touch {{tmp}}/{MARKER}']\n"},
     ["train", "{tmp}/r.yaml"], "recipe"),
    ("recipe-section-is-a-number", {"r.yaml": "optimizer: 5\n"}, ["train", "{tmp}/r.yaml"], "optimizer"),
    ("recipe-list-for-an-int", {"r.yaml": "model: {depth: [1]}\n"}, ["train", "{tmp}/r.yaml"], "model.depth"),
    ("recipe-text-for-an-int", {"r.yaml": "epochs: ten\n"}, ["train", "{tmp}/r.yaml"], "epochs"),
    ("recipe-negative-seed", {"r.yaml": "seed: -1\n"}, ["train", "{tmp}/r.yaml"], "seed"),
    ("recipe-1e400-epochs", {"r.yaml": "epochs: 1e400\n"}, ["train", "{tmp}/r.yaml"], "epochs"),
    ("recipe-nan-lr", {"r.yaml": "optimizer: {lr: .nan}\n"}, ["train", "{tmp}/r.yaml"], "optimizer.lr"),
    ("recipe-inf-decay", {"r.yaml": "optimizer: {weight_decay: .inf}\n"}, ["train", "{tmp}/r.yaml"],
     "optimizer.weight_decay"),
    ("recipe-huge-batch", {"r.yaml": "data: {batch_size: " + "1" * 40 + "}\n"}, ["train", "{tmp}/r.yaml"],
     "data.batch_size"),
    ("recipe-empty-name", {"r.yaml": "name: ''\n"}, ["train", "{tmp}/r.yaml"], "name"),
    ("recipe-fullwidth-optimizer", {"r.yaml": "optimizer: {name: ＡＤＡＭ}\n"}, ["train", "{tmp}/r.yaml"],
     "optimizer.name"),
    ("recipe-zero-width-space", {"r.yaml": 'model: {name: "mlp\u200b"}\n'}, ["train", "{tmp}/r.yaml"], "model.name"),
    ("recipe-integer-key", {"r.yaml": "1: 2\n"}, ["train", "{tmp}/r.yaml"], "1"),
    ("recipe-blank-key", {"r.yaml": "' ': 2\n"}, ["train", "{tmp}/r.yaml"], "' '"),
    ("recipe-misspelt-section", {"r.yaml": "optimiser: {lr: 0.1}\n"}, ["train", "{tmp}/r.yaml"], "optimiser"),
    ("set-1e999", {}, ["train", "--set", "optimizer.lr=1e999"], "optimizer.lr"),
    ("set-5000-digits", {}, ["train", "--set", "model.depth=" + "9" * 5000], "model.depth"),
    ("set-no-key", {}, ["train", "--set", "="], "--set"),
    ("set-empty-part", {}, ["train", "--set", "data..name=x"], "--set"),
    ("set-unknown-section", {}, ["train", "--set", "nosuch.key=1"], "--set nosuch.key"),
    ("set-below-a-setting", {}, ["train", "--set", "data.name.x=1"], "--set data.name.x"),
    ("set-nan-in-a-pair", {}, ["train", "--set", "optimizer.betas=[.nan, 0.9]"], "optimizer.betas.0"),
    ("set-long-name", {}, ["train", "--set", "name=" + "x" * 300], "name"),
    ("set-list-for-a-section", {}, ["train", "--set", "data=[1, 2]"], "data"),
    ("set-python-tag", {},
     ["train", "--set", f"optimizer.lr=!!python/object/apply:os.system ['touch {{tmp}}/{MARKER}']"],
     "optimizer.lr"),
    ("data-path-is-a-directory", {}, ["train", "--set", "data.name=csv", "--set", "data.path={tmp}"], "data.path"),
    ("data-path-missing", {}, ["train", "--set", "data.name=npz", "--set", "data.path={tmp}/no.npz"], "data.path"),
    ("data-path-is-a-device", {}, ["train", "--set", "data.name=csv", "--set", "data.path=/dev/null"], "data.path"),
    ("data-csv-empty", {"d.csv": ""}, ["train", "--set", "data.name=csv", "--set", "data.path={tmp}/d.csv"], "data"),
    ("data-npz-garbage", {"d.npz": b"PK\x03\x04 not really a zip"},
     ["train", "--set", "data.name=npz", "--set", "data.path={tmp}/d.npz"], "data.path"),
    ("store-is-a-directory", {}, ["train", "--set", "data.name=synthetic", "--store", "{tmp}"], "--store"),
    ("runs-dir-is-a-file", {"f": "x"}, ["train", "--set", "data.name=synthetic", "--runs-dir", "{tmp}/f"],
     "--runs-dir"),
    ("resume-not-a-run", {}, ["train", "--resume", "{tmp}"], "--resume"),
    ("resume-a-file", {"f": "x"}, ["train", "--resume", "{tmp}/f"], "--resume"),
    ("report-garbage-store", {"s.sqlite": b"\x00" * 100 + b"garbage" * 100}, ["report", "{tmp}/s.sqlite"],
     "--store"),
    ("report-nothing-there", {}, ["report", "{tmp}/nowhere"], "PATH"),
    ("study-empty-file", {"s.yaml": ""}, ["study", "{tmp}/s.yaml"], "study"),
    ("study-is-a-directory", {}, ["study", "{tmp}"], "study"),
    ("study-python-tag", {"s.yaml": f"name: !!python/object/new:os.system ['touch {{tmp}}/{MARKER}']\n"},
     ["study", "{tmp}/s.yaml"], "study"),
    ("study-base-missing", {"s.yaml": "name: s\nbase: nope.yaml\nfactors: {model.dropout: [0.0, 0.5]}\n"},
     ["study", "{tmp}/s.yaml"], "base"),
    ("study-base-is-a-directory", {"s.yaml": "name: s\nbase: .\nfactors: {model.dropout: [0.0, 0.5]}\n"},
     ["study", "{tmp}/s.yaml"], "base"),
    ("study-base-python-tag", {"s.yaml": "name: s\nbase: b.yaml\nfactors: {model.dropout: [0.0, 0.5]}\n",
                               "b.yaml": "epochs: !!python/name:os.system\n"}, ["study", "{tmp}/s.yaml"], "base"),
    ("study-negative-seeds", {"s.yaml": "name: s\nfactors: {model.dropout: [0.0, 0.5]}\nseeds: -1\n"},
     ["study", "{tmp}/s.yaml"], "seeds"),
    ("study-1e30-seeds", {"s.yaml": "name: s\nfactors: {model.dropout: [0.0, 0.5]}\nseeds: " + "1" + "0" * 30 + "\n"},
     ["study", "{tmp}/s.yaml"], "seeds"),
    ("study-alias-bomb-design", {"s.yaml": f"name: s\nfactors: {{model.dropout: [0.0]}}\ndesign: {BOMB}\n"},
     ["study", "{tmp}/s.yaml"], "design"),
    ("study-factor-of-2000-values",
     {"s.yaml": "name: s\nfactors: {optimizer.lr: [" + ", ".join(f"{i / 1e5}" for i in range(1, 2001)) + "]}\n"},
     ["study", "{tmp}/s.yaml"], "factors.optimizer.lr"),
    ("study-unicode-control-key", {"s.yaml": 'name: s\nfactors: {"model.drop\\x00out": [0.0, 0.5]}\n'},
     ["study", "{tmp}/s.yaml"], "factors.'model.drop\\x00out'"),
    ("study-garbage-store", {"s.yaml": "name: s\nbase: {data: {name: synthetic}}\nfactors: {model.dropout: [0.0]}\n",
                             "s.sqlite": b"SQLite format 3\x00" + b"\xff" * 500},
     ["study", "{tmp}/s.yaml", "--store", "{tmp}/s.sqlite"], "--store"),
    ("study-zero-workers", {"s.yaml": "name: s\nfactors: {model.dropout: [0.0]}\n"},
     ["study", "{tmp}/s.yaml", "--workers", "0"], "--workers"),
]


@pytest.mark.parametrize(("files", "argv", "field"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_hostile_input_exits_2_with_a_short_message_naming_the_field(tmp_path, monkeypatch, capsys, files, argv,
                                                                       field):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content.replace("{tmp}", str(tmp_path)), encoding="utf-8")
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"error: {field}: "), err[:500]
    assert "Traceback" not in err and "internal error" not in err
    assert len(err) < 1100, f"{len(err)} characters: a message is a paragraph"  # alias bombs, 5000-digit numbers
    assert not (tmp_path / MARKER).exists()
    assert not (tmp_path / "runs").exists(), "refused input must not leave a run directory"


# -- hostile files ---------------------------------------------------------------------------------------------------
def _touch(path: str) -> None:
    Path(path).write_text("code from a pickle ran")


class _Payload:
    """Unpickling this calls ``_touch(path)``: what a booby-trapped checkpoint does (``os.system`` in the wild)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (_touch, (self.path,))


SMALL = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16", "epochs=2",
         "data.batch_size=64", "schedule.name=constant"]


def test_a_checkpoint_with_a_pickle_payload_is_refused_and_never_runs(tmp_path, capsys):
    """weights_only=True: the payload is refused as a damaged file; resuming falls back to the previous checkpoint,
    and with both files booby-trapped it stops with exit code 2 naming them. The payload is live: a plain
    ``torch.load`` (weights_only=False) runs it — checked last."""
    run = tmp_path / "run"
    reference = train(None, overrides=SMALL, run_dir=run)
    marker = tmp_path / MARKER
    torch.save({"epoch": 2, "step": 1, "model": _Payload(marker), "optimizer": {}}, run / LATEST)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpt = load_checkpoint(run)
    assert ckpt["epoch"] == 1 and not marker.exists()
    assert any("damaged checkpoint ignored" in str(w.message) and LATEST in str(w.message) for w in caught)
    assert main(["train", "--resume", str(run), "--json", "--quiet", "--store", "none"]) == 0
    resumed = last_json(capsys.readouterr().out)
    assert resumed["test_loss"] == reference.test_loss and resumed["history"][-1]["epoch"] == 2
    assert not marker.exists()

    torch.save(_Payload(marker), run / LATEST)
    torch.save([_Payload(marker)], run / PREVIOUS)
    assert main(["train", "--resume", str(run), "--quiet", "--store", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no loadable checkpoint") and LATEST in err and PREVIOUS in err
    assert not marker.exists()

    (run / "payload.pt").write_bytes((run / LATEST).read_bytes())   # (torch.load reads *.safetensors as safetensors)
    torch.load(run / "payload.pt", weights_only=False)  # the control: a pickle loaded without weights_only runs it
    assert marker.exists()


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:tests.test_hostile._touch ['{marker}']",
    "!!python/object/new:tests.test_hostile._touch ['{marker}']",
    "!!python/name:tests.test_hostile._touch",
    "!!python/module:os",
])
def test_yaml_python_tags_never_construct_anything(tmp_path, capsys, tag):
    """In a recipe, a study spec, a study's base recipe and a --set value: refused (or kept as plain text), never
    constructed."""
    marker = tmp_path / MARKER
    value = tag.replace("{marker}", str(marker))
    (tmp_path / "r.yaml").write_text(f"name: {value}\n")
    (tmp_path / "s.yaml").write_text(f"name: {value}\nfactors: {{model.dropout: [0.0]}}\n")
    (tmp_path / "b.yaml").write_text(f"epochs: {value}\n")
    (tmp_path / "sb.yaml").write_text("name: s\nbase: b.yaml\nfactors: {model.dropout: [0.0, 0.5]}\n")
    for argv, field in ((["train", str(tmp_path / "r.yaml")], "recipe"), (["study", str(tmp_path / "s.yaml")], "study"),
                        (["study", str(tmp_path / "sb.yaml")], "base"),
                        (["train", "--set", f"epochs={value}"], "epochs")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {field}: "), err
    assert not marker.exists()


def test_a_user_model_is_imported_only_when_the_recipe_names_it(tmp_path, monkeypatch):
    """A module on the path whose import leaves a mark: naming it anywhere but ``model.python`` (run name, model
    name, data name or path, init scheme, a study's factors, a study's ``model.python`` before training) never
    imports it; ``model.python`` does, and the user's network is the one trained."""
    module = "tricklab_hostile_user_model"
    marker = tmp_path / MARKER
    (tmp_path / f"{module}.py").write_text(
        "from pathlib import Path\nimport torch\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "def make(input_shape, num_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], 7), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(7, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    ref = f"{module}:make"
    small = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=4", "epochs=1"]
    train(None, overrides=[*small, f"name={ref}"], runs_root=tmp_path / "runs")
    for overrides in ([f"model.name={ref}"], [f"data.name={module}"], ["data.name=npz", f"data.path={module}.py"],
                      [f"init.scheme={ref}"]):
        with pytest.raises(InputError):
            train(None, overrides=overrides, runs_root=tmp_path / "runs")
    with pytest.raises(InputError):
        study_from_dict({"name": "s", "factors": {"model.name": [ref, "mlp"]}})
    spec = study_from_dict({"name": "s", "base": {"data": {"name": "synthetic"}, "model": {"python": ref}},
                            "factors": {"model.dropout": [0.0, 0.5]}})
    assert spec.trial_recipe(spec.baseline_arm(), 0).model.python == ref  # validated, not imported
    assert not marker.exists() and module not in sys.modules

    result = train(None, overrides=[*small, f"model.python={ref}"], runs_root=tmp_path / "runs")
    assert marker.exists() and module in sys.modules
    assert result.num_params == (2 * 7 + 7) + (7 * 3 + 3)  # the user's network was trained, not a built-in one
    os.remove(marker)


def test_long_values_in_messages_are_shortened_short_ones_kept_exact():
    with pytest.raises(InputError) as err:
        study_from_dict({"name": "s", "factors": {"model.dropout": [0.5, 0.5]}})
    assert "value 0.5 is listed twice" in str(err.value)
    with pytest.raises(InputError) as err:
        study_from_dict({"name": "s", "factors": {"model.dropout": [0.0]}, "seeds": [list(range(10_000))]})
    assert len(str(err.value)) < 600 and "..." in str(err.value)
    with pytest.raises(InputError) as err:
        study_from_dict({"name": "s", "factors": {"model.dropout": [0.0]}, "metric": "x" * 100_000})
    assert len(str(err.value)) < 600
