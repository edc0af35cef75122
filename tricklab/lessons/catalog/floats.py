"""Werte in einem vernünftigen Bereich halten — the floating-point example: a small value next to a large one loses
its digits."""

from __future__ import annotations

import torch

from tricklab.lessons.catalog.common import DIGITS_MLP
from tricklab.lessons.derived_data import OFFSET, SCALE
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence
from tricklab.tricks.scaling import lesson_float_example

SOURCE_DE = (
    'Um numerische Berechnungen stabiler zu machen, sollten alle Werte innerhalb des neuronalen '
    'Netzwerks in einem vernünftigen Bereich liegen, typischerweise [-1..1] oder [0..1]. Dies ist keine '
    'strikte Anforderung, aber die Natur von Gleitkomma-Berechnungen ist so, dass Werte '
    'unterschiedlicher Größenordnungen nicht genau zusammen verarbeitet werden können. Zum Beispiel, '
    'wenn wir 10<sup>-10</sup> und 10<sup>10</sup> addieren, erhalten wir wahrscheinlich '
    '10<sup>10</sup>, da der kleinere Wert auf die gleiche Größenordnung wie der größere "umgerechnet" '
    'wird und somit die Mantisse verloren geht.'
)
"""The paragraph of seed/TrainingTricks.de.md the quote is taken from, verbatim (the tests check the quote
against it: the tests read no file outside the repository)."""

GREY_LEVELS = 17   # the digits' grey levels 0..16
INPUTS = {"offset": {"data.scale": "none"}, "scaled": {"data.scale": "standard"}}
PRECISIONS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}}


def input_rounding(dtype: torch.dtype) -> float:
    """The largest error of the derived digits' input values (100·g + 1000, g = 0..16) stored in ``dtype``, in
    grey levels (1 = one step of the picture) — computed, not assumed."""
    x = torch.arange(GREY_LEVELS, dtype=torch.float64) * SCALE + OFFSET
    return float((x.to(dtype).to(torch.float64) - x).abs().max() / SCALE)


def explain(r: LessonResult) -> list[str]:
    examples = [lesson_float_example(1e-10, 1e10, dtype) for dtype in (torch.float32, torch.float64)]
    lost = [e["dtype"] for e in examples if e["small_lost"]]
    kept = [e["dtype"] for e in examples if not e["small_lost"]]
    out = ["The lesson's example, computed here: " + "; ".join(e["text"] for e in examples) + ". "
           + (f"Lost in {' and '.join(lost)}" if lost else "Lost in neither")
           + (f", kept in {' and '.join(kept)}." if kept else ".")]
    out.append(f"The inputs here, 100·grey level + 1000: stored in bfloat16 they move by up to "
               f"{num(input_rounding(torch.bfloat16))} grey levels, in float32 by {num(input_rounding(torch.float32))}.")
    out += [verdict_sentence(r), "Precision matters more with the offset — " + verdict_sentence(r, r.check("interaction")),
            "With scaled inputs — " + verdict_sentence(r, r.check("scaled")),
            f"Test accuracy (best first): {ranking(r, 'test_accuracy')}."]
    return out + failed_arms(r)


LESSON = Lesson(
    name="floats",
    title_de="Werte in einem vernünftigen Bereich halten: Gleitkomma",
    quote_de="die Natur von Gleitkomma-Berechnungen ist so, dass Werte unterschiedlicher Größenordnungen nicht genau "
             "zusammen verarbeitet werden können. Zum Beispiel, wenn wir 10<sup>-10</sup> und 10<sup>10</sup> "
             "addieren, erhalten wir wahrscheinlich 10<sup>10</sup>, da der kleinere Wert auf die gleiche "
             "Größenordnung wie der größere \"umgerechnet\" wird und somit die Mantisse verloren geht.",
    claim="Values of different orders of magnitude cannot be processed accurately together in floating point: a "
          "network whose inputs carry small differences on a large offset loses accuracy when it computes with "
          "fewer mantissa bits.",
    definition="The lesson's sum itself is computed in the explanation (float32 and float64: 1e−10 + 1e10). The "
               "check in training: test accuracy of a 3×64 ReLU MLP computing in bfloat16 (autocast: 8 significant "
               "bits; weights, gradients and updates stay float32) minus the same MLP in float32 (24 bits), both on "
               f"the digits as 100·grey level + {OFFSET:g} — small differences (100 per grey level) on a large "
               "offset — fed to the network as they are (data.scale: none), paired by seed, each arm at its own "
               "tuned learning rate. Lower is the claim, so negated: positive = bfloat16 loses accuracy. Further "
               "checks: the same difference on the same inputs standardised (the offset removed in float64 before "
               "the network sees them), and the interaction — whether the precision costs more with the offset than "
               "without: per seed ½[(bf16 − fp32) with the offset − (bf16 − fp32) scaled], margin 0.005 (half a "
               "point, since the contrast is half the difference of differences).",
    base=DIGITS_MLP,
    factors={"inputs": INPUTS, "precision": PRECISIONS},
    checks=(
        Check("offset", "With the large offset, does bfloat16 give a lower test accuracy than float32?",
              TEST_ACCURACY, ("offset,bf16",), ("offset,fp32",), expects="lower"),
        Check("interaction", "Does the lower precision cost more with the offset than with scaled inputs?",
              TEST_ACCURACY, ("offset,bf16", "scaled,fp32"), ("offset,fp32", "scaled,bf16"), expects="lower",
              margin=0.005),
        Check("scaled", "With standardised inputs, does bfloat16 give a lower test accuracy than float32?",
              TEST_ACCURACY, ("scaled,bf16",), ("scaled,fp32",), expects="lower"),
    ),
    full=Variant(seeds=8, epochs=15),
    quick=Variant(seeds=3, epochs=3, tuning_seeds=1),
    explain=explain,
    derived_data="digits-x100",
)
