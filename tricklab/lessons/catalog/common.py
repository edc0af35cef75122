"""Pieces several lessons share: the base recipe they start from, and sentences about the mechanism views."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tricklab.lessons.lesson import Measure, TrialView
from tricklab.lessons.outcome import LessonResult
from tricklab.lessons.words import num, ratio_words

DIGITS_MLP: dict[str, Any] = {
    "data": {"name": "digits"},
    "model": {"name": "mlp", "depth": 3, "width": 64, "activation": "relu", "norm": "none", "dropout": 0.0},
    "init": {"scheme": "he"},
}
"""The small workhorse: the UCI digits (1,294 train / 143 validation / 360 test examples, real handwriting) and
a 3×64 ReLU MLP without normalisation — a fraction of a second per epoch on one core, so every lesson can
afford many seeds. Everything not named here is the default recipe (AdamW 3e-3 with decoupled weight decay
5e-4, one-cycle schedule, batch 64)."""


def layer_walk(result: LessonResult, arm: str, attr: str = "act_std") -> str | None:
    """How an init-profile statistic changes from the first to the last weight layer of ``arm`` (mean over
    seeds): "from 0.82 in body.layer1 to 3.1e+05 in out"."""
    values = result.init_mean(arm, attr)
    profiles = list(result.init.get(arm, {}).values())
    if not values or not profiles:
        return None
    layers = profiles[0].layers
    return f"from {num(values[0])} ({layers[0]}) to {num(values[-1])} ({layers[len(values) - 1]})"


def hidden_act_std(result: LessonResult, arm: str) -> float | None:
    """Mean over seeds of the activation std of the last hidden layer (the layer before the logits) at init."""
    values = result.init_mean(arm, "act_std")
    return values[-2] if len(values) >= 2 and math.isfinite(values[-2]) else None


def gradient_decades(result: LessonResult, arm: str) -> float | None:
    vals = [p.attenuation() for p in result.init.get(arm, {}).values()]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def first_layer_compare(result: LessonResult, a: str, b: str, attr: str) -> str | None:
    """The first weight layer's ``attr`` at init in arm ``a`` compared with arm ``b``."""
    va, vb = result.init_mean(a, attr), result.init_mean(b, attr)
    if not va or not vb:
        return None
    return f"{num(va[0])} vs {num(vb[0])} ({ratio_words(va[0], vb[0])})"


def saturation(result: LessonResult, arm: str, layer: int = 0) -> float | None:
    profiles = list(result.init.get(arm, {}).values())
    vals = [p.frac_saturated[layer] for p in profiles if len(p.frac_saturated) > layer
            and p.frac_saturated[layer] is not None]
    return sum(vals) / len(vals) if vals else None


def pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


# -- measures and sentences the lessons of issue 16 item 8 share ------------------------------------------------------
def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _test_loss(trial: TrialView) -> float | None:
    r = trial.result
    if r is None or trial.status in ("failed", "diverged"):
        return None
    return _finite_number(r.get("test_loss"))


TEST_LOSS = Measure(
    "test_loss", "test loss (cross-entropy)", False, _test_loss,
    note="the mean negative log-likelihood of the true class on the test split, of the averaged probabilities for "
         "an ensemble; diverged runs have none; margin 5% of the baseline's loss", margin=0.05, relative_margin=True)


def _first_epoch_val(trial: TrialView) -> float | None:
    r = trial.result
    if r is None or trial.status == "failed":
        return None
    if trial.status == "diverged":
        classes = (r.get("data") or {}).get("num_classes") if isinstance(r.get("data"), Mapping) else None
        return 1.0 / classes if isinstance(classes, int) and classes > 0 else None
    history = r.get("history")
    if not isinstance(history, list) or not history or not isinstance(history[0], Mapping):
        return None
    return _finite_number(history[0].get("val_accuracy"))


FIRST_EPOCH_VAL = Measure(
    "val_accuracy_epoch1", "validation accuracy after the first epoch", True, _first_epoch_val,
    note="the validation accuracy at the end of epoch 1; a diverged run counts at chance (1/classes); margin 0.01",
    margin=0.01)


def trial_number(result: LessonResult, arm: str, key: str) -> float | None:
    """The mean over the arm's finished trials of a number in their result (``num_params``, ``train_seconds``)."""
    vals = [v for t in result.trials if t.arm == arm and (v := _finite_number((t.result or {}).get(key))) is not None]
    return sum(vals) / len(vals) if vals else None


def spread_sentence(result: LessonResult, key: str, arms: tuple[str, ...]) -> str | None:
    """The seed-to-seed standard deviation of measure ``key`` per arm, the first compared with the others in
    words chosen from the numbers: "single 0.012, ensemble 0.008 (ensemble: 1.5× smaller than single)"."""
    stds = {a: s.std for a in arms if (s := result.summaries.get(key, {}).get(a)) is not None and s.std is not None}
    if len(stds) < 2:
        return None
    first, *others = list(stds)
    def compare(o: str) -> str:
        words = ratio_words(stds[o], stds[first])
        joint = {"about equal": "to", "not comparable": "with"}.get(words, "than")
        return f"{o}: {words} {joint} {first}"

    words = "; ".join(compare(o) for o in others)
    return ", ".join(f"{a} {num(v)}" for a, v in stds.items()) + f" ({words})"
