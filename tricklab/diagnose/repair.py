"""Repair policies: for each named problem, an ordered list of actions, tried one at a time.

On an alarm the doctor rolls the weights back to the last healthy in-memory snapshot and applies the next
action of that problem's policy. Two kinds of action:

- **in-run** (optimizer side, any model): scale the learning rate, switch on norm clipping, raise weight
  decay, stop at the last healthy weights. Applied to the running Trainer; training continues.
- **rebuild** (recipe side, built-in models only): a changed recipe (init, normalisation, activation,
  residual connections, input scaling, dropout, optimizer). The run ends and is started again from the
  changed recipe — a different architecture cannot continue from the old weights.

Order follows TRICKS.md ("Problems the doctor names") and the cost of each action: the cheapest, least
invasive action first. A repair budget bounds the total number of actions per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    """One repair step. ``lr_factor``/``clip``/``weight_decay_factor``/``stop`` are in-run; ``overrides``
    (dotted recipe keys) make it a rebuild. ``applies`` is checked against the current recipe (as a dict)."""

    name: str
    reason: str
    lr_factor: float | None = None
    clip_threshold: float | None = None
    weight_decay_factor: float | None = None
    stop: bool = False
    overrides: tuple[str, ...] = ()

    @property
    def rebuild(self) -> bool:
        return bool(self.overrides)

    def applies(self, recipe: dict[str, Any]) -> bool:
        """False when the action would change nothing (already so) or cannot apply (user model + model.*)."""
        user_model = bool(recipe.get("model", {}).get("python"))
        for override in self.overrides:
            key, _, value = override.partition("=")
            section, _, name = key.partition(".")
            if user_model and section == "model":
                return False
            current = recipe.get(section, {}).get(name) if name else recipe.get(section)
            if str(current) == value:
                return False
        if self.clip_threshold is not None:
            clip = recipe.get("clip", {})
            if clip.get("mode") == "norm" and clip.get("threshold", 0) <= self.clip_threshold:
                return False
        return True


LR_DOWN = Action("lr×0.1", "a smaller learning rate shrinks every update", lr_factor=0.1)
CLIP = Action("clip norm θ=1", "norm clipping bounds each step's size (the lesson's θ = 1)", clip_threshold=1.0)
NORM = Action("model.norm=batch", "batch norm keeps every layer's signal in range", overrides=("model.norm=batch",))


def _policies() -> dict[str, list[Action]]:
    he = Action("init.scheme=he", "He init keeps the signal's variance through ReLU layers",
                overrides=("init.scheme=he", "model.activation=relu"))
    lecun = Action("init.scheme=lecun", "LeCun init keeps mean 0 / std 1 through the layers",
                   overrides=("init.scheme=lecun",))
    residual = Action("model.name=resnet", "identity shortcuts carry the gradient past every block",
                      overrides=("model.name=resnet",))
    return {
        "nan_loss": [LR_DOWN, CLIP, LR_DOWN, LR_DOWN, NORM],
        "exploding_gradients": [LR_DOWN, CLIP, LR_DOWN, NORM],
        "loss_spike": [LR_DOWN, CLIP, LR_DOWN],
        "vanishing_gradients": [he, NORM, residual],
        "saturation": [lecun, NORM, he],
        "dead_units": [
            LR_DOWN,  # the cheapest fix first: large updates are what usually pushes ReLUs into the dead zone
            LR_DOWN,
            Action("model.activation=leaky_relu", "a leaky ReLU keeps a gradient for negative inputs",
                   overrides=("model.activation=leaky_relu",)),
            Action("init.scheme=he", "a fresh He init revives the units", overrides=("init.scheme=he",)),
        ],
        "update_ratio_high": [LR_DOWN, CLIP, LR_DOWN],
        "update_ratio_low": [Action("lr×10", "updates are ~1e-5 of the weights: the learning rate is too small",
                                    lr_factor=10.0)] * 3,
        "plateau": [
            Action("lr×10", "the loss is not moving: a larger learning rate", lr_factor=10.0),
            Action("optimizer.name=adam", "Adam adapts the step per coordinate (the lesson: if unsure, Adam)",
                   overrides=("optimizer.name=adam", "optimizer.decay=l2", "optimizer.lr=0.003")),
            Action("schedule.name=one_cycle", "a one-cycle schedule warms up and then anneals",
                   overrides=("schedule.name=one_cycle",)),
        ],
        "overfitting": [
            Action("early stop", "stop at the last healthy weights (early stopping)", stop=True),
        ],
        "unscaled_inputs": [Action("data.scale=standard", "standardise inputs with training-split statistics",
                                   overrides=("data.scale=standard",))],
    }


POLICIES: dict[str, list[Action]] = _policies()

PRIORITY = ("nan_loss", "exploding_gradients", "loss_spike", "update_ratio", "dead_units", "vanishing_gradients",
            "saturation", "unscaled_inputs", "plateau", "oscillation", "overfitting", "too_many_parameters")
"""When several problems appear at once, the one acted on first: instability before its symptoms (a learning
rate far too high also kills ReLUs and stalls the loss), the network before the optimisation schedule."""

PLATEAU_AFTER_INSTABILITY = Action("lr×0.1", "the loss stalls after an unstable start: the learning rate is still "
                                   "too high for the loss to fall", lr_factor=0.1)


def policy_key(kind: str, evidence: dict[str, float]) -> str:
    """The policy for an alarm: the update-ratio alarm has two directions."""
    if kind == "update_ratio":
        ratio = evidence.get("log10_update_ratio", evidence.get("log10_ratio", -3.0))
        return "update_ratio_high" if ratio > -3 else "update_ratio_low"
    return kind


@dataclass
class RepairPlan:
    """Which action comes next for each problem, and how many repairs are left."""

    budget: int = 4
    used: int = 0
    tried: dict[str, int] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    lowered_lr: bool = False

    def next_action(self, kind: str, evidence: dict[str, float], recipe: dict[str, Any]) -> Action | None:
        """The next applicable action for ``kind`` (advancing past inapplicable ones), or None.

        A plateau that follows a learning-rate cut for instability is not answered by raising the rate again
        (that would undo the repair): the rate is cut once more."""
        if self.used >= self.budget:
            return None
        key = policy_key(kind, evidence)
        if key == "plateau" and self.lowered_lr:
            self.used += 1
            return PLATEAU_AFTER_INSTABILITY
        actions = POLICIES.get(key, [])
        while self.tried.get(key, 0) < len(actions):
            action = actions[self.tried[key] if key in self.tried else 0]
            self.tried[key] = self.tried.get(key, 0) + 1
            if action.applies(recipe):
                self.used += 1
                self.lowered_lr = self.lowered_lr or (action.lr_factor is not None and action.lr_factor < 1)
                return action
        return None

    def record(self, step: int, action: Action, alarm_kind: str, message: str) -> dict[str, Any]:
        entry = {"step": step, "action": action.name, "reason": f"{alarm_kind}: {message} → {action.reason}"}
        self.log.append(entry)
        return entry
