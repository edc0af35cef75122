"""The docs/LESSONS.md tables from a `tricklab lesson all --json` run: old verdicts beside new ones, with why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_lesson_pooling import _batchnorm
from tricklab.lessons.markdown import main, old_verdicts, read_results, render

DOCS = Path(__file__).resolve().parents[1] / "docs" / "LESSONS.md"


def test_the_old_verdicts_are_read_from_the_verdict_table_of_docs_lessons():
    old = old_verdicts(DOCS.read_text(encoding="utf-8"))
    assert len(old) == 18 and set(old.values()) <= {"supported", "not_supported", "inconclusive",
                                                   "no_meaningful_difference"}
    assert old_verdicts("| 3 | `batchnorm` | claim | **not_supported** | −0.0059 | [a, b] | 8 |") == \
        {"batchnorm": "not_supported"}                  # the table of the records before 2026-12
    assert old_verdicts("| 4 | `batchnorm` | **no_meaningful_difference** | not_supported | +0.00087 |") == \
        {"batchnorm": "no_meaningful_difference"}       # the table verdict_table writes
    assert old_verdicts("| 4 | `batchnorm` | 4 × 8, 15 | 80 | 281.6 | 306.9 |") == {}   # the runtime table


def test_a_changed_verdict_says_why_from_the_new_numbers(tmp_path, capsys):
    r = _batchnorm(tmp_path, 0.08, -0.02).to_json()     # MLP and CNN disagree: the pool gives no verdict
    out = tmp_path / "all.jsonl"
    out.write_text("progress line\n" + json.dumps([r]) + "\n", encoding="utf-8")
    assert read_results(out.read_text(encoding="utf-8"), "x")[0]["lesson"] == "batchnorm"
    text = render([r], {"batchnorm": "not_supported"})
    row = next(line for line in text.splitlines() if line.startswith("| 1 | `batchnorm`"))
    assert "**inconclusive** | not_supported" in row and "disagree in sign" in row and "mlp +0.07" in row
    assert "| `batchnorm` | untuned" in text      # judged here without the LR grid
    assert "| 359–1,000 |" in render([{**r, "test_examples": [359, 1000]}], {})
    smoke = {**r, "verdict": "smoke"}
    assert "gives no verdict" in render([smoke], {"batchnorm": "not_supported"})
    assert main([str(out), "--old", str(DOCS)]) == 0
    assert "## Verdicts" in capsys.readouterr().out


def test_input_that_is_not_a_lesson_run_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("no json here\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "tricklab.lessons.markdown", str(bad)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "bad.txt" in done.stderr and "Traceback" not in done.stderr
    missing = subprocess.run([sys.executable, "-m", "tricklab.lessons.markdown", str(tmp_path / "none.json")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
