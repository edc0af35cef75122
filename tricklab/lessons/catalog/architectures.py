"""Verschiedene Netzwerkarchitekturen — ResNet and Inception adapt themselves to the needed complexity."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP, gradient_decades
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import FINAL_TRAIN_LOSS, GRADIENT_DECADES, TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

DEPTH = 12   # weight layers on the longest path; an Inception module has 2 (reduce → 3/5-wide convolution)
ARCHITECTURES = {
    "plain": {"model.name": "cnn", "model.depth": DEPTH},
    "resnet": {"model.name": "resnet", "model.depth": DEPTH},
    "inception": {"model.name": "inception", "model.depth": DEPTH // 2},
}
SELF_ADAPTING = ("resnet", "inception")


def _params(r: LessonResult, arm: str) -> int | None:
    for t in r.trials:
        n = (t.result or {}).get("num_params")
        if t.arm == arm and isinstance(n, int):
            return n
    return None


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Trainability (final training loss) — " + verdict_sentence(r, r.check("trainability"))]
    out.append(f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.")
    out.append(f"Final training loss (lowest first): {ranking(r, 'final_train_loss')}.")
    for name in SELF_ADAPTING:
        out.append(f"{name} alone: " + verdict_sentence(r, r.check(name)))
    sizes = {arm: _params(r, arm) for arm in r.arms if _params(r, arm)}
    if sizes:
        same = len(set(sizes.values())) == 1
        out.append(f"Parameters: {', '.join(f'{a} {n:,}' for a, n in sizes.items())} — equal depth, "
                   + ("and equal size." if same else "not equal size."))
    if r.init:
        decades = ", ".join(f"{arm} {num(gradient_decades(r, arm), 2)}" for arm in r.arms)
        out.append(f"At initialisation, decades the gradient std changes from the output layer back to the first: "
                   f"{decades}.")
    return out + failed_arms(r)


LESSON = Lesson(
    name="architectures",
    title_de="Verschiedene Netzwerkarchitekturen",
    quote_de="Eine weitere gute Möglichkeit wäre die Verwendung einer Architektur, die sich automatisch an die "
             "erforderliche Komplexität anpasst. Bis zu einem gewissen Grad sind die ResNet-Architektur und "
             "Inception selbstanpassend.",
    claim="ResNet and Inception adapt themselves to the complexity a task needs: made deeper than needed, they "
          "still train and reach a higher accuracy than a plain network of the same depth.",
    definition=f"Test accuracy of ResNet (pre-activation, identity shortcuts) and Inception (parallel 1/3/5-wide "
               f"branches), averaged per seed, minus the plain CNN, all {DEPTH} weight layers deep on the longest "
               f"path (CNN and ResNet depth {DEPTH}, Inception {DEPTH // 2} modules of 2), 32 channels, batch norm, "
               "on the 8×8 digits — far deeper than the digits need. Positive = the self-adapting architectures "
               "do better. Trainability — the final training loss, lower is the claim, so negated — is the second "
               "check.",
    base={**DIGITS_MLP, "model": {"name": "cnn", "width": 32, "norm": "batch"}},
    factors={"architecture": ARCHITECTURES},
    checks=(
        Check("accuracy", "Do ResNet and Inception give a higher test accuracy than the plain net of equal depth?",
              TEST_ACCURACY, SELF_ADAPTING, ("plain",)),
        Check("trainability", "Do ResNet and Inception reach a lower training loss?", FINAL_TRAIN_LOSS,
              SELF_ADAPTING, ("plain",), expects="lower"),
        *(Check(name, f"{name} vs plain", TEST_ACCURACY, (name,), ("plain",)) for name in SELF_ADAPTING),
        Check("gradient_decades", "Does the gradient keep its size through the depth at initialisation better "
              "than in the plain net?", GRADIENT_DECADES, SELF_ADAPTING, ("plain",), expects="lower"),
    ),
    full=Variant(seeds=5, epochs=10),
    quick=Variant(seeds=3, epochs=2, tuning_seeds=1),
    explain=explain,
    views=("init", "training"),
)
