"""Überanpassung verhindern — balance the number of parameters with the number of training examples."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP, trial_number
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import GAP, TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

SOURCE_DE = (
    'Ein sehr wichtiger Aspekt des Deep Learnings ist es, '
    '[Überanpassung](../../3-NeuralNetworks/05-Frameworks/Overfitting.md) zu verhindern. Auch wenn es '
    'verlockend sein mag, ein sehr leistungsstarkes neuronales Netzwerkmodell zu verwenden, sollten wir '
    'die Anzahl der Modellparameter immer mit der Anzahl der Trainingsbeispiele in Einklang bringen.'
)
"""The paragraph of seed/TrainingTricks.de.md the quote is taken from, verbatim (the tests check the quote
against it: the tests read no file outside the repository)."""

TRAIN_EXAMPLES = 200
DEPTH = 2
WIDTHS = (8, 64, 512)
ARMS = {f"w{w}": {"model.width": w} for w in WIDTHS}
SMALL, MEDIUM, LARGE = (f"w{w}" for w in WIDTHS)


def _params(width: int, inputs: int = 64, classes: int = 10) -> int:
    """Parameters of the DEPTH-layer MLP of this width (weights and biases)."""
    return inputs * width + width + (DEPTH - 1) * (width * width + width) + width * classes + classes


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Train − test gap — " + verdict_sentence(r, r.check("gap"))]
    sizes = []
    for arm in r.arms:
        n = trial_number(r, arm, "num_params")
        if n is not None:
            sizes.append(f"{arm} {n:,.0f} ({num(n / TRAIN_EXAMPLES)} per training example)")
    if sizes:
        out.append(f"Parameters: {', '.join(sizes)}.")
    out.append(f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.")
    out.append(f"Train − test accuracy gap (smallest first): {ranking(r, 'train_test_gap')}.")
    out.append(f"{MEDIUM} vs {SMALL} — " + verdict_sentence(r, r.check("medium")))
    return out + failed_arms(r)


LESSON = Lesson(
    name="capacity",
    title_de="Überanpassung verhindern: Parameter und Trainingsbeispiele",
    quote_de="Auch wenn es verlockend sein mag, ein sehr leistungsstarkes neuronales Netzwerkmodell zu verwenden, "
             "sollten wir die Anzahl der Modellparameter immer mit der Anzahl der Trainingsbeispiele in Einklang "
             "bringen.",
    claim="A model with far more parameters than training examples overfits: it reaches a lower test accuracy than "
          "a model whose size is in line with the examples.",
    definition=f"Test accuracy of a {DEPTH}-layer ReLU MLP {LARGE[1:]} units wide ({_params(WIDTHS[2]):,} parameters, "
               f"{_params(WIDTHS[2]) / TRAIN_EXAMPLES:,.0f} per example) minus one {SMALL[1:]} units wide "
               f"({_params(WIDTHS[0]):,} parameters, {_params(WIDTHS[0]) / TRAIN_EXAMPLES:.1f} per example), both "
               f"trained on {TRAIN_EXAMPLES} digits without any remedy (no weight decay, no dropout, no early "
               "stopping), each at its own tuned learning rate; paired by seed. The claim predicts the large model "
               "lower, so the difference is negated: positive = the too powerful model does worse. Further checks: "
               f"the train − test accuracy gap (larger for the large model is the claim) and the {MEDIUM[1:]}-wide "
               f"model ({_params(WIDTHS[1]):,} parameters) against the small one.",
    base={**DIGITS_MLP, "model": {**DIGITS_MLP["model"], "depth": DEPTH},
          "data": {"name": "digits", "train_subset": TRAIN_EXAMPLES, "batch_size": 32},
          "optimizer": {"weight_decay": 0.0}},
    factors={"width": ARMS},
    checks=(
        Check("accuracy", f"Does the {LARGE[1:]}-wide model give a lower test accuracy than the {SMALL[1:]}-wide one?",
              TEST_ACCURACY, (LARGE,), (SMALL,), expects="lower"),
        Check("gap", "Does the large model have a larger train − test accuracy gap?", GAP, (LARGE,), (SMALL,)),
        Check("medium", f"The {MEDIUM[1:]}-wide model vs the {SMALL[1:]}-wide one", TEST_ACCURACY, (MEDIUM,),
              (SMALL,), expects="lower"),
    ),
    full=Variant(seeds=8, epochs=60),
    quick=Variant(seeds=3, epochs=5, tuning_seeds=1),
    explain=explain,
    views=("training",),
)
