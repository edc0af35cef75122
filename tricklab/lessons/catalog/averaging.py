"""Überanpassung verhindern — model averaging: train several models, average their results; it lowers the variance."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP, TEST_LOSS, spread_sentence, trial_number
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

SOURCE_DE = (
    '* Frühes Stoppen -- kontinuierliches Überwachen des Fehlers auf dem Validierungsdatensatz und '
    'Beenden des Trainings, wenn der Validierungsfehler zu steigen beginnt.\n * Expliziter '
    'Gewichtsrückgang / Regularisierung -- Hinzufügen einer zusätzlichen Strafe zur Verlustfunktion für '
    'hohe absolute Werte der Gewichte, was verhindert, dass das Modell sehr instabile Ergebnisse '
    'liefert\n * Modellmittelwertbildung -- Training mehrerer Modelle und anschließendes Mitteln der '
    'Ergebnisse. Dies hilft, die Varianz zu minimieren.\n * Dropout (implizite Modellmittelwertbildung)'
)
"""The paragraph of seed/TrainingTricks.de.md the quote is taken from, verbatim (the tests check the quote
against it: the tests read no file outside the repository)."""

TRAIN_EXAMPLES = 200
MEMBERS = 5
FEW_EXAMPLES: dict = {**DIGITS_MLP, "data": {"name": "digits", "train_subset": TRAIN_EXAMPLES, "batch_size": 32},
                      "optimizer": {"weight_decay": 0.0}}
"""Few training examples and no regularisation: where a single model's prediction depends most on its seed."""


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Test accuracy — " + verdict_sentence(r, r.check("accuracy"))]
    out.append(f"Test loss (lowest first): {ranking(r, 'test_loss')}; test accuracy (best first): "
               f"{ranking(r, 'test_accuracy')}.")
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        spread = spread_sentence(r, key, tuple(r.arms))
        if spread:
            out.append(f"Standard deviation of the {label} over the seeds (each seed its own split, so the split's "
                       f"noise is in it too; shown, not tested): {spread}.")
    ens, one = trial_number(r, "ensemble", "train_seconds"), trial_number(r, "single", "train_seconds")
    if ens and one:
        out.append(f"The price: the ensemble trained {num(ens / one, 2)}× as long as one model ({num(ens)} s vs "
                   f"{num(one)} s per trial).")
    return out + failed_arms(r)


LESSON = Lesson(
    name="averaging",
    title_de="Überanpassung verhindern: Modellmittelwertbildung",
    quote_de="Modellmittelwertbildung -- Training mehrerer Modelle und anschließendes Mitteln der Ergebnisse. "
             "Dies hilft, die Varianz zu minimieren.",
    claim="Training several models and averaging their results lowers the variance of the prediction: the averaged "
          "prediction has a lower test loss than one model's.",
    definition=f"Test loss (cross-entropy) of an ensemble of {MEMBERS} models (seeds s … s+{MEMBERS - 1}, their "
               "predicted probabilities averaged) minus that of one model (seed s, the ensemble's first member), "
               f"paired by seed; the 3×64 ReLU MLP trained on {TRAIN_EXAMPLES} digits without weight decay, each arm "
               "at its own tuned learning rate. Why the loss: the variance the lesson means is the spread of the "
               "prediction over trainings; the members share their expected prediction, so what averaging removes "
               "from the log loss is exactly their disagreement (Jensen: −log of the mean probability ≤ the mean of "
               "−log p) — a per-seed number, where the spread of accuracies across seeds is not (it is shown beside, "
               "untested). Lower is the claim, so negated: positive = averaging lowers the loss. Second check: test "
               "accuracy (higher).",
    base=FEW_EXAMPLES,
    factors={"averaging": {"single": {"averaging.mode": "none"},
                           "ensemble": {"averaging.mode": "ensemble", "averaging.k": MEMBERS}}},
    checks=(
        Check("loss", f"Does averaging {MEMBERS} models give a lower test loss than one model?", TEST_LOSS,
              ("ensemble",), ("single",), expects="lower"),
        Check("accuracy", f"Does averaging {MEMBERS} models give a higher test accuracy than one model?",
              TEST_ACCURACY, ("ensemble",), ("single",)),
    ),
    full=Variant(seeds=8, epochs=30),
    quick=Variant(seeds=3, epochs=3, tuning_seeds=1),
    explain=explain,
    views=("training",),
)
