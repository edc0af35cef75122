"""The report of one study: one self-contained HTML file that says what each arm is worth, with its evidence.

Sections: the summary table per metric (mean ± std, 95% t and bootstrap intervals, range, and against the
baseline the paired difference with its interval, p-values and the verdict in words), a forest plot of the
differences, learning curves per arm over seeds, steps and seconds to the spec's target, the per-layer views of
one representative trial (the run report's own), alarms and failures across trials, the trial table, the spec
and the environment. Beside the HTML it writes ``<study>-trials.csv`` and ``<study>-summary.md`` (``export``).

Every number comes from ``StudyData`` (``study_statistics`` of the runner); every string a user controls (study,
arm and layer names, alarm messages, error text) is escaped by the ``html`` helpers.
"""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path
from typing import Any

import yaml

from tricklab.errors import InputError
from tricklab.fsutil import atomic_write_text
from tricklab.report import plots
from tricklab.report.export import summary_markdown, trials_csv
from tricklab.report.html import (
    Markup,
    esc,
    image,
    join,
    key_value_table,
    not_recorded,
    note,
    page,
    paragraph,
    preformatted,
    section,
    status_badge,
    subsection,
    table,
    tag,
)
from tricklab.report.outputs import claim_output
from tricklab.report.run_files import read_run_dir
from tricklab.report.run_report import probe_views
from tricklab.report.study_data import (
    StudyData,
    as_number,
    direction,
    file_stem,
    fmt_value,
    load_study_data,
    summary_rows,
)
from tricklab.store.sqlite import FINISHED
from tricklab.study.stats import steps_to_target
from tricklab.tricks.monitor import Monitor

MAX_ALARM_ROWS = 500          # a diverging grid can raise thousands; the table shows the first ones
ERROR_HEAD, ERROR_TAIL = 1200, 1200   # characters of a failed trial's error kept from its start and its end
SUMMARY_HEADERS = ["arm", "n", "mean ± std", "95% CI of the mean", "min – max", "Δ vs baseline", "p (paired t)",
                   "p (Wilcoxon)", "p (Holm)", "effect"]
SUMMARY_CAPTION = ("n: trials with a finite value (of the arm's trials). 95% CI: t, the Student-t interval of the mean; "
                   "bootstrap, the percentile bootstrap (10,000 resamples). Δ: arm − baseline, averaged over the seeds "
                   "both ran (paired), with the same two 95% intervals. p (Holm): the paired-t p adjusted across the arms "
                   "compared with the baseline. \"no detectable effect\": the 95% interval of Δ contains 0.")


def report_paths(study_id: str, out: str | Path | None, store_path: str | Path) -> tuple[Path, Path, Path]:
    """(HTML, trials CSV, summary markdown) paths: ``out`` or ``<store dir>/<study>-report.html``, the others
    beside it."""
    stem = file_stem(study_id)
    html_path = Path(out) if out is not None else Path(store_path).parent / f"{stem}-report.html"
    return html_path, html_path.parent / f"{stem}-trials.csv", html_path.parent / f"{stem}-summary.md"


# -- sections ----------------------------------------------------------------------------------------------------
def _arm_cell(data: StudyData, arm: str) -> Markup:
    if arm == data.shape.baseline:
        return join([tag("span", arm, class_="baseline"), " ", tag("span", "(baseline)", class_="muted")])
    return join([arm])


def _lines(*lines: tuple[str, str]) -> Markup:
    """Stacked one-line values in one cell, ``(label, value)`` each; the bootstrap line muted, "—" lines left out."""
    kept = [(label, value) for label, value in lines if value != "—"] or [("", "—")]
    return join(tag("div", f"{label} {value}".strip(), class_="nowrap muted" if label == "bootstrap" else "nowrap")
                for label, value in kept)


def _summary_cells(data: StudyData, row: dict[str, str]) -> list[Any]:
    """The HTML cells of one ``summary_rows`` row: t and bootstrap intervals stacked in one cell each."""
    if row["diff"] == "baseline":
        diff: Any = "baseline"
    else:
        diff = _lines(("", row["diff"]), ("t", row["diff_ci"]), ("bootstrap", row["diff_boot"]))
    return [_arm_cell(data, row["arm"]), tag("span", row["n"], class_="nowrap"), row["mean_std"],
            _lines(("t", row["ci_t"]), ("bootstrap", row["ci_boot"])), row["range"], diff, row["p_t"],
            row["p_wilcoxon"], row["p_holm"], row["effect"]]


def _summary(data: StudyData) -> Markup:
    shape = data.shape
    finished, failed = data.count(*FINISHED), data.count("failed")
    waiting, diverged = data.count("pending", "running"), data.count("diverged")
    parts: list[Any] = [note(n) for n in data.notes]
    if waiting:
        parts.append(note(f"{waiting} trial(s) have not finished: the study is incomplete; re-run `tricklab study` "
                          "with the same spec and store to complete it."))
    parts.append(paragraph(f"{len(shape.arms)} arm(s) × {len(shape.seeds)} seed(s): {finished} of {len(data.trials)} "
                           f"trials finished ({diverged} diverged), {failed} failed. Baseline: {shape.baseline}. "
                           f"Design: {shape.design}."))
    for metric in shape.metric_names:
        rows = [_summary_cells(data, row) for row in summary_rows(data, metric)]
        heading = metric + (f" — {direction(metric)}" if direction(metric) else "")
        parts.append(subsection(heading, table(SUMMARY_HEADERS, rows, class_="data stats")))
    parts.append(paragraph(SUMMARY_CAPTION, "muted"))
    return join(parts)


def _differences(data: StudyData) -> Markup:
    shape = data.shape
    others = [a for a in shape.arms if a != shape.baseline]
    if not others:
        return not_recorded("Differences", "the study has one arm: there is nothing to compare it with")
    parts: list[Any] = []
    for metric in shape.metric_names:
        stats = data.stats.get(metric)
        better_up = Monitor(metric).higher_is_better
        rows = []
        for arm in others:
            d = stats.differences.get(arm) if stats else None
            color = plots.UNCLEAR
            if d is not None and d.verdict in ("higher", "lower"):
                color = plots.BETTER if (d.verdict == "higher") == better_up else plots.WORSE
            rows.append(plots.ForestRow(arm, *((d.mean_diff, d.ci_low, d.ci_high) if d else (None, None, None)),
                                        color=color))
        png = plots.forest_plot(rows, f"{metric}: arm − baseline ({shape.baseline}), paired by seed",
                                f"difference in {metric} (point: mean; line: 95% t interval)")
        if png:
            parts.append(image(png, f"forest plot of the paired differences in {metric} against the baseline"))
    parts.append(paragraph("Right of the dashed line: the arm's value is larger than the baseline's. Green: better "
                           "than the baseline, red: worse (significant after Holm's correction); gray: no "
                           "detectable difference. A line that crosses 0 is no detectable effect.", "muted"))
    return join(parts)


def _curves(data: StudyData) -> Markup:
    arms = []
    for arm in data.shape.arms:
        label = f"{arm} (baseline)" if arm == data.shape.baseline else arm
        histories = [r.get("history") for r in data.results(arm)]
        arms.append((label, [[h for h in hist if isinstance(h, dict)] for hist in histories if isinstance(hist, list)]))
    png = plots.arm_curves(arms)
    if png is None:
        return not_recorded("Learning curves", "no finished trial has a per-epoch history")
    return join([image(png, "learning curves per arm: validation accuracy, validation loss, training loss"),
                 paragraph("Line: the mean over the arm's seeds at each epoch; band: the lowest to the highest seed "
                           "(min–max over seeds, not a confidence interval). Non-finite values (a diverged epoch) "
                           "are left out; a run that stopped early counts for the epochs it reached."
                           + (f" With more than {plots.MAX_LEGEND_ARMS} arms the legend is left out; the colours "
                              "follow the arms' order in the summary table." if len(arms) > plots.MAX_LEGEND_ARMS
                              else ""), "muted")])


def _target(data: StudyData) -> Markup:
    target = data.shape.target
    if target is None:
        return paragraph("The spec sets no target; add `target: {metric: val_accuracy, value: 0.95}` to measure the "
                         "steps and seconds each arm needs to reach it.", "missing")
    rows = []
    for arm in data.shape.arms:
        results = data.results(arm)
        reached = [r for r in (steps_to_target([h for h in res.get("history") or [] if isinstance(h, dict)],
                                               target.metric, target.value, target.better_is_higher)
                               for res in results) if r is not None]
        rows.append([_arm_cell(data, arm), f"{len(reached)} of {len(results)}",
                     fmt_value(statistics.median(r.step for r in reached)) if reached else "—",
                     fmt_value(statistics.median(r.seconds for r in reached)) if reached else "—",
                     fmt_value(min(r.step for r in reached)) if reached else "—"])
    goal = f"{target.metric} {'≥' if target.better_is_higher else '≤'} {target.value:g}"
    return join([paragraph(f"Target: {goal}."),
                 table(["arm", "reached (finished trials)", "median steps", "median seconds", "fewest steps"], rows),
                 paragraph("Steps: optimizer steps at the end of the first epoch that reached the target (the metric "
                           "is evaluated once per epoch, so this is the resolution); seconds: the training time of "
                           "the epochs up to it. Medians over the trials that reached it.", "muted")])


def _representative(data: StudyData) -> tuple[dict[str, Any], Path] | None:
    """The baseline's seed-0 trial (else its lowest seed) that has a run directory, with the directory."""
    candidates = [t for t in data.arm_trials(data.shape.baseline) if (t.get("result") or {}).get("run_dir")]
    if not candidates:
        return None
    chosen = next((t for t in candidates if t["seed"] == 0), min(candidates, key=lambda t: t["seed"]))
    return chosen, locate_run_dir(chosen["result"]["run_dir"], data.store_path)


def locate_run_dir(run_dir: str, store_path: Path) -> Path:
    """Where a trial's run directory is now. The runner records it as it was given, often relative to the
    directory the study ran in (``st/runs/STUDY/ARM/seed-0`` for ``--store st/tricklab.sqlite``); from elsewhere
    it is found under the store's directory by its trailing parts (``runs/STUDY/ARM/seed-0``)."""
    path = Path(run_dir)
    if path.is_absolute() or path.is_dir():
        return path
    for i in range(len(path.parts)):
        candidate = store_path.parent.joinpath(*path.parts[i:])
        if candidate.is_dir():
            return candidate
    return path


def _layers(data: StudyData) -> Markup:
    found = _representative(data)
    if found is None:
        return not_recorded("Per-layer diagnostics", "no trial of the baseline arm has a run directory")
    trial, path = found
    intro = paragraph(f"A representative trial: the baseline arm {trial['arm']}, seed {trial['seed']} "
                      f"(run directory {path}).", "muted")
    if not path.is_dir():
        return join([intro, not_recorded("Per-layer diagnostics", "the run directory is not there (moved or "
                                                                  "deleted since the study ran)")])
    try:
        run = read_run_dir(path)
    except InputError as err:
        return join([intro, not_recorded("Per-layer diagnostics", f"the run directory cannot be read ({err})")])
    if run.probes is None:
        return join([intro, not_recorded("Per-layer diagnostics", "the trial was not watched by the doctor "
                                                                  "(no probes.jsonl in its run directory)")])
    grads, acts, ratios = probe_views(run.probes)
    return join([intro, *(note(n) for n in run.notes), subsection("Gradient norm per layer", grads),
                 subsection("Activation statistics per layer", acts), subsection("Update ratio per layer", ratios)])


def _alarms(data: StudyData) -> Markup:
    """Alarms of every trial; the same alarm (kind, layer, step, message) raised by several seeds of one arm is one
    row listing those seeds, so a warning every trial raises (e.g. too many parameters) does not fill the page."""
    grouped: dict[tuple[str, str, str, str, str], list[int]] = {}
    total = 0
    for t in data.trials:
        for a in data.alarms.get((t["arm"], t["seed"]), []):
            step = a.get("step")
            key = (str(a.get("kind", "—")), t["arm"], str(a.get("layer") or "—"), "run" if step is None else str(step),
                   str(a.get("message", "")))
            grouped.setdefault(key, []).append(t["seed"])
            total += 1
    if not grouped:
        return paragraph("No trial raised an alarm.", "muted")
    kinds: dict[str, set[tuple[str, int]]] = {}
    for (kind, arm, *_), seeds in grouped.items():
        kinds.setdefault(kind, set()).update((arm, seed) for seed in seeds)
    counts = "; ".join(f"{kind}: {len(trials)} trial(s)" for kind, trials in sorted(kinds.items()))
    rows = [[kind, arm, ", ".join(str(s) for s in sorted(set(seeds))), layer, step, message]
            for (kind, arm, layer, step, message), seeds in grouped.items()]
    parts: list[Any] = [paragraph(f"{total} alarm(s) — {counts}. Seeds of one arm that raised the same alarm share "
                                  "a row.")]
    if len(rows) > MAX_ALARM_ROWS:
        parts.append(note(f"Only the first {MAX_ALARM_ROWS} of {len(rows)} rows are listed; the store holds all."))
    parts.append(table(["kind", "arm", "seeds", "layer", "step", "message"], rows[:MAX_ALARM_ROWS]))
    return join(parts)


def _error_text(error: str) -> str:
    if len(error) <= ERROR_HEAD + ERROR_TAIL:
        return error
    cut = len(error) - ERROR_HEAD - ERROR_TAIL
    return f"{error[:ERROR_HEAD]}\n… ({cut:,} characters left out) …\n{error[-ERROR_TAIL:]}"


def _failures(data: StudyData) -> Markup:
    failed = [t for t in data.trials if t["status"] == "failed" or t.get("error")]
    if not failed:
        return paragraph("No trial failed.", "muted")
    rows = [[t["arm"], t["seed"], status_badge(t["status"]), t["attempts"], preformatted(_error_text(t["error"] or ""))]
            for t in failed]
    return join([paragraph("A failed trial raised an error and has no result (a diverged trial is a result, not a "
                           "failure). Re-running the study retries it up to the spec's max_retries.", "muted"),
                 table(["arm", "seed", "status", "attempts", "error"], rows)])


def _trials(data: StudyData) -> Markup:
    metrics = list(data.shape.metric_names)
    rows = []
    for t in data.trials:
        result = t.get("result") or {}
        wall = as_number(result.get("wall_seconds"))
        rows.append([t["arm"], t["seed"], status_badge(t["status"]), t["attempts"], t["executor"] or "—",
                     *(fmt_value(result.get(m)) for m in metrics), result.get("epochs", "—"),
                     "—" if wall is None else f"{wall:.1f}", _run_id(t)])
    return table(["arm", "seed", "status", "attempts", "executor", *metrics, "epochs", "wall seconds", "run id"], rows)


def _run_id(trial: dict[str, Any]) -> Markup:
    """The full run id on one line; hovering shows the trial's run directory."""
    if not trial.get("run_id"):
        return esc("—")
    return tag("span", trial["run_id"], class_="nowrap", title=trial.get("run_dir") or None)


def _spec(data: StudyData) -> Markup:
    stored = data.record.get("spec")
    text = yaml.safe_dump(stored, sort_keys=False, allow_unicode=True) if isinstance(stored, dict) else str(stored)
    return join([paragraph(f"As stored in {data.store_path} (spec hash {data.record.get('spec_hash', '—')}).",
                           "muted"), preformatted(text)])


def _when(timestamp: Any) -> str:
    x = as_number(timestamp)
    return "—" if x is None else dt.datetime.fromtimestamp(x).astimezone().isoformat(timespec="seconds")


def _environment(data: StudyData) -> Markup:
    from tricklab.provenance import environment

    rows: list[tuple[Any, Any]] = [
        ("report made", dt.datetime.now().astimezone().isoformat(timespec="seconds")),
        ("study created", _when(data.record.get("created"))),
        ("study run by tricklab", data.record.get("version") or "—"),
        ("study git revision", data.record.get("git_rev") or "—"),
        ("store", str(data.store_path)),
        *((f"report: {k}", "—" if v is None else v) for k, v in environment().items()),
    ]
    return join([paragraph("The tricklab that ran the study (from the store) and the software and machine that made "
                           "this report; each trial's device is in its result.", "muted"), key_value_table(rows)])


# -- the page ----------------------------------------------------------------------------------------------------
def render_study_report(data: StudyData) -> str:
    """The HTML text of the report of ``data``."""
    alarms = sum(len(v) for v in data.alarms.values())
    failures = sum(t["status"] == "failed" or bool(t.get("error")) for t in data.trials)
    parts = [
        ("summary", "Summary", "Summary", _summary(data)),
        ("differences", "Differences", "Paired differences against the baseline", _differences(data)),
        ("curves", "Learning curves", "Learning curves per arm", _curves(data)),
        ("target", "Target", "Steps and time to the target", _target(data)),
        ("layers", "Per-layer", "Per-layer diagnostics of a representative trial", _layers(data)),
        ("alarms", f"Alarms ({alarms})", "Alarms across trials", _alarms(data)),
        ("failures", f"Failures ({failures})", "Failed trials", _failures(data)),
        ("trials", "Trials", "Trials", _trials(data)),
        ("spec", "Spec", "Study spec", _spec(data)),
        ("environment", "Environment", "Environment", _environment(data)),
    ]
    sections = [(anchor, label, section(anchor, title, body)) for anchor, label, title, body in parts]
    shape = data.shape
    metric = shape.metric_names[0] if shape.metric_names else "—"
    subtitle = (f"{len(shape.arms)} arm(s) × {len(shape.seeds)} seed(s) · metric {metric} · baseline {shape.baseline}"
                f" · store {data.store_path.name}")
    return page(f"tricklab study report — {shape.name or data.record.get('id')}", subtitle, sections)


def build_study_report(store_path: str | Path, study_id: str) -> str:
    """The HTML text of the report of study ``study_id`` in the store at ``store_path``."""
    return render_study_report(load_study_data(store_path, study_id))


def write_study_report(store_path: str | Path, study_id: str, out: str | Path | None = None, *,
                       force: bool = False) -> Path:
    """Write the report (default ``<store dir>/<study>-report.html``) and, beside it, ``<study>-trials.csv`` and
    ``<study>-summary.md``; each file atomically. Returns the HTML path.

    Each of the three may replace only an earlier output of its kind, unless ``force``, and never the store
    (``outputs.claim_output``); all three are checked before the first is written."""
    html_path, csv_path, md_path = report_paths(study_id, out, store_path)
    for path, kind in ((html_path, "html"), (csv_path, "csv"), (md_path, "markdown")):
        claim_output(path, "--out", kind, force=force, inputs=[store_path])
    data = load_study_data(store_path, study_id)
    atomic_write_text(html_path, render_study_report(data))
    atomic_write_text(csv_path, trials_csv(data))
    atomic_write_text(md_path, summary_markdown(data))
    return html_path
