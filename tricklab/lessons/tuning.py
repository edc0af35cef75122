"""Per-arm learning-rate tuning, nested: each arm of a lesson at its own best learning rate.

One learning rate for all arms compares "trick at an LR tuned for something else" with "no trick". So before a
lesson is judged, every arm's LR is chosen on its own:

- the grid: the arm's own LR (the one the lesson gives it — the shared base LR, or an optimizer's library default)
  times ``MULTIPLIERS`` = 10^(−1), 10^(−1/2), 1, 10^(1/2), 10: a log-spaced grid half a decade apart, a decade each
  way (the 3-point grid of 2026-12-07 chose its top for 45 of 71 arms: their best lay beyond it; this one for 27).
  ``--quick`` tunes over the three middle rates (``QUICK_MULTIPLIERS``);
- the data: the **validation** split, never the test split, on the **tuning seeds** 1000, 1001, … — never the
  evaluation seeds 0..n−1, whose splits, initialisations and data orders the verdict is computed on (with the split
  drawn per seed these are other splits too). Nothing the verdict reads was seen by the choice;
- the score: the mean validation accuracy over the tuning seeds (a diverged run counts at chance, like the test
  accuracy); the best wins; a tie goes to the multiplier closest to 1 (the arm's own LR), then to the smaller LR.

The claim is then judged on the evaluation seeds at each arm's chosen LR; an arm whose choice is its own LR reuses
the shared-LR trials (same recipe, same seeds). The lesson at one shared LR stays as a secondary check ("at one
shared LR"), so both stories are visible. The grid trains as a population where the engine supports the recipe
(``--executor population``: the members of one arm and seed share data and model shape), alone otherwise.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tricklab.lessons.lesson import Lesson, TrialView
from tricklab.lessons.measures import TEST_ACCURACY
from tricklab.study.spec import StudySpec, study_from_dict

MULTIPLIERS: tuple[float, ...] = (0.1, 10 ** -0.5, 1.0, 10 ** 0.5, 10.0)
QUICK_MULTIPLIERS: tuple[float, ...] = MULTIPLIERS[1:-1]
"""``--quick`` checks the machinery, not the claim: the three middle rates keep it within its 10-minute budget (all
five took 10 min 3 s for the 18 lessons on an idle 2-core machine, 2026-12-07; the three 8 min 17 s and, later
the same day, 9 min 16 s)."""
TUNING_SEED0 = 1000
KEY = "optimizer.lr"


def multipliers(quick: bool) -> tuple[float, ...]:
    """The grid of a variant: ``QUICK_MULTIPLIERS`` for ``--quick``, ``MULTIPLIERS`` otherwise."""
    return QUICK_MULTIPLIERS if quick else MULTIPLIERS


def grid_text(grid: tuple[float, ...]) -> str:
    """A grid as the text says it: "10^(−1), 10^(−1/2), 1, 10^(1/2), 10"."""
    names = {0.1: "10^(−1)", 10 ** -0.5: "10^(−1/2)", 1.0: "1", 10 ** 0.5: "10^(1/2)", 10.0: "10"}
    return ", ".join(names.get(m, f"{m:.3g}") for m in grid)


def tuning_seeds(n: int) -> list[int]:
    """The tuning seeds: ``TUNING_SEED0`` … — disjoint from the evaluation seeds 0..n−1 of any lesson."""
    return [TUNING_SEED0 + i for i in range(n)]


def grid_label(arm: str, multiplier: float) -> str:
    return f"{arm}@lrx{multiplier:.3g}"


@dataclass(frozen=True)
class TunedArm:
    """One arm's choice: its own LR (``shared_lr``), the chosen ``lr``, and per grid LR the mean validation
    accuracy over the tuning seeds (None: no finished trial)."""

    arm: str
    shared_lr: float
    lr: float
    scores: tuple[tuple[float, float | None], ...]
    seeds: tuple[int, ...]

    @property
    def changed(self) -> bool:
        return self.lr != self.shared_lr

    def to_json(self) -> dict[str, Any]:
        return {"lr": self.lr, "shared_lr": self.shared_lr,
                "lr_grid": [{"lr": lr, "val_accuracy": s} for lr, s in self.scores],
                "tuning_seeds": list(self.seeds)}


def _arm_lrs(spec: StudySpec) -> dict[str, float]:
    return {arm.name: float(arm.recipe.optimizer.lr) for arm in spec.arms()}


def tuning_study(lesson: Lesson, shared: StudySpec, quick: bool) -> StudySpec:
    """The grid study: every arm × every multiplier of its own LR, on the tuning seeds, split per seed."""
    data = shared.model_dump(mode="json")
    lrs = _arm_lrs(shared)
    levels = {grid_label(arm.name, m): {**copy.deepcopy(arm.overrides), KEY: lrs[arm.name] * m}
              for arm in shared.arms() for m in multipliers(quick)}
    data.update(name=_name(shared.name, "tune"), factors={"arm_lr": levels}, design="grid",
                seeds=tuning_seeds(lesson.variant(quick).tuning_seeds), metric="val_accuracy",
                baseline=next(iter(levels)), description=f"{shared.description} — per-arm LR grid on tuning seeds")
    data.pop("remove", None)
    return _named(data)


def choose(shared: StudySpec, trials: list[TrialView], quick: bool = False) -> list[TunedArm]:
    """Each arm's LR from the grid study's finished trials (see the module docstring for the rule), over the
    grid of the variant (``multipliers(quick)``)."""
    lrs = _arm_lrs(shared)
    scores: dict[str, list[float]] = {}
    for t in trials:
        v = _validation(t)
        if v is not None:
            scores.setdefault(t.arm, []).append(v)
    seeds = tuple(sorted({t.seed for t in trials}))
    out = []
    for arm in shared.arm_names():
        grid = [(lrs[arm] * m, m, _mean(scores.get(grid_label(arm, m)))) for m in multipliers(quick)]
        scored = [(s, -abs(math.log(m)), -lr, lr) for lr, m, s in grid if s is not None]
        best = max(scored)[3] if scored else lrs[arm]
        out.append(TunedArm(arm, lrs[arm], best, tuple((lr, s) for lr, _, s in grid), seeds))
    return out


def tuned_study(shared: StudySpec, tuned: list[TunedArm]) -> StudySpec | None:
    """The evaluation study of the arms whose chosen LR is not their own (same seeds and splits as the shared
    study, one factor whose labels are the lesson's arm names); None when every arm kept its own LR."""
    changed = {t.arm: t.lr for t in tuned if t.changed}
    if not changed:
        return None
    data = shared.model_dump(mode="json")
    levels = {arm.name: {**copy.deepcopy(arm.overrides), KEY: changed[arm.name]}
              for arm in shared.arms() if arm.name in changed}
    data.update(name=_name(shared.name, "tuned"), factors={"arm": levels}, design="grid",
                baseline=next(iter(levels)), description=f"{shared.description} — arms at their tuned LR")
    data.pop("remove", None)
    return _named(data)


def _name(shared: str, part: str) -> str:
    """``lesson-NAME-VARIANT-HASH`` → ``lesson-NAME-VARIANT-PART`` (the hash is added by ``_named``)."""
    stem = shared.rsplit("-", 1)[0]
    return f"{stem}-{part}"


def _named(data: dict[str, Any]) -> StudySpec:
    """The spec named with the hash of its resolved arms and seeds, as ``run.lesson_spec`` names lesson studies."""
    draft = study_from_dict(data)
    return study_from_dict({**data, "name": f"{data['name']}-{draft.spec_hash()[:8]}"})


def _validation(trial: TrialView) -> float | None:
    """The validation accuracy the trial ended with (at the restored weights with early stopping); a diverged run
    at chance (``measures.TEST_ACCURACY``'s convention); a failed one has none."""
    r = trial.result
    if r is None or trial.status == "failed":
        return None
    if trial.status == "diverged":
        return TEST_ACCURACY(trial)
    v = r.get("val_accuracy")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _mean(values: list[float] | None) -> float | None:
    return statistics.fmean(values) if values else None


def lr_of(tuned: list[TunedArm] | None, spec: StudySpec) -> Mapping[str, float]:
    """arm → the LR its verdict trials ran at (the tuned one, or the shared spec's when there was no tuning)."""
    if tuned:
        return {t.arm: t.lr for t in tuned}
    return _arm_lrs(spec)
