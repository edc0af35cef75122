"""Batch-Normalisierung — where the layer goes: after the weights, before the activation."""

from __future__ import annotations

import statistics

from tricklab.lessons.catalog.common import DIGITS_MLP
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY, steps_to
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, reached, verdict_sentence

SOURCE_DE = (
    'Die Idee der **Batch-Normalisierung** besteht darin, alle Werte innerhalb des Minibatches zu '
    'berücksichtigen und eine Normalisierung (d. h. Mittelwert abziehen und durch Standardabweichung '
    'teilen) basierend auf diesen Werten durchzuführen. Sie wird als Netzwerkschicht implementiert, die '
    'diese Normalisierung nach der Anwendung der Gewichte, aber vor der Aktivierungsfunktion durchführt. '
    'Dadurch erreichen wir in der Regel eine höhere Endgenauigkeit und schnelleres Training.'
)
"""The paragraph of seed/TrainingTricks.de.md the quote is taken from, verbatim (the tests check the quote
against it: the tests read no file outside the repository)."""

TARGET = 0.9
STEPS = steps_to("val_accuracy", TARGET)
MODELS = {"mlp": {"model.name": "mlp", "model.depth": 10, "model.width": 64},
          "cnn": {"model.name": "cnn", "model.depth": 4, "model.width": 32}}
PLACEMENTS = {"before": {"model.norm": "batch"}, "after": {"model.norm": "batch_after_act"}}


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Faster training — " + verdict_sentence(r, r.check("faster")),
           f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.",
           f"Runs that reached validation accuracy {TARGET:g} within the budget: "
           f"{reached(r, 'val_accuracy', TARGET)}."]
    for model in MODELS:
        out.append(f"{model} alone: " + verdict_sentence(r, r.check(model)))
        before, after = r.arm_values(STEPS, f"{model},before"), r.arm_values(STEPS, f"{model},after")
        if before and after:
            out.append(f"{model}: median steps to validation accuracy ≥ {TARGET:g}: "
                       f"{num(statistics.median(before.values()))} with the norm before the activation, "
                       f"{num(statistics.median(after.values()))} after it (a run that never reached it counts as "
                       "its whole budget).")
    return out + failed_arms(r)


LESSON = Lesson(
    name="bn_placement",
    title_de="Batch-Normalisierung: Platzierung",
    quote_de="Sie wird als Netzwerkschicht implementiert, die diese Normalisierung nach der Anwendung der Gewichte, "
             "aber vor der Aktivierungsfunktion durchführt.",
    claim="Batch norm belongs after the weights and before the activation: placed there, the network does better "
          "than with the same layer after the activation.",
    definition="Test accuracy with batch norm between the weights and the activation (model.norm: batch — "
               "weights → BN → ReLU) minus with the same layer after the activation (model.norm: batch_after_act — "
               "weights → ReLU → BN), averaged per seed over a deep MLP (10×64) and a CNN (4 convolutions, 32 "
               "channels) on the digits — a pool declared in advance, whose verdict stands only where the two "
               "models' own effects agree in sign (each model is also judged alone). Positive = the lesson's "
               "placement is better. Second check: optimizer steps until the validation accuracy first reaches "
               f"{TARGET:g} (fewer is the claim, so negated).",
    base=DIGITS_MLP,
    factors={"model": MODELS, "placement": PLACEMENTS},
    checks=(
        Check("accuracy", "Does batch norm before the activation give a higher test accuracy than after it?",
              TEST_ACCURACY, ("mlp,before", "cnn,before"), ("mlp,after", "cnn,after"), pool=tuple(MODELS)),
        Check("faster", f"Does batch norm before the activation reach validation accuracy {TARGET:g} in fewer steps?",
              STEPS, ("mlp,before", "cnn,before"), ("mlp,after", "cnn,after"), expects="lower",
              pool=tuple(f"{m}_faster" for m in MODELS)),
        *(Check(m, f"{m.upper()}: before vs after the activation", TEST_ACCURACY, (f"{m},before",),
                (f"{m},after",)) for m in MODELS),
        *(Check(f"{m}_faster", f"{m.upper()}: steps to validation accuracy {TARGET:g}, before vs after", STEPS,
                (f"{m},before",), (f"{m},after",), expects="lower") for m in MODELS),
    ),
    full=Variant(seeds=8, epochs=15),
    quick=Variant(seeds=3, epochs=2, tuning_seeds=1),
    explain=explain,
    views=("training",),
    target={"metric": "val_accuracy", "value": TARGET},
)
