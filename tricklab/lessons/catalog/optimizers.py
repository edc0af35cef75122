"""Optimierer / Trainingsalgorithmen — "if unsure, take Adam"."""

from __future__ import annotations

from tricklab.lessons.catalog.common import DIGITS_MLP
from tricklab.lessons.lesson import Check, Lesson, Variant
from tricklab.lessons.measures import TEST_ACCURACY
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.verdicts import NO_MEANINGFUL_DIFFERENCE, NOT_SUPPORTED, SUPPORTED
from tricklab.lessons.words import failed_arms, num, ranking, verdict_sentence

# Each at its library default learning rate: torch.optim's where it has one (Adagrad 1e-2, RMSprop 1e-2,
# Adam 1e-3); SGD has none in torch, so Keras's 1e-2 for SGD and momentum; normalised GD: tricklab's 1e-2.
OPTIMIZERS = {
    "sgd": {"optimizer.name": "sgd", "optimizer.lr": 0.01},
    "momentum": {"optimizer.name": "momentum", "optimizer.lr": 0.01, "optimizer.momentum": 0.9},
    "normalized": {"optimizer.name": "normalized", "optimizer.lr": 0.01},
    "adagrad": {"optimizer.name": "adagrad", "optimizer.lr": 0.01},
    "rmsprop": {"optimizer.name": "rmsprop", "optimizer.lr": 0.01},
    "adam": {"optimizer.name": "adam", "optimizer.lr": 0.001},
}
OTHERS = tuple(name for name in OPTIMIZERS if name != "adam")


def explain(r: LessonResult) -> list[str]:
    out = [verdict_sentence(r), "Adam vs plain SGD — " + verdict_sentence(r, r.check("sgd"))]
    out.append(f"Test accuracy (best first): {ranking(r, 'test_accuracy')}.")
    means = {arm: r.mean("test_accuracy", arm) for arm in r.arms}
    known = {a: m for a, m in means.items() if m is not None}
    if "adam" in known:
        rank = sorted(known.values(), reverse=True).index(known["adam"]) + 1
        out.append(f"Adam ranks {rank} of {len(known)} here.")
    if not r.smoke:   # a quick run judges nothing
        beaten = [c.check.name for c in r.checks[1:] if c.verdict == SUPPORTED]
        beat_adam = [c.check.name for c in r.checks[1:] if c.verdict == NOT_SUPPORTED]
        level = [c for c in r.checks[1:] if c.verdict == NO_MEANINGFUL_DIFFERENCE]
        if beaten:
            out.append(f"Adam is better than {', '.join(beaten)} (95% CI of the difference above 0, Holm-adjusted "
                       "p below 5%).")
        if beat_adam:
            out.append(f"Better than Adam: {', '.join(beat_adam)} (95% CI of the difference below 0, Holm-adjusted "
                       "p below 5%).")
        if level:
            out.append(f"No meaningful difference from Adam: {', '.join(c.check.name for c in level)} (95% CI "
                       f"inside ±{num(level[0].margin)} test accuracy).")
    norm = r.training.get("normalized")
    adam = r.training.get("adam")
    if norm is not None and adam is not None:
        out.append(f"The doctor's view: median update ratio ‖Δw‖/‖w‖ of the first layer — normalized "
                   f"{num(norm.update_ratio[0])}, adam {num(adam.update_ratio[0])} (about 1e-3 is healthy).")
    return out + failed_arms(r)


LESSON = Lesson(
    name="optimizers",
    title_de="Optimierer / Trainingsalgorithmen",
    quote_de="Adam gilt als ein sehr effizienter Algorithmus für viele Anwendungen. Wenn Sie sich nicht sicher "
             "sind, welchen Sie verwenden sollen, nehmen Sie Adam.",
    claim="If unsure which optimizer to use, take Adam: untuned, it does better than picking another one.",
    definition="Test accuracy of Adam minus the mean of the five others (SGD, momentum, normalised gradient descent "
               "— the rule the lesson calls \"Adagrad\" —, the real Adagrad, RMSprop), per seed, each at its "
               "library default learning rate (Adam 1e-3; Adagrad and RMSprop 1e-2, torch's defaults; SGD and "
               "momentum 1e-2, Keras's; normalised 1e-2), a constant learning rate and no weight decay, on the "
               "3×64 ReLU MLP. Positive = Adam is the better blind choice. Adam vs SGD alone and vs each other "
               "optimizer are further checks.",
    base={**DIGITS_MLP, "optimizer": {"weight_decay": 0.0}, "schedule": {"name": "constant"}},
    factors={"optimizer": OPTIMIZERS},
    checks=(
        Check("adam_vs_others", "Does Adam give a higher test accuracy than the mean of the other optimizers?",
              TEST_ACCURACY, ("adam",), OTHERS),
        *(Check(name, f"Adam vs {name}", TEST_ACCURACY, ("adam",), (name,)) for name in OTHERS),
    ),
    full=Variant(seeds=10, epochs=15),
    quick=Variant(seeds=3, epochs=5, tuning_seeds=1),
    explain=explain,
    views=("training",),
)
