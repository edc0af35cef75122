"""One study read back from a store for its report and exports: the spec, the trials, the statistics.

The store keeps the spec as ``StudySpec.model_dump(mode="json")``. Rebuilding it can fail where the study ran:
``base`` may be a recipe path relative to the study file, which the store does not know. Then the arms are
rebuilt with the recipe a trial actually ran as the base (identical outside the arms' own settings), and if
even that fails, the report falls back to the stored dict and takes the arms from the trials — and says so.

The statistics are ``study_statistics`` of the study runner, so the report shows exactly the numbers the
``tricklab study`` command printed. Numbers are written by ``fmt_value`` / ``fmt_p`` in every format (HTML,
markdown), so the same value reads the same everywhere.
"""

from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tricklab.errors import InputError
from tricklab.store import Store
from tricklab.store.sqlite import FINISHED
from tricklab.study.runner import study_statistics
from tricklab.study.spec import FULL_ARM, StudySpec, Target, higher_is_better, study_from_dict
from tricklab.study.stats import StudyStats, effect_words


@dataclass(frozen=True)
class StudyShape:
    """What a report needs to know of a study's design; quacks like ``StudySpec`` for ``study_statistics``."""

    name: str
    arms: tuple[str, ...]
    baseline: str
    metric_names: tuple[str, ...]
    seeds: tuple[int, ...]
    design: str
    target: Target | None

    def arm_names(self) -> list[str]:
        return list(self.arms)

    def baseline_arm(self) -> str:
        return self.baseline

    def metrics(self) -> list[str]:
        return list(self.metric_names)

    def seed_list(self) -> list[int]:
        return list(self.seeds)

    @classmethod
    def of(cls, spec: StudySpec) -> StudyShape:
        return cls(spec.name, tuple(spec.arm_names()), spec.baseline_arm(), tuple(spec.metrics()),
                   tuple(spec.seed_list()), spec.design, spec.target)


@dataclass
class StudyData:
    """A study as stored: its ``studies`` row, its shape, trials in arm-then-seed order, alarms and statistics.

    ``spec`` is the rebuilt ``StudySpec`` when that worked (else None); ``notes`` say what could not be read.
    """

    store_path: Path
    record: dict[str, Any]
    shape: StudyShape
    spec: StudySpec | None
    trials: list[dict[str, Any]]
    alarms: dict[tuple[str, int], list[dict[str, Any]]]
    stats: dict[str, StudyStats]
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.shape.name

    def arm_trials(self, arm: str) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["arm"] == arm]

    def count(self, *statuses: str) -> int:
        return sum(t["status"] in statuses for t in self.trials)

    def results(self, arm: str) -> list[dict[str, Any]]:
        """The results of the arm's finished trials (completed, stopped early or diverged), seed order."""
        return [t["result"] for t in self.arm_trials(arm) if t["status"] in FINISHED and t.get("result")]


# -- numbers as text ---------------------------------------------------------------------------------------------
def as_number(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, ±inf, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_value(value: Any) -> str:
    """A metric or difference: 4 significant digits (``0.9123``, ``-0.0125``), thousands as ``12,345``; "—"
    when undefined."""
    x = as_number(value)
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def fmt_p(value: Any) -> str:
    """A p-value with 3 significant digits; "—" when the test was not defined (too few seeds, no spread)."""
    x = as_number(value)
    return "—" if x is None else f"{x:.3g}"


def fmt_wilcoxon(p: Any, floor: Any) -> str:
    """The signed-rank p, with the smallest p the test could give when that is above 5% (too few seeds to
    reject, so a large p is no evidence of "no effect")."""
    f = as_number(floor)
    return fmt_p(p) + (f" (at least {f:.3g})" if f is not None and f > 0.05 else "")


def fmt_interval(low: Any, high: Any) -> str:
    return "—" if as_number(low) is None or as_number(high) is None else f"[{fmt_value(low)}, {fmt_value(high)}]"


def file_stem(study: str) -> str:
    """A study name as a safe file name part (the name may hold ``/``, ``<``, spaces)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", study).strip(".")[:80] or "study"


# -- the store ---------------------------------------------------------------------------------------------------
def _tables(path: Path) -> set[str] | None:
    """The table names of the SQLite file at ``path``, read without writing to it; None if it is not readable."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return None
    finally:
        db.close()


def open_store(path: Path) -> Store:
    """Open an existing store for reading; a damaged file (anywhere in it) raises the ``Store``'s ``InputError``
    naming it, a SQLite file that is not a tricklab store an ``InputError("PATH")`` — and nothing is written into
    it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("PATH", f"{path} is not a file; give a tricklab store (e.g. tricklab.sqlite)")
    tables = _tables(path)
    if tables is not None and not {"studies", "trials"} <= tables:
        raise InputError("PATH", f"{path} is a SQLite file but not a tricklab store (it has no studies table); "
                                 "give the --store of `tricklab study`, or a run directory")
    store = Store(path)  # an unreadable file: the Store names it in its own error
    try:
        store.check()  # a damaged page anywhere is refused, never reported as fewer trials
    except BaseException:
        store.close()
        raise
    return store


def choose_study(store_path: Path, study: str | None) -> str:
    """The study of the store to report: ``study`` when given, else the only one; errors name what exists."""
    with open_store(store_path) as db:
        names = db.studies()
    if not names:
        raise InputError("PATH", f"{store_path} holds no study yet; run `tricklab study SPEC.yaml --store "
                                 f"{store_path}` first")
    if study is not None:
        if study not in names:
            raise InputError("--study", f"{study!r} is not a study in {store_path}", allowed=names)
        return study
    if len(names) > 1:
        raise InputError("--study", f"{store_path} holds {len(names)} studies; name the one to report", allowed=names)
    return names[0]


# -- the spec ----------------------------------------------------------------------------------------------------
def _trial_recipe(stored: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A recipe a trial ran, to stand in for a base that cannot be found (leave_one_out: the full arm's)."""
    wanted = FULL_ARM if stored.get("design") == "leave_one_out" else None
    for t in trials:
        recipe = (t.get("result") or {}).get("recipe")
        if isinstance(recipe, dict) and recipe and (wanted is None or t["arm"] == wanted):
            return recipe
    return None


def rebuild_spec(stored: dict[str, Any], trials: list[dict[str, Any]], store_dir: Path
                 ) -> tuple[StudySpec | None, StudyShape, list[str]]:
    """The ``StudySpec`` of a stored spec dict, its shape and notes on how it was rebuilt (see module doc)."""
    arms_run = {t["arm"] for t in trials}
    attempts: list[tuple[dict[str, Any], Path | None]] = [(stored, store_dir), (stored, None)]
    stand_in = _trial_recipe(stored, trials)
    if stand_in is not None:
        attempts.append(({**stored, "base": stand_in}, None))
    problem = ""
    for i, (data, base_dir) in enumerate(attempts):
        try:
            spec = study_from_dict(data, base_dir)
        except InputError as err:
            problem = problem or str(err)
            continue
        if not arms_run <= set(spec.arm_names()):
            problem = problem or "the stored trials name arms the spec does not make"
            continue
        notes = [] if i < 2 else [f"The study's base recipe could not be read here ({problem}); the arms were "
                                  "rebuilt on the recipe a trial ran, which differs from the base only in the "
                                  "arms' own settings."]
        return spec, StudyShape.of(spec), notes
    return None, _shape_from_trials(stored, trials), [
        f"The stored spec could not be rebuilt ({problem}); arms are taken from the trials and the spec is shown "
        "as stored."]


def _shape_from_trials(stored: dict[str, Any], trials: list[dict[str, Any]]) -> StudyShape:
    arms = tuple(dict.fromkeys(t["arm"] for t in trials))
    baseline = stored.get("baseline")
    if not (isinstance(baseline, str) and baseline in arms):
        baseline = FULL_ARM if FULL_ARM in arms else (arms[0] if arms else "")
    metric = stored.get("metric") or "test_accuracy"
    metrics = tuple(metric) if isinstance(metric, list) else (str(metric),)
    try:
        target = Target.model_validate(stored["target"]) if isinstance(stored.get("target"), dict) else None
    except (InputError, ValueError):
        target = None
    seeds = tuple(sorted({int(t["seed"]) for t in trials}))
    return StudyShape(str(stored.get("name", "")), arms, baseline, metrics, seeds, str(stored.get("design", "grid")),
                      target)


# -- everything at once ------------------------------------------------------------------------------------------
def load_study_data(store_path: str | Path, study_id: str) -> StudyData:
    """Read study ``study_id`` from the store at ``store_path`` and compute its statistics."""
    store_path = Path(store_path)
    with open_store(store_path) as db:
        record = db.study(study_id)
        if record is None:
            raise InputError("--study", f"{study_id!r} is not a study in {store_path}", allowed=db.studies())
        trials = db.trials(study_id)
        alarms = {}
        for t in trials:
            stored = db.alarms(t["run_id"]) if t["run_id"] else []
            brief = (t.get("result") or {}).get("alarms")
            alarms[(t["arm"], t["seed"])] = stored or [a for a in brief or [] if isinstance(a, dict)]
    stored_spec = record["spec"] if isinstance(record.get("spec"), dict) else {}
    spec, shape, notes = rebuild_spec(stored_spec, trials, store_path.parent)
    order = {arm: i for i, arm in enumerate(shape.arms)}
    trials.sort(key=lambda t: (order.get(t["arm"], len(order)), t["seed"]))
    stats = study_statistics(spec if spec is not None else shape, trials) if shape.arms else {}  # type: ignore[arg-type]
    return StudyData(store_path, record, shape, spec, trials, alarms, stats, notes)


# -- the summary table as text (shared by the HTML report and the markdown export) ----------------------------
SUMMARY_COLUMNS = {
    "arm": "arm", "n": "n", "mean_std": "mean ± std", "ci_t": "95% CI (t)", "ci_boot": "95% CI (bootstrap)",
    "range": "min – max", "diff": "Δ vs baseline", "diff_ci": "Δ 95% CI (t)", "diff_boot": "Δ 95% CI (bootstrap)",
    "p_t": "p (paired t)", "p_wilcoxon": "p (Wilcoxon)", "p_holm": "p (Holm)", "effect": "effect",
}
"""Key → header of each column of the per-metric summary table."""


def summary_rows(data: StudyData, metric: str) -> list[dict[str, str]]:
    """One row per arm (design order) with every ``SUMMARY_COLUMNS`` cell as text; the baseline's comparison
    cells say "baseline". Numbers come from ``data.stats[metric]`` (``study_statistics``)."""
    stats = data.stats.get(metric)
    rows = []
    for arm in data.shape.arms:
        total = len(data.arm_trials(arm))
        s = stats.summaries.get(arm) if stats else None
        row = dict.fromkeys(SUMMARY_COLUMNS, "—")
        row["arm"] = arm
        row["n"] = "0" if s is None else (str(s.n) if s.n == total else f"{s.n} of {total}")
        if s is not None and s.n:
            row["mean_std"] = fmt_value(s.mean) + (f" ± {fmt_value(s.std)}" if s.std is not None else "")
            row["ci_t"] = fmt_interval(s.ci_low, s.ci_high)
            row["ci_boot"] = fmt_interval(s.boot_low, s.boot_high)
            row["range"] = f"{fmt_value(s.min)} – {fmt_value(s.max)}"
        if arm == data.shape.baseline:
            row.update(diff="baseline", effect="baseline")
        elif stats is not None and arm in stats.differences:
            d = stats.differences[arm]
            row["diff"] = fmt_value(d.mean_diff)
            row["diff_ci"] = fmt_interval(d.ci_low, d.ci_high)
            row["diff_boot"] = fmt_interval(d.boot_low, d.boot_high)
            row.update(p_t=fmt_p(d.p_t), p_wilcoxon=fmt_wilcoxon(d.p_wilcoxon, d.p_wilcoxon_floor),
                       p_holm=fmt_p(d.p_holm))
            row["effect"] = effect_words(d) + (f"; {d.missing} seed(s) without a pair" if d.missing else "")
        rows.append(row)
    return rows


def direction(metric: str) -> str:
    """"higher is better" / "lower is better" for a metric ("" when unknown)."""
    try:
        return "higher is better" if higher_is_better(metric) else "lower is better"
    except InputError:
        return ""
