"""Batch-Normalisierung — higher final accuracy and faster training."""

from __future__ import annotations

import statistics

from tricklab.lessons.catalog.common import DIGITS_MLP, layer_walk
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY, seconds_to, steps_to
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, reached, verdict_sentence

TARGET = 0.9
STEPS = steps_to("val_accuracy", TARGET)
SECONDS = seconds_to("val_accuracy", TARGET)
MODELS = {"mlp": {"model.name": "mlp", "model.depth": 10, "model.width": 64},
          "cnn": {"model.name": "cnn", "model.depth": 4, "model.width": 32}}


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Faster training — " + verdict_sentence(r, r.check("faster")),
           "Faster in seconds — " + verdict_sentence(r, r.check("faster_seconds")),
           f"Runs that reached validation accuracy {TARGET:g} within the budget: "
           f"{reached(r, 'val_accuracy', TARGET)}."]
    for model in MODELS:
        out.append(f"{model} alone: " + verdict_sentence(r, r.check(model)))
        out.append(f"{model} alone, faster: " + verdict_sentence(r, r.check(f"{model}_faster")))
        with_bn, without = r.arm_values(STEPS, f"{model},batch"), r.arm_values(STEPS, f"{model},none")
        if with_bn and without:
            out.append(f"{model}: median steps to validation accuracy ≥ {TARGET:g}: "
                       f"{num(statistics.median(with_bn.values()))} with batch norm, "
                       f"{num(statistics.median(without.values()))} without (a run that never reached it counts "
                       "as its whole budget).")
    if r.init:
        for model in MODELS:
            walk_bn, walk_none = layer_walk(r, f"{model},batch"), layer_walk(r, f"{model},none")
            if walk_bn and walk_none:
                out.append(f"{model} at initialisation, activation std per layer: with batch norm {walk_bn}; "
                           f"without {walk_none}.")
    return out + failed_arms(r)


LESSON = Lesson(
    name="batchnorm",
    title_de="Batch-Normalisierung",
    quote_de="Sie wird als Netzwerkschicht implementiert, die diese Normalisierung nach der Anwendung der Gewichte, "
             "aber vor der Aktivierungsfunktion durchführt. Dadurch erreichen wir in der Regel eine höhere "
             "Endgenauigkeit und schnelleres Training.",
    claim="Batch normalisation (after the weights, before the activation) usually gives a higher final accuracy "
          "and faster training.",
    definition="Test accuracy with batch norm minus without, averaged per seed over a deep MLP (10×64) and a CNN "
               "(4 convolutions, 32 channels) on the digits — a pool declared in advance, whose verdict stands only "
               "where the two models' own effects agree in sign (each model is also judged alone, and their "
               "difference is shown as the heterogeneity). Positive = batch norm helps. \"Faster training\" is "
               f"the second check: optimizer steps until the validation accuracy first reaches {TARGET:g} (fewer "
               "is the claim, so the difference is negated), pooled the same way.",
    base=DIGITS_MLP,
    factors={"model": MODELS, "norm": {"batch": {"model.norm": "batch"}, "none": {"model.norm": "none"}}},
    checks=(
        Check("final_accuracy", "Does batch norm give a higher final test accuracy?", TEST_ACCURACY,
              ("mlp,batch", "cnn,batch"), ("mlp,none", "cnn,none"), pool=tuple(MODELS)),
        Check("faster", f"Does batch norm reach validation accuracy {TARGET:g} in fewer steps?", STEPS,
              ("mlp,batch", "cnn,batch"), ("mlp,none", "cnn,none"), expects="lower",
              pool=tuple(f"{m}_faster" for m in MODELS)),
        *(Check(m, f"{m.upper()}: with vs without batch norm", TEST_ACCURACY, (f"{m},batch",), (f"{m},none",))
          for m in MODELS),
        *(Check(f"{m}_faster", f"{m.upper()}: steps to validation accuracy {TARGET:g}, with vs without batch norm",
                STEPS, (f"{m},batch",), (f"{m},none",), expects="lower") for m in MODELS),
        Check("faster_seconds", f"Does batch norm reach validation accuracy {TARGET:g} in fewer training seconds?",
              SECONDS, ("mlp,batch", "cnn,batch"), ("mlp,none", "cnn,none"), expects="lower",
              pool=tuple(f"{m}_faster_seconds" for m in MODELS)),
        *(Check(f"{m}_faster_seconds", f"{m.upper()}: training seconds to validation accuracy {TARGET:g}, with vs "
                "without batch norm", SECONDS, (f"{m},batch",), (f"{m},none",), expects="lower") for m in MODELS),
    ),
    full=Variant(seeds=8, epochs=15),
    quick=Variant(seeds=3, epochs=3, tuning_seeds=1),
    explain=explain,
    views=("init", "training"),
    target={"metric": "val_accuracy", "value": TARGET},
)
