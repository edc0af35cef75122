"""Hostile user models and checkpoints (issue 14): a model that cannot be trained as the data's classifier, and a
checkpoint whose tensors do not fit the model it is resumed into.

User models (``model.python``) are written into the test's directory as modules of their own (one name per case:
``sys.modules`` keeps what was imported) and tried on two-dimensional spirals with 3 classes. Every failure —
including ``sys.exit()`` in the factory or in ``forward`` — is exit 2 naming ``model.python``, the factory and the
user's own line. Checkpoints come from one tiny real run and are then edited: a tensor of another shape, a missing
or an unexpected one, optimizer state that does not fit. Both files unfit: exit 2 naming the file and the tensor;
only the latest: the previous one is used and the unfit file kept as ``checkpoint.safetensors.damaged``.

Each hostile case runs through the harness of ``tests/hostile.py``.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import last_json
from tests.hostile import Case, check
from tests.test_faults import _same_run
from tricklab.cli.main import main
from tricklab.train import train
from tricklab.train.checkpoint import LATEST, PREVIOUS, encode, read_checkpoint_file

TINY = ["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=16", "epochs=2",
        "schedule.name=constant"]
SPIRALS = ["train", "--store", "none", "--quiet", "--set", "data.name=synthetic"]
LEFT_BEHIND = ("runs",)
"""A user model is built after ``train`` made the run directory (tricklab/train/run.py): a refused model leaves it.
See ``test_a_refused_user_model_leaves_no_run_directory``."""


def user_model(case_id: str, code: str, factory: str = "make", field: str = "model.python") -> Case:
    """A case that trains the user model ``code`` (module ``um_<case id>``; ``torch``, ``nn`` and ``sys`` imported)."""
    module = "um_" + case_id.replace("-", "_")
    source = "import sys\n\nimport torch\nfrom torch import nn\n\n" + textwrap.dedent(code)
    return Case(case_id, [*SPIRALS, "--set", f"model.python={module}:{factory}"], field,
                files={f"{module}.py": source}, may_change=LEFT_BEHIND)


NET = """
class Net(nn.Module):
    def __init__(self, inputs, outputs):
        super().__init__()
        self.fc = nn.Linear(inputs, outputs)

    def forward(self, x):
        {forward}
"""


def net(forward: str, make: str = "return Net(input_shape[0], num_classes)") -> str:
    """A module with a one-layer ``Net`` whose forward is ``forward`` and a factory ``make`` whose body is ``make``."""
    return NET.replace("{forward}", forward) + f"\n\ndef make(input_shape, num_classes):\n    {make}\n"


USER_MODELS = [
    user_model("no-parameters", "def make(input_shape, num_classes):\n    return nn.Flatten()\n"),
    user_model("only-buffers", """
        class Fixed(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("w", torch.zeros(2, 3))

            def forward(self, x):
                return x @ self.w

        def make(input_shape, num_classes):
            return Fixed()
    """),
    user_model("all-frozen", net("return self.fc(x)", make="return Net(2, num_classes).requires_grad_(False)")),
    user_model("wrong-input-size", net("return self.fc(x)", make="return Net(7, num_classes)")),
    user_model("conv-on-vectors", "def make(input_shape, num_classes):\n"
                                  "    return nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))\n"),
    user_model("tuple-output", net("return self.fc(x), x")),
    user_model("dict-output", net("return {'logits': self.fc(x)}")),
    user_model("list-output", net("return [self.fc(x)]")),
    user_model("none-output", net("self.fc(x)")),
    user_model("wrong-number-of-classes", net("return self.fc(x)", make="return Net(2, num_classes + 2)")),
    user_model("one-dimensional-output", net("return self.fc(x).sum(dim=1)")),
    user_model("extra-output-dimension", net("return self.fc(x)[..., None].expand(-1, -1, 2)")),
    user_model("integer-logits", net("return self.fc(x).round().long()")),
    user_model("float64-parameters", net("return self.fc(x)", make="return Net(2, num_classes).double()")),
    user_model("float16-parameters", net("return self.fc(x)", make="return Net(2, num_classes).half()")),
    user_model("forward-raises", net("raise ValueError('this net expects images')")),
    user_model("forward-calls-sys-exit", net("sys.exit(3)")),
    user_model("factory-calls-sys-exit-0", "def make(input_shape, num_classes):\n    sys.exit(0)\n"),
    user_model("factory-raises-system-exit", "def make(input_shape, num_classes):\n    raise SystemExit('bye')\n"),
    user_model("factory-raises", "def make(input_shape, num_classes):\n    return {'a': 1}['width']\n"),
    user_model("factory-returns-the-class", net("return self.fc(x)", make="return Net")),
    user_model("sys-exit-at-import", "sys.exit('not a library')\n"),
    user_model("syntax-error", "def make(input_shape, num_classes)\n    return None\n"),
]


# -- checkpoints ---------------------------------------------------------------------------------------------------
def _edit(path: Path, change: Callable[[dict], None]) -> None:
    ckpt = read_checkpoint_file(path)
    change(ckpt)
    path.write_bytes(encode(ckpt))


def wider_first_layer(ckpt: dict) -> None:
    ckpt["model"]["body.layer1.weights.weight"] = torch.zeros(32, 2)


def missing_output_layer(ckpt: dict) -> None:
    del ckpt["model"]["out.weight"]


def an_extra_layer(ckpt: dict) -> None:
    ckpt["model"]["body.layer2.weights.weight"] = torch.zeros(16, 16)


def optimizer_state_of_another_shape(ckpt: dict) -> None:
    ckpt["optimizer"]["state"][0]["exp_avg"] = torch.zeros(5)


def one_parameter_group(ckpt: dict) -> None:
    groups = ckpt["optimizer"]["param_groups"]
    groups[0]["params"] += groups.pop(1)["params"]


def no_random_state(ckpt: dict) -> None:
    ckpt["rng"] = torch.zeros(3)


CHECKPOINT_EDITS = [wider_first_layer, missing_output_layer, an_extra_layer, optimizer_state_of_another_shape,
                    one_parameter_group, no_random_state]
CHECKPOINTS = [Case(f"both-checkpoints-{edit.__name__.replace('_', '-')}", ["train", "--resume", "{tmp}/run",
                    "--store", "none", "--quiet"], "--resume", may_change=("run/.lock",)) for edit in CHECKPOINT_EDITS]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """A finished tiny run with checkpoints of epochs 2 (latest) and 1 (previous), and its result."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    return run, train(None, overrides=TINY, run_dir=run).to_json()


def run_user_model(case_id: str, tmp_path: Path, monkeypatch, capsys, **changes) -> str:
    """``check`` the user-model case ``case_id`` with its module importable from ``tmp_path`` (imported afresh);
    returns stderr."""
    case = dataclasses.replace(next(c for c in USER_MODELS if c.id == case_id), **changes)
    module = next(iter(case.files)).removesuffix(".py")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ beside the user's module
    err = check(case, tmp_path, monkeypatch, capsys)
    assert module in err, "the message names the user's module"
    return err


# -- the tests -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", USER_MODELS, ids=[c.id for c in USER_MODELS])
def test_a_hostile_user_model_exits_2_naming_the_factory(case, tmp_path, monkeypatch, capsys):
    run_user_model(case.id, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("case, edit", list(zip(CHECKPOINTS, CHECKPOINT_EDITS)), ids=[c.id for c in CHECKPOINTS])
def test_checkpoints_that_do_not_fit_the_model_exit_2_naming_file_and_tensor(case, edit, tiny_run, tmp_path,
                                                                             monkeypatch, capsys):
    def unfit_run(tmp: Path) -> None:
        shutil.copytree(tiny_run[0], tmp / "run")
        for name in (LATEST, PREVIOUS):
            _edit(tmp / "run" / name, edit)

    err = check(dataclasses.replace(case, setup=unfit_run), tmp_path, monkeypatch, capsys)
    assert f"{tmp_path / 'run' / LATEST}: does not fit the model" in err and str(tmp_path / "run" / PREVIOUS) in err
    assert not list((tmp_path / "run").glob("*.damaged")), "nothing is set aside when no file fits"


@pytest.mark.parametrize("edit", [wider_first_layer, one_parameter_group])
def test_an_unfit_latest_checkpoint_falls_back_to_the_previous_one(edit, tiny_run, tmp_path, capsys):
    """RELIABILITY.md row 9 for a file that loads but does not fit: a warning naming it, resumed from
    ``checkpoint.prev.safetensors`` (epoch 1, so epoch 2 is trained again), the unfit file kept as ``.damaged``, and the
    result of the uninterrupted run."""
    source, expected = tiny_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    _edit(run / LATEST, edit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--resume", str(run), "--json", "--quiet", "--store", "none"]) == 0
    message = " ".join(str(w.message) for w in caught)
    assert f"{run / LATEST}: does not fit the model" in message and PREVIOUS in message
    out = last_json(capsys.readouterr().out)
    _same_run(out, expected)
    assert (run / f"{LATEST}.damaged").is_file()
    assert read_checkpoint_file(run / PREVIOUS)["epoch"] == 1  # the good copy was not pushed out


def test_the_message_names_the_tensor_and_both_shapes(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    for name in (LATEST, PREVIOUS):
        _edit(run / name, wider_first_layer)
    assert main(["train", "--resume", str(run), "--quiet", "--store", "none"]) == 2
    err = capsys.readouterr().err
    assert "tensor 'body.layer1.weights.weight' is (32, 2) in the checkpoint but (16, 2) in the model" in err


def test_the_message_points_at_the_users_own_line(tmp_path, monkeypatch, capsys):
    """Not tricklab's frames, not torch's: the line of the user's forward that failed, with its code."""
    err = run_user_model("wrong-input-size", tmp_path, monkeypatch, capsys)
    source = tmp_path / "um_wrong_input_size.py"
    line = source.read_text().splitlines().index("        return self.fc(x)") + 1
    assert f"(at {source}:{line}: return self.fc(x))" in err, err
    assert "tricklab/" not in err and "torch/" not in err
    assert "mat1 and mat2 shapes cannot be multiplied" in err and "inputs of shape (2, 2)" in err


@pytest.mark.parametrize("case_id, words", [
    ("factory-calls-sys-exit-0", "SystemExit(0)"), ("forward-calls-sys-exit", "SystemExit(3)"),
    ("float64-parameters", "float64 parameters or buffers; tricklab's data and tricks are float32: return "
                           "model.float()"),
    ("wrong-number-of-classes", "5 outputs per example for 3 classes"), ("tuple-output", "returned a tuple"),
    ("all-frozen", "all frozen (requires_grad=False)"), ("no-parameters", "without parameters"),
    ("syntax-error", "SyntaxError"),
])
def test_the_message_says_what_is_wrong(case_id, words, tmp_path, monkeypatch, capsys):
    assert words in run_user_model(case_id, tmp_path, monkeypatch, capsys)


def test_the_trial_forward_leaves_the_seeded_run_unchanged(tmp_path, monkeypatch):
    """The check runs the model once; it must not move the random number generator or batch norm's statistics, so
    a user model trains exactly as it did before the check existed (compared with the same net built in-line)."""
    (tmp_path / "um_seeded.py").write_text(textwrap.dedent("""
        from torch import nn

        def make(input_shape, num_classes):
            return nn.Sequential(nn.Linear(input_shape[0], 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(16, num_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from tricklab.models import load_user_model

    torch.manual_seed(7)
    model = load_user_model("um_seeded:make", (2,), 3)
    after = torch.rand(3)
    torch.manual_seed(7)
    import um_seeded

    reference = um_seeded.make((2,), 3)
    assert torch.equal(after, torch.rand(3)), "the RNG moved"
    assert model.training
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_refused_user_model_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    run_user_model("no-parameters", tmp_path, monkeypatch, capsys, may_change=())
