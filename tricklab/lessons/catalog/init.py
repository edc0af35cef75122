"""Initialisierung der Gewichte — N(0, 1) is not a good idea; variance-preserving inits keep signals in range."""

from __future__ import annotations

import math

from tricklab.lessons.catalog.common import DIGITS_MLP, gradient_decades, hidden_act_std, pct, saturation
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import GRADIENT_DECADES, TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

SCHEMES = ("normal", "uniform", "gaussian", "lecun", "glorot", "he", "lsuv")
ACTIVATIONS = ("tanh", "relu")
MATCHED = {"tanh": "glorot", "relu": "he"}
DEPTH = 20


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r)]
    for act in ACTIVATIONS:
        arms = [f"{act},{s}" for s in SCHEMES]
        out.append(f"{act}, test accuracy (best first): {ranking(r, 'test_accuracy', arms)}.")
        chance = [a.split(",")[1] for a in arms if (m := r.mean("test_accuracy", a)) is not None and m < 0.2]
        if chance:
            out.append(f"{act}: {', '.join(chance)} stayed near chance (mean test accuracy below 0.2 with 10 "
                       "classes): the network did not learn.")
        if r.init:
            stds = {s: hidden_act_std(r, f"{act},{s}") for s in SCHEMES}
            listed = ", ".join(f"{s} {num(v)}" for s, v in stds.items())
            known = {s: v for s, v in stds.items() if v is not None and v > 0}
            closest = min(known, key=lambda s: abs(math.log10(known[s]))) if known else None
            out.append(f"{act}, at initialisation: activation std of the last hidden layer (layer {DEPTH}) — "
                       f"{listed}" + (f"; closest to the input's scale of 1: {closest}." if closest else "."))
            decades = ", ".join(f"{s} {num(gradient_decades(r, f'{act},{s}'), 2)}" for s in SCHEMES)
            out.append(f"{act}, at initialisation: decades the gradient std changes from the output layer back to "
                       f"the first — {decades} (0 = no change).")
    if r.init:
        sat = saturation(r, "tanh,normal", layer=DEPTH - 1)
        if sat is not None:
            out.append(f"tanh with N(0, 1): the pre-activation of a unit with n_in = 64 inputs has a std of about "
                       f"√64 = 8 (the lesson says n; it is √n); measured, {pct(sat)} of the last hidden layer's "
                       "units are saturated (|tanh| > 0.97) at initialisation.")
        growth = _growth(r, "relu,normal")
        if growth is not None:
            out.append(f"ReLU with N(0, 1): the activation std is multiplied by {num(growth, 2)} per layer on "
                       f"average (theory: √(64/2) ≈ 5.7); with He by {num(_growth(r, 'relu,he'), 2)} (theory: 1).")
    grad = r.check("gradient_decades")
    out.append("Gradient at initialisation, N(0, 1) vs the matched init: " + verdict_sentence(r, grad))
    return out + failed_arms(r)


def _growth(r: LessonResult, arm: str) -> float | None:
    """Geometric mean of the layer-to-layer ratio of the activation std over the hidden layers at init."""
    stds = r.init_mean(arm, "act_std")[:DEPTH]
    ratios = [b / a for a, b in zip(stds, stds[1:]) if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)]
    return math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else None


def _arms(scheme: str) -> tuple[str, ...]:
    return tuple(f"{act},{scheme if scheme != 'matched' else MATCHED[act]}" for act in ACTIVATIONS)


LESSON = Lesson(
    name="init",
    title_de="Initialisierung der Gewichte",
    quote_de="Eine Normalverteilung N(0,1) ist keine gute Idee, da bei n Eingaben die Standardabweichung der "
             "Ausgabe n wäre und die Werte wahrscheinlich aus dem Bereich [0..1] herausfallen.",
    claim="N(0, 1) is not a good idea for initialising the weights: a deep network initialised from it trains "
          "worse than one with a variance-preserving initialisation.",
    definition=f"Test accuracy of {DEPTH}-layer MLPs (64 units, no batch norm) initialised from N(0, 1) minus the "
               "same nets with the variance-preserving init matched to their activation (Xavier/glorot for tanh, "
               "He for ReLU), averaged over the two activations per seed (a pool declared in advance: its verdict stands only "
               "where the tanh and the ReLU net's own effects agree in sign). The claim predicts N(0, 1) to be lower, "
               "so the difference is negated: positive = N(0, 1) is worse. The other inits of the lesson's list "
               "(uniform, gaussian N(0, 1/n), lecun) and LSUV are measured beside them.",
    base={**DIGITS_MLP, "model": {**DIGITS_MLP["model"], "depth": DEPTH}},
    factors={"activation": {act: {"model.activation": act} for act in ACTIVATIONS},
             "init": {s: {"init.scheme": s} for s in SCHEMES}},
    checks=(
        Check("normal_vs_matched", "Does N(0, 1) give a lower test accuracy than the matched init (Xavier for "
              "tanh, He for ReLU)?", TEST_ACCURACY, _arms("normal"), _arms("matched"), expects="lower",
              pool=ACTIVATIONS),
        Check("tanh", "tanh: N(0, 1) vs Xavier", TEST_ACCURACY, ("tanh,normal",), ("tanh,glorot",),
              expects="lower"),
        Check("relu", "ReLU: N(0, 1) vs He", TEST_ACCURACY, ("relu,normal",), ("relu,he",), expects="lower"),
        Check("gradient_decades", "Does N(0, 1) make the gradient change by more decades through the depth at "
              "initialisation than the matched init?", GRADIENT_DECADES, _arms("normal"), _arms("matched"),
              expects="higher"),
    ),
    full=Variant(seeds=5, epochs=15),
    quick=Variant(seeds=3, epochs=2, tuning_seeds=1),
    explain=explain,
    views=("init", "training"),
)
