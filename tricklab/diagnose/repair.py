"""Repair policies: for each named problem, an ordered list of actions, tried one at a time.

On an alarm the doctor rolls the weights back to the last healthy in-memory snapshot and applies the next
action of that problem's policy. Two kinds of action:

- **in-run** (optimizer side, any model): scale the learning rate, switch on norm clipping, raise weight
  decay, stop at the last healthy weights. Applied to the running Trainer; training continues.
- **rebuild** (recipe side, built-in models only): a changed recipe (init, normalisation, activation,
  residual connections, input scaling, dropout, optimizer). The run ends and is started again from the
  changed recipe — a different architecture cannot continue from the old weights.
- **restart**: a fresh initialisation from the same recipe (``reinit``), for weights that were broken from
  the start. An in-run action whose rollback would land on the initial weights (no healthy epoch yet) is
  applied as a restart too, carrying the change (learning rate, clipping) into the recipe: the repaired run
  then gets the whole step budget and schedule, not what was left of them.

Order follows TRICKS.md ("Problems the doctor names") and the cost of each action: the cheapest, least
invasive action first. A repair budget bounds the total number of actions per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from tricklab.tricks.init import SOUND_SCHEMES


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
    reinit: bool = False
    patience: int | None = None    # switch on early stopping (epochs without a better validation loss)
    scheme: str | None = None      # re-initialise the existing model in place with this init scheme (in-run)
    schemes: tuple[str, ...] = ()  # ... or with the first of these whose signal stays sound (``smallest_sound_init_``)
    usual_lr: bool = False         # set the learning rate to the optimizer's usual one (``USUAL_LR``)
    user_only: bool = False        # only for a user's model (``model.python``)

    @property
    def rebuild(self) -> bool:
        """The run must start again (a changed recipe or a fresh initialisation)."""
        return bool(self.overrides) or self.reinit

    def applies(self, recipe: dict[str, Any]) -> bool:
        """False when the action would change nothing (every override already holds) or cannot apply (a user
        model and a ``model.*`` override, or norm clipping already at least as tight)."""
        user_model = bool(recipe.get("model", {}).get("python"))
        if self.user_only and not user_model:
            return False
        if self.reinit and user_model and recipe.get("init", {}).get("scheme", "default") == "default":
            return False   # a fresh build of a user's model runs its own (broken) init again: no repair
        if self.overrides:
            changes = []
            for override in self.overrides:
                key, _, value = override.partition("=")
                section, _, name = key.partition(".")
                if user_model and section == "model":
                    return False
                current = recipe.get(section, {}).get(name) if name else recipe.get(section)
                changes.append(str(current) != value)
            if not any(changes):
                return False
        if self.clip_threshold is not None:
            clip = recipe.get("clip", {})
            if clip.get("mode") == "norm" and clip.get("threshold", 0) <= self.clip_threshold:
                return False
        return True


LR_DOWN = Action("lr×0.1", "a smaller learning rate shrinks every update", lr_factor=0.1)
CLIP = Action("clip norm θ=1", "norm clipping bounds each step's size (the lesson's θ = 1)", clip_threshold=1.0)
NORM = Action("model.norm=batch", "batch norm keeps every layer's signal in range", overrides=("model.norm=batch",))
REINIT = Action("re-initialise", "units broken from the start come back with fresh weights from the recipe's init",
                reinit=True)
OVERSIZED = Action("lr×0.1", "the steps before it were oversized (median update ratio above 1e-1 at the peak "
                   "rate): the learning rate is the cause, a smaller one the cure", lr_factor=0.1)
USUAL = Action("lr → the optimizer's usual rate", "a rate far outside the optimizer's typical range is the cause: "
               "the usual rate for this optimizer (``USUAL_LR``) is where its runs train", lr_factor=1.0,
               usual_lr=True)


def reinit_in_place(scheme: str, user_only: bool = False) -> Action:
    """Re-initialise every Linear/Conv weight of the running model with ``scheme`` (biases 0), in place."""
    why = {"he": "He init (variance 2/n_in) keeps a ReLU net's signal at one scale from layer to layer",
           "lecun": "LeCun init (variance 1/n_in) keeps tanh units in their linear range",
           "glorot": "Glorot init (variance 2/(n_in + n_out)), made for sigmoid nets, keeps them out of saturation"
           }[scheme]
    return Action(f"re-initialise in place (init.scheme={scheme})", why, scheme=scheme, user_only=user_only)


SMALLEST_SOUND_INIT = Action(
    "re-initialise in place (the smallest sound init.scheme)",
    "of Glorot, LeCun and He, the smallest init whose signal on this batch stays within a decade of the input's scale "
    "from layer to layer: it trains at least as well as a larger one, and the decade is where depth starts to hurt "
    "(tricks.init.smallest_sound_init_)", schemes=SOUND_SCHEMES)


BF16 = Action("precision=bf16", "bfloat16 has float32's range: nothing overflows or underflows, no loss scale is "
              "needed", overrides=("precision=bf16",))
LEAKY = Action("model.activation=leaky_relu", "a leaky ReLU keeps a gradient for negative inputs",
               overrides=("model.activation=leaky_relu",))


def _policies() -> dict[str, list[Action]]:
    standard = Action("ReLU + He + batch norm", "the lesson's standard cure: ReLUs do not saturate, He init keeps the "
                      "signal's variance, batch norm keeps every layer in range",
                      overrides=("model.activation=relu", "init.scheme=he", "model.norm=batch"))
    lecun = Action("init.scheme=lecun", "LeCun init keeps mean 0 / std 1 through the layers",
                   overrides=("init.scheme=lecun",))
    residual = Action("model.name=resnet", "identity shortcuts carry the gradient past every block",
                      overrides=("model.name=resnet",))
    return {
        "nan_loss": [LR_DOWN, CLIP, LR_DOWN, LR_DOWN, NORM],
        "exploding_gradients": [LR_DOWN, CLIP, LR_DOWN, NORM],
        "loss_spike": [LR_DOWN, CLIP, LR_DOWN],
        "vanishing_gradients": [standard, residual],
        "saturation": [lecun, standard],
        # dead from the start (a bad initial state): fresh weights first (a user's model: a named scheme in place,
        # since its own init made them dead); a leaky ReLU if they die again
        "dead_units": [REINIT, reinit_in_place("he", user_only=True), LEAKY, LR_DOWN],
        # a broken initialisation: a named scheme applied to the existing model, in place
        "exploding_init": [SMALLEST_SOUND_INIT, reinit_in_place("he")],
        "vanishing_init": [SMALLEST_SOUND_INIT, reinit_in_place("he")],
        "exploding_init_saturating": [reinit_in_place("lecun"), reinit_in_place("he")],
        "vanishing_init_saturating": [reinit_in_place("lecun"), reinit_in_place("he")],
        # a rate outside the optimizer's range: into it, at the optimizer's usual rate; then the adapted changes
        "lr_too_high": [USUAL, OVERSIZED, CLIP, LR_DOWN],
        "lr_too_low": [USUAL] + [Action("lr×10", "the learning rate is below the optimizer's typical range",
                                        lr_factor=10.0)] * 2,
        # dead after oversized steps (the update ratio was far above 1e-3): the learning rate first
        "dead_units_unstable": [OVERSIZED, LR_DOWN, LEAKY, REINIT],
        # a loss that goes up and down by half its start value: steps too large for the surface
        "oscillation": [LR_DOWN, CLIP, LR_DOWN],
        "update_ratio_high": [LR_DOWN, CLIP, LR_DOWN],
        # a flat loss while the steps are oversized: they overshoot the valley; a larger rate would make it worse
        "plateau_unstable": [OVERSIZED, CLIP, LR_DOWN],
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
            Action("early stopping (patience 3)", "keep training while the validation loss improves, then stop with "
                   "the weights of its best epoch", patience=3),
            Action("early stop", "stop now with the weights of the best validation loss", stop=True),
        ],
        # float16's range: the format with float32's range first, then smaller steps (overflow) or normalised layers
        "fp16_overflow": [BF16, LR_DOWN, CLIP],
        "fp16_underflow": [BF16, NORM],
        "unscaled_inputs": [Action("data.scale=standard", "standardise inputs with training-split statistics",
                                   overrides=("data.scale=standard",))],
    }


POLICIES: dict[str, list[Action]] = _policies()

PRIORITY = ("output_loss_mismatch", "linear_model", "fp16_overflow", "exploding_init", "vanishing_init",
            "lr_too_high", "nan_loss", "exploding_gradients", "loss_spike", "update_ratio", "lr_too_low", "dead_units",
            "vanishing_gradients", "saturation", "fp16_underflow", "unscaled_inputs", "plateau", "oscillation",
            "overfitting", "too_many_parameters")
"""When several problems appear at once, the one acted on first: instability before its symptoms (a learning
rate far too high also kills ReLUs and stalls the loss), the network before the optimisation schedule."""

PLATEAU_AFTER_INSTABILITY = Action("lr×0.1", "the loss stalls after an unstable start: the learning rate is still "
                                   "too high for the loss to fall", lr_factor=0.1)


UNSTABLE_UPDATE_RATIO = 1e-1
"""A median ‖Δw‖/‖w‖ above this (at the peak learning rate; the update-ratio detector's upper bound, 100 ×
Karpathy's 1e-3) means the steps were oversized."""
HEALTHY_PEAK_RATIO = 3e-2
"""Where an adapted learning-rate change aims the median ‖Δw‖/‖w‖ at the peak rate (ours). Measured on healthy
runs of the default CNN (15 epochs, one-cycle), at the first probe and later at the peak: AdamW 3e-3 0.027 and
~0.01; SGD 0.1 0.013 and 0.009; SGD 0.3 0.038 and 0.02–0.03; SGD 1 0.13 and 0.075; momentum 0.05 (first step
×10, see ``DoctorCallback._momentum_gain``) 0.06 and 0.013–0.028. SGD still trains at lr 3 (0.38 at the first
probe, 98 %) and fails from lr 5 on (0.63: 70–98 % by seed and thread count; lr 10: chance). 3e-2 lies in the middle of the
healthy range and a decade below that edge, so a cut measured at the first probe lands where the run trains
(SGD ≈ 0.24, Adam ≈ 3e-3 on this net) — above Karpathy's 1e-3, which describes SGD late in training. A cut
that lands a little high is caught by the next alarm; one that lands far too low wastes the run."""


SYMPTOMS_OF_OVERSIZED_STEPS = ("dead_units", "plateau")
"""Problems a learning rate far too high also produces (it kills ReLUs; it makes the loss overshoot so it
stalls): after oversized steps the cause is treated, not the symptom — a plateau's usual cure, a larger
rate, would make it worse."""


def policy_key(kind: str, evidence: dict[str, float], unstable: bool = False) -> str:
    """The policy for an alarm: the update-ratio alarm has two directions; dead units and a plateau two causes
    each (``unstable``: the steps before them were oversized, or an instability was already named)."""
    if kind == "update_ratio":
        ratio = evidence.get("log10_update_ratio", evidence.get("log10_ratio", -3.0))
        return "update_ratio_high" if ratio > -3 else "update_ratio_low"
    if kind in SYMPTOMS_OF_OVERSIZED_STEPS and unstable:
        return f"{kind}_unstable"
    if kind in ("exploding_init", "vanishing_init") and evidence.get("saturating", 0.0) > 0.5:
        return f"{kind}_saturating"
    return kind


CODE_CHANGE_KINDS = frozenset({"linear_model", "output_loss_mismatch"})
"""Problems only the model's code can fix (tricklab never rewrites a user's model): the repair log says
"needs a code change" and the alarm's advice names the change."""

NEEDS_CODE_CHANGE = "needs a code change"


def needs_code_change(kind: str, evidence: dict[str, float], recipe: dict[str, Any]) -> bool:
    """True when only a change of the model's code can repair ``kind`` (asked once no action is left): a
    code-change kind, or a user's model (``model.python``) whose policy has architecture remedies (``model.*``
    overrides), which are never faked on a user's model."""
    if kind in CODE_CHANGE_KINDS:
        return True
    if not recipe.get("model", {}).get("python"):
        return False
    return any(o.startswith("model.") for a in POLICIES.get(policy_key(kind, evidence), []) for o in a.overrides)


class Repair(TypedDict):
    """One entry of the repair log, as ``tricklab doctor --json`` prints it under ``repairs`` (DESIGN.md):
    the step it was applied at, what was done (``lr×0.1``, ``clip norm θ=1``, ``model.norm=batch``, ...), and
    why (``"<alarm kind>: <alarm message> → <the action's reason>"``).

    A ``TypedDict``, not a dataclass: the log is JSON the CLI prints as it is, and the callers that read it
    (tests, ``bench/doctor_corpus.py``) index it by key."""

    step: int
    action: str
    reason: str


@dataclass
class RepairPlan:
    """Which action comes next for each problem, and how many repairs are left."""

    budget: int = 4
    used: int = 0
    tried: dict[str, int] = field(default_factory=dict)
    log: list[Repair] = field(default_factory=list)
    lowered_lr: bool = False

    def next_action(self, kind: str, evidence: dict[str, float], recipe: dict[str, Any],
                    unstable: bool = False) -> Action | None:
        """The next applicable action for ``kind`` (advancing past inapplicable ones), or None.

        A plateau that follows a learning-rate cut for instability is not answered by raising the rate again
        (that would undo the repair): the rate is cut once more. ``unstable``: the run's recent steps were
        oversized (see ``policy_key``)."""
        if self.used >= self.budget:
            return None
        key = policy_key(kind, evidence, unstable)
        if key == "plateau" and self.lowered_lr:
            self.used += 1
            return PLATEAU_AFTER_INSTABILITY
        actions = POLICIES.get(key, [])
        while self.tried.get(key, 0) < len(actions):
            action = actions[self.tried[key] if key in self.tried else 0]
            self.tried[key] = self.tried.get(key, 0) + 1
            if action.applies(recipe):
                self.used += 1
                self.lowered_lr = self.lowered_lr or (action.lr_factor is not None and action.lr_factor < 1) \
                    or (action.usual_lr and key == "lr_too_high")
                return action
        return None

    def note_code_change(self, step: int, alarm_kind: str, message: str, advice: list[str]) -> Repair | None:
        """Log, once per kind, that ``alarm_kind`` needs a change of the model's code (no budget spent)."""
        if any(r["action"] == NEEDS_CODE_CHANGE and r["reason"].startswith(f"{alarm_kind}:") for r in self.log):
            return None
        change = next((a for a in advice if a.startswith(NEEDS_CODE_CHANGE)), advice[0] if advice else "")
        entry = Repair(step=step, action=NEEDS_CODE_CHANGE, reason=f"{alarm_kind}: {message} → {change}")
        self.log.append(entry)
        return entry

    def record(self, step: int, action: Action, alarm_kind: str, message: str, name: str | None = None) -> Repair:
        """Log one repair; ``name`` is what was really done when it differs from the action's name (an
        adapted learning-rate factor, an in-run change applied as a restart)."""
        entry = Repair(step=step, action=name or action.name, reason=f"{alarm_kind}: {message} → {action.reason}")
        self.log.append(entry)
        return entry
