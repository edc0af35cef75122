"""Gradient Clipping — θ = 1 or 10 keeps a deep network trainable at a high learning rate."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import DIVERGED, TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

LR = 0.2
CLIPPED = {f"{mode}-{theta}": {"clip.mode": mode, "clip.threshold": float(theta)}
           for mode in ("norm", "unit") for theta in (1, 10)}


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Divergence — " + verdict_sentence(r, r.check("divergence"))]
    rates = ", ".join(f"{arm} {sum(r.arm_values('diverged', arm).values()):g}/{len(r.arm_values('diverged', arm))}"
                      for arm in r.arms)
    out.append(f"Diverged runs (loss NaN/Inf) per arm: {rates}.")
    out.append(f"Test accuracy, a diverged run counted at chance (best first): {ranking(r, 'test_accuracy')}.")
    for name in CLIPPED:
        out.append(f"{name} alone: " + verdict_sentence(r, r.check(name)))
    none = r.training.get("none")
    if none is not None:
        norms = ", ".join(f"{arm} {num(p.global_grad_norm)}" for arm, p in r.training.items() if p is not None)
        out.append(f"The doctor's view: median global gradient norm before clipping over the probed steps — {norms}; "
                   "θ = 1 clips every step whose norm is above 1, θ = 10 only the large ones.")
    return out + failed_arms(r)


LESSON = Lesson(
    name="clipping",
    title_de="Gradient Clipping",
    quote_de="Wenn ||∇ℒ|| ≤ θ, verwenden wir den ursprünglichen Gradienten in der Gewichtsoptimierung, und wenn "
             "||∇ℒ|| > θ, teilen wir den Gradienten durch seine Norm. Hier ist θ ein Parameter, in den meisten "
             "Fällen können wir θ=1 oder θ=10 wählen.",
    claim="Gradient clipping with θ = 1 or θ = 10 keeps training stable: at a high learning rate a clipped deep "
          "network diverges less often and ends more accurate than an unclipped one.",
    definition=f"A 10×64 ReLU MLP (He init, no batch norm) trained with the lesson's momentum SGD at η = {LR:g} "
               "(20× the usual 1e-2), constant. Test accuracy — a diverged run counts at chance, 0.1 — of the four "
               "clipped arms (norm: g ← θ·g/‖g‖, the standard rule; unit: g ← g/‖g‖, the lesson's literal words; "
               "θ = 1 and 10) averaged per seed, minus no clipping. Positive = clipping helps. The divergence rate "
               "(lower is the claim, so negated) and each clipped arm alone are further checks.",
    base={**DIGITS_MLP, "model": {**DIGITS_MLP["model"], "depth": 10},
          "optimizer": {"name": "momentum", "lr": LR, "momentum": 0.9, "weight_decay": 0.0},
          "schedule": {"name": "constant"}},
    factors={"clip": {"none": {"clip.mode": "none"}, **CLIPPED}},
    checks=(
        Check("accuracy", "Does clipping (θ = 1 or 10, norm or unit) give a higher test accuracy?", TEST_ACCURACY,
              tuple(CLIPPED), ("none",)),
        Check("divergence", "Does clipping diverge less often?", DIVERGED, tuple(CLIPPED), ("none",),
              expects="lower"),
        *(Check(name, f"{name} vs none", TEST_ACCURACY, (name,), ("none",)) for name in CLIPPED),
    ),
    full=Variant(seeds=10, epochs=10),
    quick=Variant(seeds=3, epochs=3),
    explain=explain,
    views=("training",),
    tune=False,
    untuned=f"the claim is about training at a deliberately high learning rate (η = {LR:g}, 20× the usual): tuning "
            "each arm's LR would remove the very condition clipping is meant to survive",
)
