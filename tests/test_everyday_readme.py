"""The README is the whole manual (issue 18 item 9): its Python examples run as written, it links nothing outside
the repository, its two commands are the ones CI runs, and every recipe key is in its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def recipe_keys() -> list[str]:
    from pydantic import BaseModel

    from tricklab.recipe import Recipe

    keys = []
    for name, field in Recipe.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys += [f"{name}.{key}" for key in section.model_fields]
        else:
            keys.append(name)
    return keys


def test_the_readme_has_python_examples_of_every_kind():
    assert len(PYTHON_BLOCKS) >= 4
    text = "\n".join(PYTHON_BLOCKS)
    for use in ("tl.train(", "tl.Trainer(", "tl.watch(", "pl.Trainer(", "tl.DoctorCallback()", "tl.EMA("):
        assert use in text, use


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_each_python_example_runs_as_written(tmp_path, index):
    """Each block in a fresh interpreter, in an empty directory holding the repository's recipes (as a clone
    does); what it writes (runs/) stays in that directory."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    script = tmp_path / "example.py"
    script.write_text(PYTHON_BLOCKS[index], encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"README python block {index + 1}:\n{PYTHON_BLOCKS[index]}\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), "each example prints what it got"


def test_no_link_leads_outside_the_repository():
    assert not re.search(r"https?://", README)
    for target in re.findall(r"\]\(([^)]+)\)", README):
        assert (ROOT / target).exists(), target
    for path in re.findall(r"`((?:docs|bench|examples|recipes|tests|tricklab)/[\w./-]+)`", README):
        assert (ROOT / path).exists(), path
    assert "../" not in README


def test_the_two_commands_come_first_and_are_what_ci_runs():
    first, second = BASH_BLOCKS[0].strip(), BASH_BLOCKS[1].strip()
    assert README.index("## The two commands") < README.index("```")
    assert first.endswith("pip install -e . && tricklab train") and first.startswith("python3 -m venv .venv")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extras = re.search(r'pip install -e "(\.\[[^\]]+\])"', second).group(1)
    assert f'pip install -q -e "{extras}"' in ci
    assert "pip install torch==2.13.0" in second and "pip install -q torch==2.13.0" in ci
    assert second.endswith('python -m pytest -q -m "slow or not slow"')
    assert 'python -m pytest -q -m "slow or not slow"' in ci


def test_every_recipe_key_is_in_the_table():
    table = README[README.index("## Every trick by its recipe key"):]
    missing = [key for key in recipe_keys() if f"`{key}`" not in table]
    assert not missing, f"recipe keys without a row in the README's table: {missing}"


def test_every_command_is_shown():
    for command in ("train", "doctor", "study", "report", "lesson", "tricks"):
        assert f"tricklab {command}" in "\n".join(BASH_BLOCKS), command
