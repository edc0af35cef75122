"""Dropout — the lesson says it speeds up training and reaches a higher accuracy in fewer epochs."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY, seconds_to, steps_to
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, reached, verdict_sentence

RATES = (0.0, 0.2, 0.5, 0.8)      # Dropout.ipynb's values
TARGET = 0.9
STEPS = steps_to("val_accuracy", TARGET)
SECONDS = seconds_to("val_accuracy", TARGET)
LESSON_RANGE = ("p=0.2", "p=0.5")  # the lesson: "typischerweise 10%-50%"
EPOCHS = 20


def _first_epoch(r: LessonResult, arm: str) -> float | None:
    vals = [h[0].get("val_accuracy") for h in r.histories(arm) if h]
    vals = [float(v) for v in vals if isinstance(v, int | float)]
    return sum(vals) / len(vals) if vals else None


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Speeding up training — " + verdict_sentence(r, r.check("faster")),
           "In training seconds — " + verdict_sentence(r, r.check("faster_seconds")),
           f"Runs that reached validation accuracy {TARGET:g} within the budget: "
           f"{reached(r, 'val_accuracy', TARGET)}."]
    out.append(f"Test accuracy by dropout rate (best first): {ranking(r, 'test_accuracy')}.")
    firsts = ", ".join(f"{arm} {num(_first_epoch(r, arm))}" for arm in r.arms)
    out.append(f"Validation accuracy after the first epoch: {firsts} — the start of the curves below.")
    out.append("The notebook's extreme value p = 0.8: " + verdict_sentence(r, r.check("p=0.8")))
    return out + failed_arms(r)


LESSON = Lesson(
    name="dropout",
    title_de="Dropout",
    quote_de="Es beschleunigt das Training und ermöglicht es uns, in weniger Trainingsepochen eine höhere "
             "Genauigkeit zu erreichen.",
    claim="Dropout speeds up training and lets a network reach a higher accuracy in fewer epochs.",
    definition=f"Test accuracy at the end of training (full variant: {EPOCHS} epochs) with dropout at the lesson's "
               "typical rates (p = 0.2 and 0.5, averaged per seed) minus without dropout (p = 0); a CNN with two "
               "convolutions and dropout before its output layer, the layout of Dropout.ipynb, on the digits. The "
               "notebook trains on MNIST (60,000 training images); the digits have 1,294, so the full variant's "
               f"{EPOCHS} epochs ({EPOCHS * 21} steps of 64) give the network a chance to converge. "
               "Positive = dropout helps. \"Speeds up\" is the second check: steps until the validation accuracy "
               f"first reaches {TARGET:g} (fewer is the claim, so negated).",
    base={**DIGITS_MLP, "model": {"name": "cnn", "depth": 2, "width": 32, "norm": "none"}},
    factors={"dropout": {f"p={p:g}": {"model.dropout": p} for p in RATES}},
    checks=(
        Check("accuracy", "Does dropout (p = 0.2, 0.5) give a higher test accuracy at the end of training?",
              TEST_ACCURACY, LESSON_RANGE, ("p=0",)),
        Check("faster", f"Does dropout reach validation accuracy {TARGET:g} in fewer steps?", STEPS,
              LESSON_RANGE, ("p=0",), expects="lower"),
        Check("faster_seconds", f"Does dropout reach validation accuracy {TARGET:g} in fewer training seconds?",
              SECONDS, LESSON_RANGE, ("p=0",), expects="lower"),
        Check("p=0.2", "p = 0.2 vs none", TEST_ACCURACY, ("p=0.2",), ("p=0",)),
        Check("p=0.5", "p = 0.5 vs none", TEST_ACCURACY, ("p=0.5",), ("p=0",)),
        Check("p=0.8", "p = 0.8 vs none", TEST_ACCURACY, ("p=0.8",), ("p=0",)),
    ),
    full=Variant(seeds=10, epochs=EPOCHS),
    quick=Variant(seeds=3, epochs=4, tuning_seeds=1),
    explain=explain,
    views=("training",),
    target={"metric": "val_accuracy", "value": TARGET},
)
