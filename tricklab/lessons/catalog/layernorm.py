"""Schichtnormierung — layer norm, which the lesson names beside batch norm as a normalisation technique."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from tricklab.lessons.catalog.common import DIGITS_MLP, layer_walk
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY, steps_to
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, reached, verdict_sentence

SOURCE_DE = (
    'Selbst bei ordnungsgemäßer Initialisierung der Gewichte können diese während des Trainings beliebig '
    'groß oder klein werden und die Signale aus dem richtigen Bereich bringen. Wir können die Signale '
    'mit einer der **Normalisierungstechniken** wieder in den Bereich bringen. Während es mehrere davon '
    'gibt (Gewichtsnormierung, Schichtnormierung), wird am häufigsten die Batch-Normalisierung verwendet.'
)
"""The paragraph of seed/TrainingTricks.de.md the quote is taken from, verbatim (the tests check the quote
against it: the tests read no file outside the repository)."""

QUOTE = ("Während es mehrere davon gibt (Gewichtsnormierung, Schichtnormierung), wird am häufigsten die "
         "Batch-Normalisierung verwendet.")
TARGET = 0.9
STEPS = steps_to("val_accuracy", TARGET)
DEPTH, WIDTH = 10, 64   # the batch-norm lesson's deep MLP: deep enough that the signal's range matters


def alternative_explain(kind: str) -> Callable[[LessonResult], list[str]]:
    """The explanation of a norm-alternative lesson (``kind``: the arm of the alternative)."""

    def explain(r: LessonResult) -> list[str]:
        out = [verdict_sentence(r), f"{kind} vs batch norm — " + verdict_sentence(r, r.check("vs_batch")),
               "Faster than no normalisation — " + verdict_sentence(r, r.check("faster")),
               f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.",
               f"Runs that reached validation accuracy {TARGET:g} within the budget: "
               f"{reached(r, 'val_accuracy', TARGET)}."]
        medians = []
        for arm in r.arms:
            steps = r.arm_values(STEPS, arm)
            if steps:
                medians.append(f"{arm} {num(statistics.median(steps.values()))}")
        if medians:
            out.append(f"Median steps to validation accuracy ≥ {TARGET:g} (a run that never reached it counts as its "
                       f"whole budget): {', '.join(medians)}.")
        if r.init:
            walks = [f"{arm} {w}" for arm in r.arms if (w := layer_walk(r, arm))]
            if walks:
                out.append("At initialisation, activation std per layer: " + "; ".join(walks) + ".")
        return out + failed_arms(r)

    return explain


def alternative_lesson(*, name: str, kind: str, label: str, title_de: str, what: str) -> Lesson:
    """A lesson testing norm ``kind`` (a ``model.norm`` value) as an alternative to batch norm on the deep MLP."""
    return Lesson(
        name=name,
        title_de=title_de,
        quote_de=QUOTE,
        claim=f"{label}, which the lesson names beside batch norm as a normalisation technique that brings the "
              "signals back into range, works as one: a deep network trains better with it than without "
              "normalisation, and about as well as with batch norm.",
        definition=f"Test accuracy of a {DEPTH}×{WIDTH} ReLU MLP (He init) on the digits with {label.lower()} "
                   f"({what}) minus the same MLP without normalisation, paired by seed; each arm at its own tuned "
                   f"learning rate. Positive = {label.lower()} helps. Further checks: {label.lower()} minus batch "
                   "norm (an alternative should not be worse: no meaningful difference or better), and optimizer "
                   f"steps until the validation accuracy first reaches {TARGET:g} with {label.lower()} vs none "
                   "(fewer is the claim, so negated).",
        base={**DIGITS_MLP, "model": {**DIGITS_MLP["model"], "depth": DEPTH, "width": WIDTH}},
        factors={"norm": {kind: {"model.norm": kind}, "batch": {"model.norm": "batch"},
                          "none": {"model.norm": "none"}}},
        checks=(
            Check("accuracy", f"Does {label.lower()} give a higher test accuracy than no normalisation?",
                  TEST_ACCURACY, (kind,), ("none",)),
            Check("vs_batch", f"{label} vs batch norm: is the alternative as good?", TEST_ACCURACY, (kind,),
                  ("batch",)),
            Check("faster", f"Does {label.lower()} reach validation accuracy {TARGET:g} in fewer steps than none?",
                  STEPS, (kind,), ("none",), expects="lower"),
            Check("batch_vs_none", "Batch norm vs none, the reference the alternative stands beside", TEST_ACCURACY,
                  ("batch",), ("none",)),
        ),
        full=Variant(seeds=8, epochs=15),
        quick=Variant(seeds=3, epochs=2, tuning_seeds=1),
        explain=alternative_explain(kind),
        views=("init", "training"),
        target={"metric": "val_accuracy", "value": TARGET},
    )


LESSON = alternative_lesson(
    name="layernorm", kind="layer", label="Layer normalisation", title_de="Batch-Normalisierung: Schichtnormierung",
    what="each example normalised over its own features after the weights, before the activation; Ba et al. 2016")
