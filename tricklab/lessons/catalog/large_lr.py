"""Lernratenabnahme — "larger values of η lead to faster training", which we want at the start of training."""

from __future__ import annotations

import statistics

from tricklab.lessons.catalog.common import DIGITS_MLP, FIRST_EPOCH_VAL
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import seconds_to, steps_to
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, reached, verdict_sentence

SOURCE_DE = (
    'Der Erfolg des Trainings hängt oft vom Lernratenparameter η ab. Es ist logisch anzunehmen, dass '
    'größere Werte von η zu schnellerem Training führen, was wir typischerweise zu Beginn des Trainings '
    'wollen, und dass kleinere Werte von η es uns ermöglichen, das Netzwerk fein abzustimmen. Daher '
    'möchten wir in den meisten Fällen η im Verlauf des Trainings verringern.'
)
"""The paragraph of seed/TrainingTricks.de.md the quote is taken from, verbatim (the tests check the quote
against it: the tests read no file outside the repository)."""

TARGET = 0.9
STEPS = steps_to("val_accuracy", TARGET)
SECONDS = seconds_to("val_accuracy", TARGET)
SMALL, LARGE, TOO_LARGE = 0.01, 0.1, 1.0   # plain SGD, the lesson's w ← w − η∇L, a decade apart
RATES = {f"η={lr:g}": {"optimizer.lr": lr} for lr in (SMALL, LARGE, TOO_LARGE)}
S, L, T = (f"η={lr:g}" for lr in (SMALL, LARGE, TOO_LARGE))


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "After the first epoch — " + verdict_sentence(r, r.check("first_epoch")),
           "In training seconds — " + verdict_sentence(r, r.check("faster_seconds")),
           f"Runs that reached validation accuracy {TARGET:g} within the budget: "
           f"{reached(r, 'val_accuracy', TARGET)}."]
    medians = [f"{arm} {num(statistics.median(v.values()))}" for arm in r.arms if (v := r.arm_values(STEPS, arm))]
    if medians:
        out.append(f"Median steps to validation accuracy ≥ {TARGET:g} (never reached = the whole budget): "
                   f"{', '.join(medians)}.")
    out.append(f"Validation accuracy after the first epoch (best first): {ranking(r, 'val_accuracy_epoch1')}.")
    out.append("Ten times larger again — " + verdict_sentence(r, r.check("too_large")))
    return out + failed_arms(r)


LESSON = Lesson(
    name="large_lr",
    title_de="Lernratenabnahme: große Lernrate",
    quote_de="Es ist logisch anzunehmen, dass größere Werte von η zu schnellerem Training führen, was wir "
             "typischerweise zu Beginn des Trainings wollen",
    claim="A larger learning rate η trains faster at the start of training.",
    definition=f"Optimizer steps until the validation accuracy first reaches {TARGET:g} with η = {LARGE:g} minus with "
               f"η = {SMALL:g} (fewer is the claim, so the difference is negated), paired by seed; plain SGD "
               "(the lesson's w ← w − η∇L), a constant η, no weight decay, on the 3×64 ReLU MLP. Positive = the "
               "larger η is faster. Further checks: the validation accuracy after the first epoch (higher is the "
               f"claim), training seconds to the target, and η = {TOO_LARGE:g} against η = {LARGE:g}: where "
               "\"larger is faster\" stops.",
    base={**DIGITS_MLP, "optimizer": {"name": "sgd", "weight_decay": 0.0}, "schedule": {"name": "constant"}},
    factors={"lr": RATES},
    checks=(
        Check("faster", f"Does η = {LARGE:g} reach validation accuracy {TARGET:g} in fewer steps than η = {SMALL:g}?",
              STEPS, (L,), (S,), expects="lower"),
        Check("first_epoch", f"Is the validation accuracy after one epoch higher with η = {LARGE:g}?",
              FIRST_EPOCH_VAL, (L,), (S,)),
        Check("faster_seconds", f"Does η = {LARGE:g} reach validation accuracy {TARGET:g} in fewer training seconds?",
              SECONDS, (L,), (S,), expects="lower"),
        Check("too_large", f"η = {TOO_LARGE:g} vs η = {LARGE:g}: steps to validation accuracy {TARGET:g}", STEPS,
              (T,), (L,), expects="lower"),
    ),
    full=Variant(seeds=10, epochs=10),
    quick=Variant(seeds=3, epochs=3, tuning_seeds=1),
    explain=explain,
    views=("training",),
    target={"metric": "val_accuracy", "value": TARGET},
    tune=False,
    untuned="η is the factor under test: tuning each arm's η would replace the rates the claim compares",
)
