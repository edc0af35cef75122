"""A study's results as plain files for other tools: the trials as CSV, the summary as a markdown table.

- ``<study>-trials.csv``: one row per trial (study, arm, seed, status, attempts, executor, run id, every metric
  a run records, the first line of the error). Numbers are written in full precision, a missing value is
  empty. A text cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a
  tab or a carriage return) is prefixed with ``'`` (OWASP "CSV injection"): study and arm names are user text.
- ``<study>-summary.md``: per metric the table of the HTML report (means, 95% t and bootstrap intervals, paired
  differences with p-values and the verdict words). User text is escaped for markdown and for the HTML that
  markdown renderers pass through.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from tricklab.fsutil import atomic_write_text
from tricklab.report.study_data import (
    SUMMARY_COLUMNS,
    StudyData,
    as_number,
    direction,
    load_study_data,
    summary_rows,
)
from tricklab.study.spec import METRICS

RESULT_COLUMNS = (*METRICS, "epochs")
"""Every number a trial's ``RunResult`` holds that a study can compare (``METRICS``), and the epochs run."""


def csv_columns(data: StudyData) -> list[str]:
    """The CSV header: identity and state of the trial, the study's metrics first, then every other one."""
    metrics = [*data.shape.metric_names, *(m for m in RESULT_COLUMNS if m not in data.shape.metric_names)]
    return ["study", "arm", "seed", "status", "attempts", "executor", "run_id", *metrics, "error"]


def _cell(value: Any) -> Any:
    """A CSV cell: numbers as they are, None empty, text defused against spreadsheet formulas."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if as_number(value) is not None else ""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def trials_csv(data: StudyData) -> str:
    """The CSV text: a header and one row per trial (arm order of the design, then seed)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = csv_columns(data)
    writer.writerow(columns)
    for t in data.trials:
        result = t.get("result") or {}
        error = (t.get("error") or "").strip().splitlines()
        row = {"study": data.name, "arm": t["arm"], "seed": t["seed"], "status": t["status"],
               "attempts": t["attempts"], "executor": t["executor"], "run_id": t["run_id"],
               "error": error[0] if error else None}
        writer.writerow([_cell(row[c] if c in row else result.get(c)) for c in columns])
    return buf.getvalue()


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_text(value: Any) -> str:
    """Text safe in a markdown table cell: markdown marks and ``|`` backslash-escaped, ``<``/``>``/``&`` as HTML
    entities (renderers pass raw HTML through), line breaks as spaces."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def summary_markdown(data: StudyData) -> str:
    """The summary tables of the report as markdown (one per metric), with the words of each verdict."""
    shape = data.shape
    lines = [f"# Study {md_text(shape.name)}", "",
             f"Baseline: {md_text(shape.baseline)} · arms: {len(shape.arms)} · seeds: {len(shape.seeds)} · "
             f"trials finished: {len(data.trials) - data.count('failed', 'pending', 'running')} of "
             f"{len(data.trials)} ({data.count('failed')} failed). Intervals are 95%; Δ is arm − baseline, "
             "paired by seed; p (Holm) is the paired-t p adjusted across the arms; \"no detectable effect\" "
             "means the 95% interval of Δ contains 0.", ""]
    for note in data.notes:
        lines += [f"> {md_text(note)}", ""]
    for metric in shape.metric_names:
        lines += [f"## {md_text(metric)}" + (f" ({direction(metric)})" if direction(metric) else ""), ""]
        lines.append("| " + " | ".join(SUMMARY_COLUMNS.values()) + " |")
        lines.append("|" + "|".join("---" for _ in SUMMARY_COLUMNS) + "|")
        for row in summary_rows(data, metric):
            # only the arm name is user text; the other cells are numbers and words this package wrote
            cells = [md_text(row[key]) if key == "arm" else row[key].replace("|", "\\|") for key in SUMMARY_COLUMNS]
            if row["arm"] == shape.baseline:
                cells[0] = f"**{cells[0]}** (baseline)"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def export_csv(store_path: str | Path, study_id: str, out: str | Path) -> Path:
    """Write the trials of study ``study_id`` of the store at ``store_path`` as CSV to ``out`` (atomically)."""
    target = Path(out)
    atomic_write_text(target, trials_csv(load_study_data(store_path, study_id)))
    return target


def export_markdown(store_path: str | Path, study_id: str, out: str | Path) -> Path:
    """Write the summary tables of study ``study_id`` as markdown to ``out`` (atomically)."""
    target = Path(out)
    atomic_write_text(target, summary_markdown(load_study_data(store_path, study_id)))
    return target
