"""Überanpassung verhindern — early stopping, weight decay, model averaging and dropout against overfitting."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import EVAL_GAP, TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

TRAIN_EXAMPLES = 200
REMEDIES = {
    "early_stopping": {"early_stopping.patience": 5},
    "weight_decay": {"optimizer.name": "adam", "optimizer.decay": "l2", "optimizer.weight_decay": 0.01},
    "ensemble": {"averaging.mode": "ensemble", "averaging.k": 5},
    "dropout": {"model.dropout": 0.5},
}


def _params(r: LessonResult) -> int | None:
    for t in r.trials:
        n = (t.result or {}).get("num_params")
        if isinstance(n, int):
            return n
    return None


def _train_seconds(r: LessonResult, arm: str) -> float | None:
    vals = [float(s) for t in r.trials if t.arm == arm and isinstance(s := (t.result or {}).get("train_seconds"),
                                                                       int | float)]
    return sum(vals) / len(vals) if vals else None


def explain(r: LessonResult) -> list[str]:
    params = _params(r)
    out = [f"The model has {params:,} parameters for {TRAIN_EXAMPLES} training examples." if params else "",
           verdict_sentence(r), "Train/test gap — " + verdict_sentence(r, r.check("gap"))]
    out.append(f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.")
    out.append(f"Train − test accuracy gap (smallest first): {ranking(r, EVAL_GAP.key)}.")
    for remedy in REMEDIES:
        out.append(f"{remedy} alone: " + verdict_sentence(r, r.check(remedy)))
    ens, none = _train_seconds(r, "ensemble"), _train_seconds(r, "none")
    if ens and none:
        out.append(f"The price of averaging: the ensemble trained {num(ens / none, 2)}× as long as a single model "
                   f"({num(ens)} s vs {num(none)} s per trial).")
    return [s for s in out if s] + failed_arms(r)


LESSON = Lesson(
    name="overfitting",
    title_de="Überanpassung verhindern",
    quote_de="Auch wenn es verlockend sein mag, ein sehr leistungsstarkes neuronales Netzwerkmodell zu verwenden, "
             "sollten wir die Anzahl der Modellparameter immer mit der Anzahl der Trainingsbeispiele in Einklang "
             "bringen. […] Es gibt mehrere Möglichkeiten, Überanpassung zu verhindern: Frühes Stoppen […], "
             "Expliziter Gewichtsrückgang / Regularisierung […], Modellmittelwertbildung […], Dropout "
             "(implizite Modellmittelwertbildung)",
    claim="With few training examples and a large model, early stopping, weight decay, model averaging and "
          "dropout each prevent overfitting: they give a higher test accuracy than training without them.",
    definition=f"A 3×512 ReLU MLP (0.56 M parameters) trained on {TRAIN_EXAMPLES} digits. Test accuracy of the four "
               "remedies — early stopping (patience 5 on the validation loss, best weights restored), explicit "
               "weight decay (an L2 penalty λ/2·‖w‖² in the loss, λ = 0.01, with Adam), an ensemble of 5 models "
               "(averaged probabilities), dropout p = 0.5 — averaged per seed, minus the same training with none "
               "(Adam, no weight decay). Positive = the remedies help. The train − test accuracy gap (lower is the "
               "claim, so negated) and each remedy alone are further checks; the gap's train accuracy is the whole "
               "training split evaluated after training in eval mode (dropout off) by the model whose test accuracy "
               "is reported — the restored best weights under early stopping, all 5 members' averaged "
               "probabilities for the ensemble — not the mean over the last epoch's minibatches in training mode.",
    base={**DIGITS_MLP, "model": {**DIGITS_MLP["model"], "width": 512},
          "data": {"name": "digits", "train_subset": TRAIN_EXAMPLES, "batch_size": 32},
          "optimizer": {"name": "adamw", "weight_decay": 0.0}},
    factors={"remedy": {"none": {"early_stopping.patience": 0}, **REMEDIES}},
    checks=(
        Check("accuracy", "Do the four remedies give a higher test accuracy than none?", TEST_ACCURACY,
              tuple(REMEDIES), ("none",)),
        Check("gap", "Do the remedies shrink the train − test accuracy gap?", EVAL_GAP, tuple(REMEDIES), ("none",),
              expects="lower"),
        *(Check(name, f"{name.replace('_', ' ')} vs none", TEST_ACCURACY, (name,), ("none",)) for name in REMEDIES),
    ),
    full=Variant(seeds=8, epochs=60),
    quick=Variant(seeds=3, epochs=10, tuning_seeds=1),
    explain=explain,
    views=("training",),
)
