"""Werte in einem vernünftigen Bereich halten — scale the inputs to [0, 1] or [−1, 1]."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP, first_layer_compare, pct, saturation
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

SCALED = ("minmax01", "minmax11")
RAW_MAX = 16   # the UCI digits' grey levels as scikit-learn ships them: 0..16


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r)]
    out.append(f"Test accuracy by input scaling (mean over seeds, best first): {ranking(r, 'test_accuracy')}.")
    std = r.check("standard")
    out.append("Standardisation (mean 0, std 1 per feature), which the lesson does not name: "
               + verdict_sentence(r, std))
    if r.init:
        raw_sat = saturation(r, "raw")
        parts = [f"{arm} {pct(saturation(r, arm))}" for arm in (*SCALED, "standard")]
        out.append(f"Mechanism, at initialisation: with raw inputs (grey levels 0…{RAW_MAX:g}) "
                   f"{pct(raw_sat)} of the first layer's tanh units are saturated (|a| > 0.97), against "
                   + ", ".join(parts) + " with scaled inputs. Gradient std of the first layer's weights, raw vs "
                   f"minmax01: {first_layer_compare(r, 'raw', 'minmax01', 'grad_std')}.")
    raw_steps = r.training.get("raw")
    scaled_steps = r.training.get("minmax01")
    if raw_steps is not None and scaled_steps is not None:
        out.append(f"During training (the doctor's probes), the first layer's median update ratio ‖Δw‖/‖w‖ is "
                   f"{num(raw_steps.update_ratio[0])} with raw inputs and {num(scaled_steps.update_ratio[0])} "
                   "with minmax01.")
    return out + failed_arms(r)


LESSON = Lesson(
    name="scaling",
    title_de="Werte in einem vernünftigen Bereich halten",
    quote_de="Die meisten Aktivierungsfunktionen haben Nichtlinearitäten im Bereich von [-1..1], daher macht es "
             "Sinn, alle Eingabedaten auf den Bereich [-1..1] oder [0..1] zu skalieren.",
    claim="Scaling the input data to [0, 1] or [−1, 1] makes a network train better than raw input values.",
    definition="Test accuracy with the lesson's two scalings (minmax01 → [0, 1] and minmax11 → [−1, 1], averaged "
               f"per seed) minus with the raw inputs as they come (the digits' grey levels 0…{RAW_MAX:g}, not "
               "scaled), paired by seed; a tanh MLP (3×64, Xavier init, no batch norm — the lesson's argument is about activations "
               "whose non-linearity lies in [−1, 1]). Positive = scaling helps.",
    base={**DIGITS_MLP, "model": {**DIGITS_MLP["model"], "activation": "tanh"}, "init": {"scheme": "glorot"}},
    factors={"scale": {"raw": {"data.scale": "none"}, "minmax01": {"data.scale": "minmax01"},
                       "minmax11": {"data.scale": "minmax11"}, "standard": {"data.scale": "standard"}}},
    checks=(
        Check("lesson_ranges", "Do inputs scaled to [0, 1] or [−1, 1] give a higher test accuracy than raw ones?",
              TEST_ACCURACY, SCALED, ("raw",)),
        Check("standard", "Does standardisation give a higher test accuracy than raw inputs?",
              TEST_ACCURACY, ("standard",), ("raw",)),
        Check("minmax01", "[0, 1] vs raw", TEST_ACCURACY, ("minmax01",), ("raw",)),
        Check("minmax11", "[−1, 1] vs raw", TEST_ACCURACY, ("minmax11",), ("raw",)),
    ),
    full=Variant(seeds=10, epochs=20),
    quick=Variant(seeds=3, epochs=6, tuning_seeds=1),
    explain=explain,
    views=("init", "training"),
)
