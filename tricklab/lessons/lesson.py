"""What a lesson is: a claim of the German lesson, the study that tests it, and the comparisons that decide it.

A ``Lesson`` names its section of ``seed/TrainingTricks.de.md`` (the German title and the sentence that makes
the claim, verbatim), states the claim in English, and defines

- the study: a base recipe, named arms (override sets, one or two factors), and two budgets — ``full`` (the
  verdict of record, documented in docs/LESSONS.md) and ``quick`` (3 seeds, fewer epochs, one tuning seed: a
  smoke check that the lesson's machinery runs — its verdict is ``smoke`` —, 15–100 s of CPU per lesson);
- the checks: paired comparisons ``treatment − baseline`` of one per-trial measure, where each side is the
  mean over one or more arms *at the same seed*, judged against the measure's margin of practical relevance by
  the method made for it (``verdicts``, ``inference``). The first check is the claim's test and gives the lesson's
  verdict; the others are reported beside it, Holm-corrected among themselves (secondary parts of the claim, or
  the claim per model — a check that pools models names them in ``pool``);
- the learning rate: each arm at its own best LR, chosen on tuning seeds (``tuning``), unless ``tune`` is False
  and ``untuned`` says why;
- the views of the mechanism: ``init`` (per-layer activation and gradient statistics at initialisation, one
  probe on a batch, no training) and/or ``training`` (the doctor's per-layer statistics recorded during the
  trials);
- ``explain``: a function of the measured ``LessonResult`` that writes the explanation. No sentence of it is
  fixed in advance: every comparison word ("higher", "fewer", "vanishes") is chosen from the numbers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tricklab.lessons.inference import METHODS, Method
from tricklab.lessons.verdicts import Expectation, orientation

if TYPE_CHECKING:
    from tricklab.lessons.mechanism import InitProfile

VIEWS = ("init", "training")


@dataclass(frozen=True)
class TrialView:
    """One finished (or failed) trial as a measure sees it: its arm and seed, status, the ``RunResult`` as JSON
    (None for a failed trial) and, when the lesson has the ``init`` view, its per-layer profile at
    initialisation (same recipe, same seed)."""

    arm: str
    seed: int
    status: str
    result: Mapping[str, Any] | None
    init: InitProfile | None = None


@dataclass(frozen=True)
class Measure:
    """A number per trial: ``key`` (a short id), ``label`` (what a person reads, with its unit), which way is
    better (for tables), and ``fn`` (None: not defined for this trial, e.g. a failed one).

    How a difference of it is judged: ``method`` (``inference``: ``t`` for a continuous measure, ``permutation``
    for a 0/1 or censored one — never a t interval on those) and ``margin``, the smallest difference that matters in
    practice, in the measure's units — or, with ``relative_margin``, as a fraction of the baseline's mean (10% of
    the baseline's steps to a target)."""

    key: str
    label: str
    higher_is_better: bool
    fn: Callable[[TrialView], float | None]
    note: str = ""
    method: Method = "t"
    margin: float = 0.01
    relative_margin: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"measure {self.key!r}: unknown method {self.method!r}; allowed: {METHODS}")
        if not (math.isfinite(self.margin) and self.margin >= 0.0):
            raise ValueError(f"measure {self.key!r}: the margin must be a finite number >= 0, got {self.margin}")

    def margin_for(self, baseline_mean: float | None) -> float:
        """The margin in the measure's units: ``margin``, or ``margin`` × |baseline mean| when relative (0 when
        the baseline has no mean: then only an interval of exactly [0, 0] would be inside it)."""
        if not self.relative_margin:
            return self.margin
        return 0.0 if baseline_mean is None or not math.isfinite(baseline_mean) else self.margin * abs(baseline_mean)

    def margin_text(self) -> str:
        return f"{100 * self.margin:g}% of the baseline" if self.relative_margin else f"{self.margin:g}"

    def __call__(self, trial: TrialView) -> float | None:
        return self.fn(trial)


@dataclass(frozen=True)
class Check:
    """A paired comparison that tests (part of) the claim.

    Per seed, the treatment value is the mean of ``measure`` over the ``treatment`` arms and the baseline
    value the mean over the ``baseline`` arms (a seed where any of them has no value is left out: pairs stay
    pairs). ``expects`` says which way the claim predicts treatment − baseline to go; the verdict rule
    (``verdicts.orient``) flips lower-is-the-claim differences so that a positive effect means the claim holds.
    ``margin`` overrides the measure's margin of practical relevance for this check. ``pool``: a check that pools
    several models (or nets) names, in advance, the checks that judge each of them alone (same measure, same
    direction); its verdict stands only where their effects agree in sign (``outcome.pool_result``).
    """

    name: str
    question: str
    measure: Measure
    treatment: tuple[str, ...]
    baseline: tuple[str, ...]
    expects: Expectation = "higher"
    margin: float | None = None      # None: the measure's margin (``Measure.margin``, same units / relativity)
    pool: tuple[str, ...] = ()       # the per-model checks this check pools (pre-registered)

    def __post_init__(self) -> None:
        orientation(self.expects)  # validates
        if self.margin is not None and not (math.isfinite(self.margin) and self.margin >= 0.0):
            raise ValueError(f"check {self.name!r}: the margin must be a finite number >= 0, got {self.margin}")
        if not self.treatment or not self.baseline:
            raise ValueError(f"check {self.name!r}: treatment and baseline need at least one arm each")
        if set(self.treatment) & set(self.baseline):
            raise ValueError(f"check {self.name!r}: an arm is on both sides")

    def resolved_margin(self, baseline_mean: float | None) -> float:
        """The margin of this check in the measure's units (``Measure.margin_for``, with this check's margin when
        it sets one)."""
        m = self.measure if self.margin is None else replace(self.measure, margin=self.margin)
        return m.margin_for(baseline_mean)


@dataclass(frozen=True)
class Variant:
    """A budget: ``seeds`` (0..n−1), ``epochs``, recipe overrides of this budget only (dotted keys), and the
    number of tuning seeds each arm's learning rate is chosen on (``lessons.tuning``: seeds 1000…, never 0..n−1)."""

    seeds: int
    epochs: int
    overrides: Mapping[str, Any] = field(default_factory=dict)
    tuning_seeds: int = 2

    def __post_init__(self) -> None:
        if self.seeds < 3:
            raise ValueError("a lesson needs at least 3 seeds, so that a 95% interval is informative")
        if self.tuning_seeds < 1:
            raise ValueError("per-arm tuning needs at least one tuning seed")


@dataclass(frozen=True)
class Lesson:
    """One section of the lesson as a runnable, judged experiment (see the module docstring)."""

    name: str
    title_de: str
    quote_de: str
    claim: str
    definition: str
    base: Mapping[str, Any]
    factors: Mapping[str, Mapping[str, Mapping[str, Any]]]
    checks: tuple[Check, ...]
    full: Variant
    quick: Variant
    explain: Callable[[Any], list[str]]  # (LessonResult) -> lines; the result (lessons.outcome) imports this module
    views: tuple[str, ...] = ()
    derived_data: str | None = None      # a dataset written into the output directory (``derived_data``)
    target: Mapping[str, Any] | None = None
    init_seeds: int = 5                  # seeds of the at-initialisation probe (cheap: no training)
    note: str = ""
    tune: bool = True                    # each arm at its own best LR (``lessons.tuning``); False: why in ``untuned``
    untuned: str = ""

    def __post_init__(self) -> None:
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            raise ValueError(f"lesson {self.name!r}: unknown views {unknown}; allowed: {VIEWS}")
        arms = set(self.arm_names())
        for check in self.checks:
            missing = [a for a in (*check.treatment, *check.baseline) if a not in arms]
            if missing:
                raise ValueError(f"lesson {self.name!r}, check {check.name!r}: no arms {missing}; "
                                 f"arms: {sorted(arms)}")
        by_name = {c.name: c for c in self.checks}
        for check in self.checks:
            for part in check.pool:
                other = by_name.get(part)
                if other is None or other.pool or other.measure.key != check.measure.key \
                        or other.expects != check.expects:
                    raise ValueError(f"lesson {self.name!r}, check {check.name!r}: pool part {part!r} must be "
                                     "another check of the same measure and direction, itself no pool")
        if not self.checks:
            raise ValueError(f"lesson {self.name!r} has no check")
        if not self.tune and not self.untuned:
            raise ValueError(f"lesson {self.name!r}: a lesson that does not tune each arm's LR says why (untuned)")

    @property
    def primary(self) -> Check:
        return self.checks[0]

    def arm_names(self) -> list[str]:
        """The arms in the study's order: one factor's labels, or "a,b" for two factors (grid order)."""
        names = [""]
        for levels in self.factors.values():
            names = [f"{prefix},{label}" if prefix else label for prefix in names for label in levels]
        return names

    def variant(self, quick: bool) -> Variant:
        return self.quick if quick else self.full

    def measures(self) -> list[Measure]:
        """Every measure a check uses, once each, the primary check's first."""
        seen: dict[str, Measure] = {}
        for check in self.checks:
            seen.setdefault(check.measure.key, check.measure)
        return list(seen.values())

    def study_data(self, quick: bool, *, name: str, data_path: str | None = None) -> dict[str, Any]:
        """The study spec (as ``study_from_dict`` takes it) of the ``quick`` or full budget."""
        v = self.variant(quick)
        base = copy.deepcopy(dict(self.base))
        if data_path is not None:
            base["data"] = {**base.get("data", {}), "name": "npz", "path": data_path}
        spec: dict[str, Any] = {
            "name": name,
            "description": f"tricklab lesson {self.name} ({'quick' if quick else 'full'} variant): {self.claim}",
            "base": base,
            "overrides": {"epochs": v.epochs, **dict(v.overrides)},
            "design": "grid",
            "factors": copy.deepcopy({k: {label: dict(s) for label, s in levels.items()}
                                      for k, levels in self.factors.items()}),
            "seeds": v.seeds,
            "split_per_seed": True,   # each seed draws its own train/val/test split: the test set's noise counts
            "metric": "test_accuracy",
            "baseline": self.primary.baseline[0],
        }
        if self.target is not None:
            spec["target"] = dict(self.target)
        return spec
