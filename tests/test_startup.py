"""``import tricklab`` and ``tricklab [COMMAND] --help`` import no torch (DESIGN.md: the CLI starts at once), the
lazy public names all resolve, and no public name hides a module. Timings are in ``bench/startup.py``, not here.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import subprocess
import sys
import types

import pytest

import tricklab

# What the help path must not import: torch, and the other libraries that take a noticeable fraction of a second.
HEAVY = {"torch", "numpy", "scipy", "pydantic", "matplotlib", "sklearn"}


def commands() -> list[str]:
    from tricklab.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def imported_modules(*args: str, cwd) -> set[str]:
    """Every module ``python -X importtime ARGS`` imported (from its ``import time:`` lines on stderr)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "tricklab" in names   # the lines were read: the package itself is among them
    return names


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_the_cli_has_the_commands_of_the_design():
    assert {"train", "doctor", "study", "report", "lesson", "tricks"} <= set(commands())


@pytest.mark.parametrize("command", [None, *commands()])
def test_help_imports_no_torch(command, tmp_path):
    argv = ["-m", "tricklab", *([command] if command else []), "--help"]
    assert heavy(imported_modules(*argv, cwd=tmp_path)) == []


def test_import_tricklab_imports_no_torch(tmp_path):
    code = ("import sys, tricklab; assert 'torch' not in sys.modules, 'torch'; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def packages() -> list[types.ModuleType]:
    found = [tricklab]
    for info in pkgutil.walk_packages(tricklab.__path__, "tricklab."):
        if info.ispkg:
            found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("package", packages(), ids=lambda p: p.__name__)
def test_every_public_name_resolves_and_none_is_a_submodule_name(package):
    """Each name of ``__all__`` resolves (lazily or not) and is listed by ``dir``; a public name that is also a
    submodule's name is that submodule (anything else would be rebound when the submodule is imported); after
    importing every submodule, each submodule's name still gives the module."""
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)} - {"__main__"}
    for name in getattr(package, "__all__", ()):
        value = getattr(package, name)
        assert name in dir(package)
        if name in submodules:
            assert value is importlib.import_module(f"{package.__name__}.{name}"), f"{package.__name__}.{name}"
    for name in submodules:
        module = importlib.import_module(f"{package.__name__}.{name}")
        assert getattr(package, name) is module, f"{package.__name__}.{name} is not the module"


def test_tricklab_train_is_the_package_and_calling_it_trains(monkeypatch):
    """``import tricklab.train`` gives the package; ``tl.train`` is that package and ``tl.train(...)`` forwards to
    ``tricklab.train.run.train`` with every argument (DESIGN.md: ``tl.train(recipe) -> RunResult``)."""
    import tricklab.train
    from tricklab.train import run

    assert isinstance(tricklab.train, types.ModuleType) and tricklab.train is sys.modules["tricklab.train"]
    assert tricklab.train.__name__ == "tricklab.train" and callable(tricklab.train)
    assert inspect.signature(tricklab.train) == inspect.signature(run.train)
    assert tricklab.train.train is run.train and tricklab.train.Trainer.__module__ == "tricklab.train.trainer"
    calls = []
    monkeypatch.setattr(tricklab.train, "train", lambda *a, **kw: calls.append((a, kw)) or "result")
    assert tricklab.train("recipe.yaml", overrides=["seed=1"]) == "result"
    assert calls == [(("recipe.yaml",), {"overrides": ["seed=1"]})]


def test_the_public_names_of_the_design_are_there():
    for name in ("Recipe", "train", "tricks", "watch", "Doctor", "Study", "load_recipe", "load_study", "Store",
                 "Trainer", "RunResult", "Callback", "TrainState", "InputError", "TricklabError", "__version__"):
        assert hasattr(tricklab, name), name
    assert tricklab.Study.__name__ == "StudySpec"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        tricklab.nonexistent  # noqa: B018


def test_the_lesson_names_need_no_lesson_built():
    """``tricklab lesson --help`` lists the names without building the lessons; they are the catalog's, in order."""
    from tricklab.lessons.registry import LESSONS, NAMES, lesson_names

    assert lesson_names() == list(NAMES) == [lesson.name for lesson in LESSONS.values()]


def test_every_executor_name_makes_its_executor():
    from tricklab.errors import InputError
    from tricklab.study.executor_registry import EXECUTORS, make_executor

    assert [make_executor(name, workers=1).name for name in EXECUTORS] == list(EXECUTORS)
    with pytest.raises(InputError, match="unknown executor"):
        make_executor("slurm")
