"""Lernratenabnahme — decrease η during training."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import FINAL_TRAIN_LOSS, TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

SCHEDULES = {
    "constant": {"schedule.name": "constant"},
    "exponential": {"schedule.name": "exponential", "schedule.gamma": 0.98},
    "step": {"schedule.name": "step", "schedule.gamma": 0.1},
    "cosine": {"schedule.name": "cosine"},
    "one_cycle": {"schedule.name": "one_cycle"},
}
DECAYING = tuple(s for s in SCHEDULES if s != "constant")
EPOCHS = 80   # ×0.98 per epoch for 80 epochs ends at 0.98^80 ≈ 0.20 of the peak: the lesson's decay matters (21
#              epochs, the first version, ended at 0.65)


def _final_lr(r: LessonResult, arm: str) -> float | None:
    vals = [h[-1].get("lr") for h in r.histories(arm) if h]
    vals = [float(v) for v in vals if isinstance(v, int | float)]
    return sum(vals) / len(vals) if vals else None


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "The lesson's own example, ×0.98 per epoch — " + verdict_sentence(r, r.check("exponential"))]
    out.append(f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.")
    out.append(f"Final training loss (lowest first): {ranking(r, 'final_train_loss', digits=3)}.")
    lrs = ", ".join(f"{arm} {num(_final_lr(r, arm))} of {num(r.lr(arm))}" for arm in r.arms)
    out.append(f"Learning rate in the last epoch, of each arm's peak: {lrs}.")
    for name in ("step", "cosine", "one_cycle"):
        out.append(f"{name} alone: " + verdict_sentence(r, r.check(name)))
    return out + failed_arms(r)


LESSON = Lesson(
    name="lr_decay",
    title_de="Lernratenabnahme",
    quote_de="Daher möchten wir in den meisten Fällen η im Verlauf des Trainings verringern. Dies kann erreicht "
             "werden, indem η nach jeder Epoche des Trainings mit einer Zahl (z. B. 0,98) multipliziert wird, oder "
             "durch die Verwendung eines komplizierteren Lernratenplans.",
    claim="Decreasing the learning rate during training — ×0.98 per epoch, or a more elaborate schedule — gives a "
          "better final model than keeping it constant.",
    definition="Test accuracy of the four decaying schedules — exponential (η·0.98^epoch, the lesson's example), "
               "step (×0.1 every step_size epochs), cosine (to 0), one-cycle (warm-up to η, then down) — averaged per "
               "seed, minus a constant η; all with the default optimizer (AdamW, no weight decay) on the 3×64 ReLU "
               f"MLP, {EPOCHS} epochs in the full variant so that ×0.98 per epoch ends at {0.98 ** EPOCHS:.2f} of "
               "the peak; every schedule, the constant one included, at its own tuned η. Positive = decaying helps. "
               "The exponential schedule alone and each other schedule are further checks.",
    base={**DIGITS_MLP, "optimizer": {"weight_decay": 0.0}},
    factors={"schedule": SCHEDULES},
    checks=(
        Check("decay_vs_constant", "Do decaying schedules give a higher test accuracy than a constant η?",
              TEST_ACCURACY, DECAYING, ("constant",)),
        Check("exponential", "×0.98 per epoch vs constant", TEST_ACCURACY, ("exponential",), ("constant",)),
        *(Check(name, f"{name} vs constant", TEST_ACCURACY, (name,), ("constant",))
          for name in ("step", "cosine", "one_cycle")),
        Check("train_loss", "Do decaying schedules end at a lower training loss?", FINAL_TRAIN_LOSS, DECAYING,
              ("constant",), expects="lower"),
    ),
    full=Variant(seeds=10, epochs=EPOCHS, overrides={"schedule.step_size": EPOCHS // 3}),
    quick=Variant(seeds=3, epochs=6, overrides={"schedule.step_size": 2}, tuning_seeds=1),
    explain=explain,
    views=("training",),
)
