"""Run a lesson: its studies (resumable, any executor), the mechanism views, the checks, the explanation.

A lesson that tunes (``Lesson.tune``, ``lessons.tuning``) runs up to three studies in the same store: the arms at
the LRs the lesson gives them (the "shared LR" study, also the secondary check ``shared_lr``), the per-arm LR grid
on the tuning seeds (``…-tune-HASH``), and the arms whose chosen LR is not their own at that LR (``…-tuned-HASH``);
the claim is judged on the arms at their chosen LRs. Every study draws its split per seed (``split_per_seed``).

Every lesson runs as an ordinary study in one store (``OUT/lessons.sqlite``, trial run directories under
``OUT/runs``), named ``lesson-<name>-<quick|full>-<hash>``: the hash is that of the study's resolved arms and
seeds, so re-running the same lesson reuses every finished trial, and a lesson whose definition changed (a new
tricklab) becomes a new study instead of clashing with the stored one.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tricklab.lessons.derived_data import derived_data
from tricklab.lessons.lesson import Lesson, TrialView
from tricklab.lessons.mechanism import InitProfile, TrainingProfile, init_profiles, training_profile
from tricklab.lessons.outcome import LessonResult, evaluate_checks, measure_values, trial_test_sizes
from tricklab.lessons.paths import DEFAULT_OUT, STORE_FILE
from tricklab.lessons.tuning import TunedArm, choose, tuned_study, tuning_study
from tricklab.lessons.words import tuning_sentences
from tricklab.report.study_report import write_study_report
from tricklab.store.sqlite import FINISHED
from tricklab.study.runner import StudyOutcome, run_study
from tricklab.study.spec import StudySpec, study_from_dict
from tricklab.study.stats import summarize

SHARED_LR = "shared_lr"


def lesson_spec(lesson: Lesson, quick: bool, out_dir: str | os.PathLike[str]) -> StudySpec:
    """The validated study of ``lesson`` (derived data written into ``out_dir`` first), named with its hash."""
    data_path = str(derived_data(lesson.derived_data, out_dir)) if lesson.derived_data else None
    stem = f"lesson-{lesson.name}-{'quick' if quick else 'full'}"
    draft = study_from_dict(lesson.study_data(quick, name=stem, data_path=data_path))
    return study_from_dict(lesson.study_data(quick, name=f"{stem}-{draft.spec_hash()[:8]}", data_path=data_path))


def run_lesson(lesson: Lesson, *, quick: bool = False, out_dir: str | os.PathLike[str] = DEFAULT_OUT,
               executor: str = "local", workers: int | None = None, progress: bool = True,
               study_report: bool | None = None) -> LessonResult:
    """Run (or complete) ``lesson`` and judge its claim. ``study_report``: also write the study's own report
    (default: for the full variant)."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = lesson_spec(lesson, quick, out)
    store = out / STORE_FILE
    with_report = (not quick) if study_report is None else study_report

    def study(s: StudySpec, how: str, report: bool = False) -> StudyOutcome:
        return run_study(s, store=store, executor=how, workers=workers, runs_root=out / "runs", progress=progress,
                         report=write_study_report if report else None)

    outcome = study(spec, executor, with_report)
    init = _init_views(spec) if "init" in lesson.views else {}
    shared = _views(outcome.trials, init)
    trained_now = outcome.trained_now
    trials, tuned = shared, None
    if lesson.tune:
        grid = study(tuning_study(lesson, spec, quick), grid_executor(executor))
        trained_now += grid.trained_now
        tuned = choose(spec, _views(grid.trials, {}), quick)
        evaluation = tuned_study(spec, tuned)
        if evaluation is not None:
            at_best = study(evaluation, executor)
            trained_now += at_best.trained_now
            changed = {t.arm for t in tuned if t.changed}
            trials = [t for t in shared if t.arm not in changed] + _views(at_best.trials, init)
            order = {arm: i for i, arm in enumerate(spec.arm_names())}
            trials.sort(key=lambda t: (t.seed, order[t.arm]))
    training = {}
    if "training" in lesson.views:
        for arm in spec.arm_names():
            training[arm] = training_profile([str(t.result["run_dir"]) for t in trials
                                              if t.arm == arm and t.result and t.result.get("run_dir")])
    result = judge(lesson, quick, spec, trials, store=str(store), init=init, training=training,
                   shared=shared if lesson.tune else None, tuned=tuned)
    result.trained_now, result.study_report = trained_now, outcome.report
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = _cpu_seconds() - cpu_started
    return result


def _init_views(spec: StudySpec) -> dict[str, dict[int, InitProfile]]:
    """Each arm's profile at initialisation per seed, on the trial's own recipe (its seed and its split)."""
    out: dict[str, dict[int, InitProfile]] = {}
    for seed in spec.seed_list():
        for arm, by_seed in init_profiles({a: spec.trial_recipe(a, seed) for a in spec.arm_names()}, [seed]).items():
            out.setdefault(arm, {}).update(by_seed)
    return out


def grid_executor(executor: str) -> str:
    """The LR grid trains as populations (the members of one arm and seed share data and model) where the user
    chose the default local executor; another choice (ray, population) is the user's."""
    return "population" if executor == "local" else executor


def _views(rows: list[dict[str, Any]], init: dict[str, dict[int, InitProfile]]) -> list[TrialView]:
    return [TrialView(t["arm"], int(t["seed"]), t["status"], t["result"] if t["status"] in FINISHED else None,
                      init.get(t["arm"], {}).get(int(t["seed"]))) for t in rows]


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children (the trial workers): on a machine
    shared with other jobs, wall time says how busy the machine was, CPU time what the lesson cost."""
    try:
        import resource
    except ImportError:  # Windows: this process only
        return time.process_time()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def judge(lesson: Lesson, quick: bool, spec: StudySpec, trials: list[TrialView], *, store: str = "",
          init: dict[str, dict[int, InitProfile]] | None = None,
          training: dict[str, TrainingProfile | None] | None = None, shared: list[TrialView] | None = None,
          tuned: list[TunedArm] | None = None) -> LessonResult:
    """Measure every trial, evaluate every check and write the explanation — from ``trials`` alone, so the
    same trials always give the same verdict and the same words. A tuned lesson: ``trials`` are the arms at their
    tuned LRs (``tuned``), ``shared`` the arms at one shared LR — judged as the secondary check ``shared_lr``."""
    values = {m.key: measure_values(m, trials) for m in lesson.measures()}
    summaries = {key: {arm: summarize(list(vals.get(arm, {}).values())) for arm in spec.arm_names()}
                 for key, vals in values.items()}
    sizes = trial_test_sizes(trials)
    items = [(c, values[c.measure.key], sizes) for c in lesson.checks]
    if shared is not None:   # the claim's test once more, every arm at the LR the lesson gives it
        p = lesson.primary
        check = replace(p, name=SHARED_LR, question=f"{p.question} — at one shared learning rate (untuned)", pool=())
        items.insert(1, (check, measure_values(p.measure, shared), trial_test_sizes(shared)))
    checks = evaluate_checks(items)
    result = LessonResult(lesson, quick, spec, store, trials, values, summaries, checks, sizes=sizes, tuned=tuned,
                          shared_trials=list(shared or []), init=dict(init or {}), training=dict(training or {}))
    result.explanation = lesson.explain(result) + tuning_sentences(result)
    return result
