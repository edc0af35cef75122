"""What a lesson measured: per-trial values, per-arm summaries, each check's oriented effect and verdict.

Everything here is computed from the trials in the store (and the init profiles), so re-reading a finished
lesson gives the same numbers as the run that trained it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tricklab.lessons.inference import Inference, infer
from tricklab.lessons.lesson import Check, Lesson, Measure, TrialView
from tricklab.lessons.mechanism import InitProfile, TrainingProfile
from tricklab.lessons.tuning import TunedArm, lr_of, multipliers
from tricklab.lessons.verdicts import INCONCLUSIVE, SMOKE, OrientedEffect, orient
from tricklab.study.spec import StudySpec
from tricklab.study.stats import ArmSummary, holm

SMOKE_NOTE = ("a quick run checks that the lesson's machinery runs (training, measures, statistics, report), "
              "not the claim: too few seeds and epochs for a verdict; the full variant gives the verdict of record")

Values = dict[str, dict[int, float]]          # arm → seed → value (finite values only)
Sizes = dict[str, dict[int, int]]             # arm → seed → test examples


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class PoolResult:
    """A pooled check next to its per-model parts: each part's oriented effect, whether they agree in sign (the
    condition for a pooled verdict), and — for two parts — the heterogeneity: per seed, the first part's oriented
    difference minus the second's, with its 95% interval by the measure's method."""

    parts: tuple[tuple[str, float | None], ...]
    agree: bool
    interaction: Inference | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"parts": [{"check": name, "effect": _finite(e)} for name, e in self.parts],
                               "agree_in_sign": self.agree}
        i = self.interaction
        if i is not None:
            out["heterogeneity"] = {"difference": f"{self.parts[0][0]} − {self.parts[1][0]}",
                                    "effect": _finite(i.mean_diff), "ci_low": _finite(i.ci_low),
                                    "ci_high": _finite(i.ci_high), "p": _finite(i.p), "n": i.n}
        return out


@dataclass(frozen=True)
class CheckResult:
    """One check evaluated: the raw paired difference (treatment − baseline, by the measure's method), the oriented
    effect and its verdict, the two sides' means over the paired seeds (in the measure's own units) and the size of
    the test set each trial was scored on (smallest and largest over the check's trials; None when unknown)."""

    check: Check
    diff: Inference
    oriented: OrientedEffect
    treatment_mean: float | None
    baseline_mean: float | None
    test_examples: tuple[int, int] | None = None
    pool: PoolResult | None = None

    @property
    def verdict(self) -> str:
        return self.oriented.verdict

    @property
    def n(self) -> int:
        return self.oriented.n

    @property
    def margin(self) -> float:
        return self.oriented.margin

    def to_json(self, smoke: bool = False) -> dict[str, Any]:
        """The check as JSON; ``smoke`` (a quick run): ``verdict`` is ``smoke``, the rule's answer at this budget
        stays readable as ``verdict_at_this_budget``."""
        o = self.oriented
        out = {"check": self.check.name, "question": self.check.question, "measure": self.check.measure.key,
               "measure_label": self.check.measure.label, "treatment": list(self.check.treatment),
               "baseline": list(self.check.baseline), "expects": self.check.expects,
               "verdict": SMOKE if smoke else o.verdict, "n": o.n, "effect": _finite(o.effect),
               "ci_low": _finite(o.ci_low), "ci_high": _finite(o.ci_high), "margin": o.margin, "method": o.method,
               "p": _finite(o.p), "p_holm": _finite(o.p_holm), "test_examples": _test_json(self.test_examples),
               "treatment_mean": _finite(self.treatment_mean), "baseline_mean": _finite(self.baseline_mean),
               "difference": _finite(self.diff.mean_diff)}
        if self.pool is not None:
            out["pool"] = self.pool.to_json()
        if smoke:
            out["verdict_at_this_budget"] = o.verdict
        return out


def _test_json(sizes: tuple[int, int] | None) -> int | list[int] | None:
    """One number when every trial's test set had the same size, else [smallest, largest]."""
    if sizes is None:
        return None
    return sizes[0] if sizes[0] == sizes[1] else list(sizes)


def side_values(values: Values, arms: tuple[str, ...]) -> dict[int, float]:
    """Per seed, the mean over ``arms`` — only seeds where every one of them has a value."""
    seeds = set.intersection(*(set(values.get(a, {})) for a in arms)) if arms else set()
    return {s: statistics.fmean(values[a][s] for a in arms) for s in sorted(seeds)}


def evaluate_check(check: Check, values: Values, *, p_holm: float | None = None,
                   sizes: Sizes | None = None) -> CheckResult:
    """The check's paired difference over seeds (each side averaged over its arms) by its measure's method,
    oriented and judged with its margin (relative margins from the baseline's mean over the paired seeds) and, for
    a secondary check, its Holm-adjusted p-value."""
    t, b = side_values(values, check.treatment), side_values(values, check.baseline)
    diff = infer(t, b, check.measure.method)
    paired = sorted(set(t) & set(b))
    mean_t = statistics.fmean(t[s] for s in paired) if paired else None
    mean_b = statistics.fmean(b[s] for s in paired) if paired else None
    oriented = orient(diff, check.expects, margin=check.resolved_margin(mean_b), p_holm=p_holm)
    return CheckResult(check, diff, oriented, mean_t, mean_b, _sizes(sizes, (*check.treatment, *check.baseline),
                                                                      paired))


def evaluate_checks(items: Sequence[tuple[Check, Values, Sizes | None]]) -> list[CheckResult]:
    """Every check of a lesson, each with the values it is judged on: the first (the claim's test) at 5% as it
    stands, the others with their p-values Holm-adjusted among themselves (``study.stats.holm``) before the verdict
    rule reads them."""
    first = [evaluate_check(c, values, sizes=sizes) for c, values, sizes in items]
    adjusted = holm([r.oriented.p for r in first[1:]])
    results = first[:1] + [evaluate_check(c, values, p_holm=p, sizes=sizes)
                           for (c, values, sizes), p in zip(items[1:], adjusted, strict=True)]
    by_name = {r.check.name: (r, values) for r, (_, values, _) in zip(results, items, strict=True)}
    return [pooled(r, [by_name[p][0] for p in r.check.pool], by_name[r.check.name][1]) if r.check.pool else r
            for r in results]


def oriented_differences(check: Check, values: Values) -> dict[int, float]:
    """Per paired seed, the oriented difference sign · (treatment − baseline) of ``check``."""
    t, b = side_values(values, check.treatment), side_values(values, check.baseline)
    sign = 1.0 if check.expects == "higher" else -1.0
    return {s: sign * (t[s] - b[s]) for s in sorted(set(t) & set(b))}


def pooled(result: CheckResult, parts: list[CheckResult], values: Values) -> CheckResult:
    """A pooled check judged with its per-model parts: its verdict stands only where every part's effect has the
    same sign (no pooling of models with opposite effects); otherwise it is ``inconclusive``. Two parts: the
    heterogeneity (part one's oriented differences minus part two's, per seed) with its interval."""
    effects = tuple((p.check.name, p.oriented.effect) for p in parts)
    known = [e for _, e in effects if e is not None]
    agree = len(known) == len(effects) and (all(e > 0 for e in known) or all(e < 0 for e in known))
    interaction = None
    if len(parts) == 2:
        first, second = (oriented_differences(p.check, values) for p in parts)
        interaction = infer(first, second, result.check.measure.method)
    oriented = result.oriented if agree else replace(result.oriented, verdict=INCONCLUSIVE)
    return replace(result, oriented=oriented, pool=PoolResult(effects, agree, interaction))


def _sizes(sizes: Sizes | None, arms: tuple[str, ...], seeds: list[int]) -> tuple[int, int] | None:
    found = [n for a in arms for s in seeds if (n := (sizes or {}).get(a, {}).get(s)) is not None]
    return (min(found), max(found)) if found else None


def trial_test_sizes(trials: list[TrialView]) -> Sizes:
    """arm → seed → the number of test examples the trial was scored on (``result.data.test``)."""
    out: Sizes = {}
    for trial in trials:
        data = (trial.result or {}).get("data")
        n = data.get("test") if isinstance(data, Mapping) else None
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            out.setdefault(trial.arm, {})[trial.seed] = n
    return out


def measure_values(measure: Measure, trials: list[TrialView]) -> Values:
    """``measure`` of every trial, arm → seed → value (undefined values left out)."""
    out: Values = {}
    for trial in trials:
        v = measure(trial)
        out.setdefault(trial.arm, {})
        if v is not None and math.isfinite(v):
            out[trial.arm][trial.seed] = float(v)
    return out


@dataclass
class LessonResult:
    """A lesson after its study ran: what ``explain``, the CLI and the lesson book read."""

    lesson: Lesson
    quick: bool
    spec: StudySpec
    store: str
    trials: list[TrialView]
    values: dict[str, Values]                         # measure key → arm → seed → value
    summaries: dict[str, dict[str, ArmSummary]]       # measure key → arm → summary over seeds
    checks: list[CheckResult]
    sizes: Sizes = field(default_factory=dict)        # arm → seed → test examples
    tuned: list[TunedArm] | None = None               # each arm's LR choice (None: the lesson does not tune)
    shared_trials: list[TrialView] = field(default_factory=list)   # the arms at one shared LR (tuned lessons)
    init: dict[str, dict[int, InitProfile]] = field(default_factory=dict)
    training: dict[str, TrainingProfile | None] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    trained_now: int = 0
    explanation: list[str] = field(default_factory=list)
    report: str | None = None
    study_report: str | None = None

    @property
    def variant(self) -> str:
        return "quick" if self.quick else "full"

    @property
    def smoke(self) -> bool:
        """A quick run checks the machinery, not the claim: its verdict is ``smoke``."""
        return self.quick

    @property
    def verdict(self) -> str:
        """The lesson's verdict: the primary check's, or ``smoke`` for a quick run."""
        return SMOKE if self.smoke else self.primary.verdict

    @property
    def primary(self) -> CheckResult:
        return self.checks[0]

    def lr(self, arm: str) -> float:
        """The learning rate the arm's judged trials ran at (its tuned LR, or the one the lesson gives it)."""
        return float(lr_of(self.tuned, self.spec)[arm])

    def tuning(self, arm: str) -> TunedArm | None:
        return next((t for t in self.tuned or [] if t.arm == arm), None)

    def test_examples(self, arm: str) -> tuple[int, int] | None:
        """The smallest and largest test set the arm's trials were scored on."""
        found = list(self.sizes.get(arm, {}).values())
        return (min(found), max(found)) if found else None

    @property
    def arms(self) -> list[str]:
        return self.spec.arm_names()

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.check.name == name:
                return c
        raise KeyError(name)

    def mean(self, measure: str | Measure, arm: str) -> float | None:
        """The mean of a measure over the arm's seeds (None without a value)."""
        key = measure if isinstance(measure, str) else measure.key
        s = self.summaries.get(key, {}).get(arm)
        return None if s is None else s.mean

    def arm_values(self, measure: str | Measure, arm: str) -> dict[int, float]:
        key = measure if isinstance(measure, str) else measure.key
        return dict(self.values.get(key, {}).get(arm, {}))

    def histories(self, arm: str) -> list[list[dict[str, Any]]]:
        """The per-epoch histories of the arm's finished trials, by seed."""
        out = []
        for t in sorted((t for t in self.trials if t.arm == arm), key=lambda t: t.seed):
            history = (t.result or {}).get("history")
            if isinstance(history, list):
                out.append([h for h in history if isinstance(h, Mapping)])
        return out

    def statuses(self, arm: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.trials:
            if t.arm == arm:
                counts[t.status] = counts.get(t.status, 0) + 1
        return counts

    def init_mean(self, arm: str, attr: str) -> list[float]:
        """Per layer, the mean over seeds of an ``InitProfile`` field (``act_std``, ``grad_std``)."""
        profiles = list(self.init.get(arm, {}).values())
        if not profiles:
            return []
        rows = [getattr(p, attr) for p in profiles]
        width = min(len(r) for r in rows)
        out = []
        for i in range(width):
            vals = [float(r[i]) for r in rows if r[i] is not None and math.isfinite(float(r[i]))]
            out.append(statistics.fmean(vals) if vals else math.nan)
        return out

    @property
    def trial_seconds(self) -> float:
        """Wall seconds the finished trials took when they were trained (summed over trials; they ran in
        parallel workers, possibly in an earlier invocation whose results this one reused)."""
        return float(sum(v for t in self.trials if isinstance(v := (t.result or {}).get("wall_seconds"), int | float)
                         and math.isfinite(v)))

    @property
    def trials_failed(self) -> int:
        return sum(t.status == "failed" for t in self.trials)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: the contract's keys first, then the details."""
        p = self.primary
        v = self.lesson.variant(self.quick)
        arms = []
        for arm in self.arms:
            s = self.summaries.get(p.check.measure.key, {}).get(arm)
            arms.append({"name": arm, "n": s.n if s else 0, "mean": _finite(s.mean) if s else None,
                         "ci_low": _finite(s.ci_low) if s else None, "ci_high": _finite(s.ci_high) if s else None,
                         "test_examples": _test_json(self.test_examples(arm)), "statuses": self.statuses(arm),
                         "lr": self.lr(arm), "tuned": self.tuned is not None,
                         **({k: v for k, v in t.to_json().items() if k != "lr"} if (t := self.tuning(arm)) else {})})
        out = {
            "lesson": self.lesson.name,
            "claim": self.lesson.claim,
            "verdict": self.verdict,
            "n_seeds": p.n,
            "effect": _finite(p.oriented.effect),
            "ci_low": _finite(p.oriented.ci_low),
            "ci_high": _finite(p.oriented.ci_high),
            "margin": p.margin,
            "method": p.oriented.method,
            "test_examples": _test_json(p.test_examples),
            "report": self.report,
            "title_de": self.lesson.title_de,
            "variant": self.variant,
            "seeds": v.seeds,
            "epochs": v.epochs,
            "measure": p.check.measure.key,
            "definition": self.lesson.definition,
            "checks": [c.to_json(smoke=self.smoke) for c in self.checks],
            "tuning": ({"key": "optimizer.lr", "multipliers": list(multipliers(self.quick)), "chosen_on": "validation accuracy",
                        "tuning_seeds": list(self.tuned[0].seeds) if self.tuned else []}
                       if self.tuned is not None else {"untuned": self.lesson.untuned}),
            "arms": arms,
            "explanation": list(self.explanation),
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "trial_seconds": round(self.trial_seconds, 2),
            "trained_now": self.trained_now,
            "trials_failed": self.trials_failed,
            "study": self.spec.name,
            "store": self.store,
            "study_report": self.study_report,
        }
        if self.smoke:
            out["verdict_at_this_budget"] = p.verdict
            out["smoke_note"] = SMOKE_NOTE
        return out
