"""``run_study``: train every missing trial of a study, keep each one safe in the store, compare the arms.

Resumable by construction: the store knows every (arm, seed) and its state. A re-run trains only trials that
are not finished (pending, running when a driver was killed, or failed with retries left); a finished trial
— completed, stopped early or diverged — is never trained again. Each trial's outcome, run row, metric
series and alarms are written in one SQLite transaction by the driver alone, so a SIGKILL of the driver at
any moment loses at most the trials in flight (whose run directories keep their checkpoints: the next run
resumes them) and never corrupts the store.

One driver per study and store: a second ``run_study`` of the same study on the same store, while the first
runs, is refused with an ``InputError`` (an operating-system lock beside the store, released when the driver
ends, even by SIGKILL). Other studies may run on the same store at the same time (SQLite serialises writes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tricklab.errors import InputError, Interrupted
from tricklab.fsutil import LockBusy, exclusive_lock
from tricklab.provenance import __version__, git_revision
from tricklab.recipe import recipe_to_dict
from tricklab.recipe.identity import SHORT, recipe_hash, with_absolute_paths
from tricklab.store import Store
from tricklab.store.sqlite import FINISHED, check_store_file
from tricklab.study.executor_registry import make_executor
from tricklab.study.executors import Executor, TrialOutcome, TrialTask
from tricklab.study.progress import StudyProgress
from tricklab.study.spec import StudySpec
from tricklab.study.stats import StudyStats, compare_arms

ReportWriter = Callable[[Path, str], "os.PathLike[str]"]
"""``(store, study name) -> path``: writes a study's report from the store (``tricklab.report.write_study_report``)."""


@dataclass
class StudyOutcome:
    spec: StudySpec
    store: str
    trials: list[dict[str, Any]]
    stats: dict[str, StudyStats] = field(default_factory=dict)   # metric → statistics
    report: str | None = None
    trained_now: int = 0
    seconds: float = 0.0
    note: str | None = None   # said when nothing was left to train (``nothing_left``)

    @property
    def counts(self) -> dict[str, int]:
        finished = sum(t["status"] in FINISHED for t in self.trials)
        failed = sum(t["status"] == "failed" for t in self.trials)
        return {"trials_total": len(self.trials), "trials_completed": finished, "trials_failed": failed}

    def to_json(self) -> dict[str, Any]:
        primary = self.spec.metrics()[0]
        stats = self.stats.get(primary)
        arms = []
        for arm in self.spec.arm_names():
            s = stats.summaries.get(arm) if stats else None
            arms.append({"name": arm, "mean": _num(s.mean) if s else None, "ci_low": _num(s.ci_low) if s else None,
                         "ci_high": _num(s.ci_high) if s else None, "n": s.n if s else 0})
        out: dict[str, Any] = {**self.counts, "store": self.store, "report": self.report, "study": self.spec.name,
                               "metric": primary, "baseline": self.spec.baseline_arm(), "arms": arms,
                               "trained_now": self.trained_now, "seconds": self.seconds}
        if stats:
            out["differences"] = {arm: d.to_dict() for arm, d in stats.differences.items()}
        if self.note:
            out["note"] = self.note
        return out


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _slug(text: str, limit: int = 80) -> str:
    """A readable directory name for ``text``: letters, digits and ``._=-`` kept, anything else ``_``, no leading
    dot (never ``.`` or ``..``, never hidden), at most ``limit`` characters. Not unique: see ``trial_run_dir``."""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", text)[:limit]
    return re.sub(r"^\.", "_", slug) or "_"


def trial_run_dir(root: Path, study: str, arm: str, seed: int, trial_hash: str) -> Path:
    """``ROOT/STUDY/ARM/seed-N-HASH``: the names are for people (cut, sanitised, so two arms may share one), the
    trial hash (``recipe.identity.recipe_hash`` of the trial's recipe, seed included) makes the leaf one trial's
    alone."""
    return root / _slug(study) / _slug(arm, 60) / f"seed-{seed}-{trial_hash[:SHORT]}"


def trial_tasks(spec: StudySpec, root: Path, trials: list[tuple[str, int]], *,
                tensorboard: bool = False) -> list[TrialTask]:
    """Each trial's task: its resolved recipe (data path absolute), the recipe's hash, its run directory."""
    tasks = []
    for arm, seed in trials:
        recipe = with_absolute_paths(recipe_to_dict(spec.trial_recipe(arm, seed)))
        digest = recipe_hash(recipe)
        tasks.append(TrialTask(arm, seed, recipe, str(trial_run_dir(root, spec.name, arm, seed, digest)), digest,
                               tensorboard=tensorboard))
    return tasks


def check_before_work(tasks: list[TrialTask]) -> None:
    """Refuse, before the first trial starts, what would make trials fail one by one: each distinct recipe (less
    its seed) passes ``preflight`` (memory, batch norm), each distinct data source is loaded once (a missing
    file, NaN rows, one class) and each recipe's model, optimizer and schedule are built once on it
    (``check_buildable``: a user factory that raises, the wrong output, a schedule the run is too short for). An ``InputError`` names the field and the first arm that has the problem. One source's data is held
    at a time."""
    from tricklab.recipe import recipe_from_dict
    from tricklab.train.preflight import preflight
    from tricklab.train.run import check_buildable, prepare_data

    def without(section: dict[str, Any], *keys: str) -> str:
        return json.dumps({k: v for k, v in section.items() if k not in keys}, sort_keys=True)

    by_source: dict[str, dict[str, TrialTask]] = {}   # data source → distinct recipes (less seed and name) on it
    for task in tasks:
        by_source.setdefault(without(task.recipe["data"], "batch_size"), {}).setdefault(
            without(task.recipe, "seed", "name"), task)
    for recipes in by_source.values():
        task = next(iter(recipes.values()))
        try:
            for task in recipes.values():
                preflight(recipe_from_dict(task.recipe))
            task = next(iter(recipes.values()))
            splits = prepare_data(recipe_from_dict(task.recipe))
            for task in recipes.values():
                check_buildable(recipe_from_dict(task.recipe), splits)
        except InputError as err:
            raise InputError(err.field, f"{err.problem} [arm {task.arm!r}; checked before any trial started]",
                             err.allowed) from None


def trial_run_id(task: TrialTask) -> str:
    """The trial's id in the store's ``runs`` table: its hash (64 bits shown), unique across studies because a
    trial's recipe holds its study's name."""
    return task.trial_hash[:16]


def study_lock_path(store: Path, study: str) -> Path:
    """The lock file of one study in one store, beside the store (``.tricklab.sqlite.dropout-1a2b3c4d.lock``)."""
    digest = hashlib.sha256(study.encode("utf-8")).hexdigest()[:8]
    return store.with_name(f".{store.name}.{_slug(study)[:40]}-{digest}.lock")


def run_study(spec: StudySpec, *, store: str | os.PathLike[str] = "tricklab.sqlite", executor: str | None = None,
              workers: int | None = None, runs_root: str | os.PathLike[str] | None = None, progress: bool = True,
              report: ReportWriter | Literal[False] | None = None, address: str | None = None,
              rerun: bool = False, tensorboard: bool = False) -> StudyOutcome:
    """Run (or complete) ``spec`` into ``store``; returns counts and per-arm statistics.

    The study layer never imports the report layer (DESIGN.md): a caller that wants the HTML report writes it
    from the store once this returns, or passes ``report``, a function ``(store, study name) -> path`` such as
    ``tricklab.report.write_study_report``, called after the trials are stored; its path is ``outcome.report``
    (the ``report`` of ``tricklab study --json``). ``None`` or ``False``: no report. ``address``: the Ray cluster
    (``--executor ray``), before the spec's ``address`` and ``RAY_ADDRESS``. ``rerun``: train every trial again,
    finished or not — the store forgets their outcomes and their run directories are set aside
    (``NAME.rerun-N``, kept). When nothing was left to train, ``outcome.note`` says so and how to train again.
    ``tensorboard``: each trial logs live to ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUNS/STUDY`` groups
    them by arm); not with the population executor, whose members train as one stacked model."""
    if report is True:
        raise TypeError("run_study(report=True): the study layer does not write reports; pass "
                        "report=tricklab.report.write_study_report (or write it from the store afterwards)")
    started = time.perf_counter()
    store_path = Path(store)
    root = (Path(runs_root) if runs_root is not None else store_path.parent / "runs").resolve()
    executor_name = executor or spec.executor
    if tensorboard and executor_name == "population":
        raise InputError("--tensorboard", "the population executor trains its members as one stacked model, "
                                          "without the Trainer's callbacks, so it cannot log them to TensorBoard",
                         allowed="--executor local or ray with --tensorboard, or population without it")
    runner = make_executor(executor_name, workers=workers, address=address or spec.address)
    every = trial_tasks(spec, root, spec.trials(), tensorboard=tensorboard)   # each recipe resolved and hashed once
    check_before_work(every)   # before the store or a run directory exists
    try:
        check_store_file(store_path)   # a foreign or impossible store: refused before the lock file is made
        with exclusive_lock(study_lock_path(store_path, spec.name), wait=False), Store(store_path) as db:
            if rerun:
                _start_over(spec, db, every)
            final, trained_now = _run_trials(spec, db, every, runner, progress)
    except LockBusy as busy:
        raise InputError("study", f"study {spec.name!r} in {store_path} is being run by another process "
                                  f"({busy.holder or 'unknown'}); let it finish, then run the same command again to "
                                  "complete whatever is missing",
                         allowed="one `tricklab study` process per study and store (another study, or another "
                                 "--store, may run at the same time)") from None
    outcome = StudyOutcome(spec, str(store_path), final, trained_now=trained_now)
    if not trained_now:
        outcome.note = nothing_left(spec, final, store_path, runner.name)
    outcome.stats = study_statistics(spec, final)
    if report:
        outcome.report = str(report(store_path, spec.name))
    outcome.seconds = time.perf_counter() - started
    return outcome


def _start_over(spec: StudySpec, db: Store, every: list[TrialTask]) -> None:
    """``--rerun``: every trial pending again in the store, every run directory of a trial set aside (renamed
    ``NAME.rerun-N``), so that no trial resumes a finished checkpoint."""
    db.check()
    db.ensure_study(spec.name, spec.spec_hash(), spec.self_contained(), spec.trials(), version=__version__,
                    git_rev=git_revision())
    for task in every:
        run_dir = Path(task.run_dir)
        if os.path.lexists(run_dir):
            n = 1
            while os.path.lexists(run_dir.with_name(f"{run_dir.name}.rerun-{n}")):
                n += 1
            run_dir.rename(run_dir.with_name(f"{run_dir.name}.rerun-{n}"))
    db.reset_trials(spec.name)


def nothing_left(spec: StudySpec, trials: list[dict[str, Any]], store: Path, executor: str) -> str:
    """What to tell a user whose study had nothing left to train: that every trial is done (or failed too often
    to be retried), with which executor, and how to train them again."""
    done = sum(t["status"] in FINISHED for t in trials)
    failed = len(trials) - done
    used = sorted({t["executor"] for t in trials if t.get("executor")})
    before = f" by the {' and '.join(used)} executor{'s' if len(used) > 1 else ''}" if used else ""
    if failed:
        head = (f"{done} of {len(trials)} trials are done and {failed} failed {spec.max_retries + 1} times (they "
                "are not retried again)")
    else:
        head = f"all {len(trials)} trials are done"
    other = f" with the {executor} executor" if used and used != [executor] else ""
    return (f"{head}, trained earlier{before} and kept in {store}; nothing was trained now. To train every trial "
            f"again{other}, run the same command with --rerun")


def _run_trials(spec: StudySpec, db: Store, every: list[TrialTask], runner: Executor, progress: bool
                ) -> tuple[list[dict[str, Any]], int]:
    """Train the study's missing trials (of ``every`` task) into ``db`` (the caller holds the study's lock);
    returns the final trial rows and how many trials were trained now."""
    trials = spec.trials()
    db.check()  # a damaged store is refused before any compute is spent on it
    db.ensure_study(spec.name, spec.spec_hash(), spec.self_contained(), trials, version=__version__,
                    git_rev=git_revision())
    state = {(t["arm"], t["seed"]): t for t in db.trials(spec.name)}
    todo = [(arm, seed) for arm, seed in trials
            if state[(arm, seed)]["status"] not in FINISHED
            and not (state[(arm, seed)]["status"] == "failed" and state[(arm, seed)]["attempts"] > spec.max_retries)]
    wanted = set(todo)
    tasks = [t for t in every if (t.arm, t.seed) in wanted]
    by_trial = {(t.arm, t.seed): t for t in tasks}
    view = StudyProgress(len(trials), len(trials) - len(todo), enabled=progress)

    def on_start(task: TrialTask) -> None:
        db.start_trial(spec.name, task.arm, task.seed, runner.name)
        view.started(task.arm, task.seed)

    def on_done(outcome: TrialOutcome) -> None:
        task = by_trial[(outcome.arm, outcome.seed)]
        outcome = _belongs_to(outcome, task)
        result = outcome.result
        run_id = None if result is None else trial_run_id(task)
        db.finish_trial(spec.name, outcome.arm, outcome.seed, status=outcome.status, run_id=run_id,
                        trial_hash=task.trial_hash,
                        run_name=f"{spec.name}/{outcome.arm}", recipe=(result or {}).get("recipe"),
                        run_dir=(result or {}).get("run_dir"), result=result, metrics=outcome.metrics,
                        alarms=(result or {}).get("alarms", []), error=outcome.error, version=__version__,
                        git_rev=git_revision())
        view.finished(outcome.arm, outcome.seed, outcome.status, (result or {}).get(spec.metrics()[0]))

    try:
        with view:
            runner.run(tasks, on_start, on_done)
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM (the CLI turns it into this): the executor ended its workers
        stopped = db.interrupt_trials(spec.name)
        done = sum(t["status"] in FINISHED for t in db.trials(spec.name))
        raise Interrupted(f"study {spec.name!r}: {done} of {len(trials)} trials are in {db.path}, {stopped} running "
                          "trial(s) marked interrupted (their checkpoints are kept)") from None
    return db.trials(spec.name), len(tasks)


def _belongs_to(outcome: TrialOutcome, task: TrialTask) -> TrialOutcome:
    """``outcome``, or a failure when its result was trained from another recipe than the trial's: a result is
    stored under a trial only if its recipe hashes to the trial's hash (whatever an executor did)."""
    recipe = (outcome.result or {}).get("recipe")
    if outcome.result is None or (isinstance(recipe, dict) and recipe_hash(recipe) == task.trial_hash):
        return outcome
    return TrialOutcome(outcome.arm, outcome.seed, "failed",
                        error=f"the result in {task.run_dir} was trained from another recipe than the trial's "
                              f"(hash {task.trial_hash[:SHORT]}); it was not stored")


def study_statistics(spec: StudySpec, trials: list[dict[str, Any]]) -> dict[str, StudyStats]:
    """Per metric: per-arm summaries and paired differences against the baseline (seeds pair the trials).

    Failed trials have no value; a diverged trial keeps whatever its result says (None for test metrics)."""
    out = {}
    for metric in spec.metrics():
        values: dict[str, dict[int, float]] = {arm: {} for arm in spec.arm_names()}
        for t in trials:
            v = (t["result"] or {}).get(metric) if t["status"] in FINISHED else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                values[t["arm"]][t["seed"]] = float(v)
        out[metric] = compare_arms(values, spec.baseline_arm(), metric=metric)
    return out
