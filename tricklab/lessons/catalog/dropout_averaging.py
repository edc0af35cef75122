"""Dropout — "implicit model averaging": slightly different models are trained during dropout."""

from __future__ import annotations

from tricklab.lessons.catalog.averaging import FEW_EXAMPLES, MEMBERS
from tricklab.lessons.catalog.common import TEST_LOSS, spread_sentence
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, ranking, verdict_sentence

SOURCE_DE = (
    '* Es kann als zufälliger Schockfaktor für das Modell betrachtet werden, der die Optimierung aus '
    'einem lokalen Minimum herausführt\n * Es kann als *implizites Modellmittelwertbilden* betrachtet '
    'werden, da man sagen kann, dass während des Dropouts leicht unterschiedliche Modelle trainiert '
    'werden'
)
"""The paragraph of seed/TrainingTricks.de.md the quote is taken from, verbatim (the tests check the quote
against it: the tests read no file outside the repository)."""

WIDTH = 256
RATE = 0.5


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Explicit averaging, the reference — " + verdict_sentence(r, r.check("ensemble")),
           "Dropout vs the explicit average — " + verdict_sentence(r, r.check("dropout_vs_ensemble")),
           "Test accuracy — " + verdict_sentence(r, r.check("accuracy")),
           f"Test loss (lowest first): {ranking(r, 'test_loss')}; test accuracy (best first): "
           f"{ranking(r, 'test_accuracy')}."]
    spread = spread_sentence(r, "test_accuracy", tuple(r.arms))
    if spread:
        out.append(f"Standard deviation of the test accuracy over the seeds (each seed its own split; shown, not "
                   f"tested): {spread}.")
    return out + failed_arms(r)


LESSON = Lesson(
    name="dropout_averaging",
    title_de="Dropout: implizites Modellmittelwertbilden",
    quote_de="Es kann als *implizites Modellmittelwertbilden* betrachtet werden, da man sagen kann, dass während "
             "des Dropouts leicht unterschiedliche Modelle trainiert werden",
    claim="Dropout acts as implicit model averaging: like an explicit average of several models, it lowers the "
          "test loss of a model that would otherwise overfit.",
    definition=f"Test loss (cross-entropy) of a 3×{WIDTH} ReLU MLP with dropout p = {RATE:g} after every hidden "
               f"layer minus the same MLP without dropout, paired by seed, trained on {FEW_EXAMPLES['data']['train_subset']} "
               "digits without weight decay, each arm at its own tuned learning rate. Lower is the claim, so "
               "negated: positive = dropout lowers the loss. If dropout is an average of the subnetworks it trains, it "
               f"should act as an explicit average does: the same comparison for an ensemble of {MEMBERS} models "
               "without dropout (their probabilities averaged) is the reference check, and dropout against that "
               "ensemble is a third (no meaningful difference = as good as the explicit average). Test accuracy is "
               "a fourth.",
    base={**FEW_EXAMPLES, "model": {**FEW_EXAMPLES["model"], "width": WIDTH}},
    factors={"model": {"none": {"model.dropout": 0.0}, "dropout": {"model.dropout": RATE},
                       "ensemble": {"averaging.mode": "ensemble", "averaging.k": MEMBERS}}},
    checks=(
        Check("loss", f"Does dropout p = {RATE:g} give a lower test loss than no dropout?", TEST_LOSS, ("dropout",),
              ("none",), expects="lower"),
        Check("ensemble", f"Does an ensemble of {MEMBERS} give a lower test loss than one model?", TEST_LOSS,
              ("ensemble",), ("none",), expects="lower"),
        Check("dropout_vs_ensemble", "Dropout (implicit averaging) vs the explicit ensemble: test loss", TEST_LOSS,
              ("dropout",), ("ensemble",), expects="lower"),
        Check("accuracy", f"Does dropout p = {RATE:g} give a higher test accuracy than no dropout?", TEST_ACCURACY,
              ("dropout",), ("none",)),
    ),
    full=Variant(seeds=8, epochs=30),
    quick=Variant(seeds=3, epochs=3, tuning_seeds=1),
    explain=explain,
    views=("training",),
)
