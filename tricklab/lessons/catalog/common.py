"""Pieces several lessons share: the base recipe they start from, and sentences about the mechanism views."""

from __future__ import annotations

import math
from typing import Any

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
