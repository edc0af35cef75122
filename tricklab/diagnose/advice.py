"""From a finding to words: what is wrong (which layers, since which step, the numbers) and what to try.

Each problem's remedies follow TRICKS.md ("Problems the doctor names"), best first, and name the recipe
overrides that apply them (``init.scheme=he``, ``model.norm=batch``, ``clip.mode=norm clip.threshold=1``,
``optimizer.lr=…`` computed from the learning rate the run had), so a person can paste them into
``tricklab train --set``. Plain functions of the finding: no state, no tensors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from tricklab.diagnose.detectors.base import Finding
from tricklab.diagnose.detectors.learning_rate import FAMILY_NAMES, TYPICAL_LR
from tricklab.diagnose.records import Alarm
from tricklab.tricks.regularization import capacity_warning


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for people: 3 significant digits, scientific when tiny or huge."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def where(layers: list[str]) -> str:
    """``body.layer1`` / ``body.layer1 and body.layer2`` / ``body.layer1 and 4 more layers (…)``."""
    if not layers:
        return "the network"
    if len(layers) == 1:
        return layers[0]
    if len(layers) == 2:
        return f"{layers[0]} and {layers[1]}"
    shown = ", ".join(layers[1:4]) + (", …" if len(layers) > 4 else "")
    return f"{layers[0]} and {len(layers) - 1} more layers ({shown})"


def lr_times(lr: float | None, factor: float) -> str:
    """The override ``optimizer.lr=<lr × factor>``, or a placeholder when the run's lr is unknown."""
    if lr is None or not math.isfinite(lr) or lr <= 0:
        return f"optimizer.lr=<current × {factor:g}>"
    return f"optimizer.lr={lr * factor:.3g}"


CLIP = "clip.mode=norm clip.threshold=1: gradient-norm clipping bounds the size of every step (the lesson's θ = 1)"
NORM = "model.norm=batch: batch normalisation keeps every layer's signal at mean 0, std 1"
ROLLBACK = "roll back to the last good weights and continue from there (tricklab doctor --repair does it)"


def _vanishing(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    if f.criterion == "signal":
        what = (f"the forward signal dies: the activations' spread falls to {fmt(e.get('signal_ratio'))} of the "
                f"first layer's by layer #{int(e.get('signal_layer_index', 0))}, so every layer gets a tiny "
                f"gradient (first layer ‖g‖ = {fmt(e.get('grad_first'))}, last {fmt(e.get('grad_last'))}) — the "
                "first/last gradient ratio stays near 1 and hides it")
    else:
        what = (f"the first layer's gradient is {fmt(e.get('grad_ratio'))} × the last layer's "
                f"(‖g‖ = {fmt(e.get('grad_first'))} vs {fmt(e.get('grad_last'))})")
    msg = (f"Vanishing gradients in {where(f.layers)} since step {f.step}: {what}; the loss is not moving "
           f"({fmt(e.get('loss'))}).")
    return msg, [
        "init.scheme=he (ReLU) or init.scheme=lecun (tanh, SELU): an init whose variance keeps the signal's "
        "scale from layer to layer",
        NORM,
        "model.name=resnet: identity shortcuts carry the gradient past every block",
        "model.activation=relu: a ReLU-family activation has derivative 1 where it is active (no saturation)",
    ]


def _exploding(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    if f.criterion == "nonfinite":
        what = f"the gradient norm is not finite (‖g‖ = {fmt(e.get('grad_norm'))}) in {where(f.layers)}"
    elif f.criterion == "growth":
        what = (f"the gradient norm grew to {fmt(e.get('grad_norm'))}, {fmt(e.get('growth'), 2)} × its value at "
                f"the start ({fmt(e.get('grad_norm_start'))}), while the loss rose to {fmt(e.get('loss'))} "
                f"(start {fmt(e.get('loss_start'))}); largest in {where(f.layers)}")
    elif f.criterion == "divergence":
        steps = (f"; the largest update moves a layer's weights by {fmt(100 * e['update_ratio'], 2)} % per step"
                 if "update_ratio" in e else "")
        what = (f"training diverges — the loss rose to {fmt(e.get('loss'))}, {fmt(e.get('loss_factor'), 2)} × its "
                f"value at the start ({fmt(e.get('loss_start'))}), and stays there{steps}. The steps are too large: "
                f"where batch norm keeps the gradient norms bounded, the explosion shows in the logits of "
                f"{where(f.layers)} and in the loss")
    else:
        what = (f"the first layer's gradient is {fmt(e.get('grad_ratio'))} × the last layer's "
                f"(‖g‖ = {fmt(e.get('grad_first'))} vs {fmt(e.get('grad_last'))}) and the loss is not improving")
    lower = f"{lr_times(lr, 0.1)}: a ten times smaller learning rate"
    return f"Exploding gradients since step {f.step}: {what}.", (
        [lower, CLIP, NORM] if f.criterion == "divergence" else [CLIP, lower, NORM])


def _dead(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    n = int(e.get("dead_layers", len(f.layers)))
    more = f" ({n} of {int(e.get('relu_layers', n))} ReLU layers at ≥ 70 %)" if n > 1 else ""
    msg = (f"Dead ReLUs in {where(f.layers)} since step {f.step}: {fmt(100 * e.get('frac_dead', 0), 3)} % of "
           f"{f.layers[0] if f.layers else 'a layer'}'s units are ≤ 0 for every example of the batch{more}, so "
           "they output 0, get no gradient and cannot recover.")
    return msg, [
        "model.activation=leaky_relu: a leaky ReLU keeps a small gradient for negative inputs, so units revive",
        f"{lr_times(lr, 0.1)}: large steps push units into the dead region",
        "init.scheme=he: a fresh He init with zero biases starts every unit in its active range",
    ]


def _saturation(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    act = f.criterion if f.criterion in ("sigmoid", "tanh") else "sigmoid/tanh"
    flat = "|tanh| > 0.97" if act == "tanh" else ("within 0.03 of 0 or 1" if act == "sigmoid" else "saturated")
    msg = (f"Saturated units in {where(f.layers)} since step {f.step}: {fmt(100 * e.get('frac_saturated', 0), 3)} % "
           f"of the {act} outputs of {f.layers[0] if f.layers else 'a layer'} are {flat} (pre-activation std "
           f"{fmt(e.get('pre_std'))}), where the derivative is nearly 0.")
    ratio = e.get("grad_ratio")
    if ratio is not None and ratio > 70:
        msg += (f" The first layer's gradient is {fmt(ratio)} × the last's; that is the oversized weights "
                "multiplying the gradient on its way back through saturated layers, not a learning-rate explosion.")
    return msg, [
        "init.scheme=lecun (or glorot): weights of variance 1/n_in keep pre-activations near the linear range",
        "data.scale=standard: inputs of mean 0, std 1",
        NORM,
        "model.activation=relu: an activation that does not saturate for positive inputs",
    ]


def _update_ratio(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    med = e.get("log10_update_ratio", -3.0)
    measured = e.get("lr")
    if measured is not None and math.isfinite(measured) and measured > 0:
        lr = measured  # the learning rate the ratio was measured at: scaling it moves the ratio to ≈ 1e-3
    size = (f"each step changes the median layer by 10^{fmt(med, 2)} ≈ {fmt(10 ** med if med > -30 else 0.0, 2)} "
            f"of its weights (healthy ≈ 1e-3)")
    if f.criterion == "high":
        return (f"Updates too large in {where(f.layers)} since step {f.step}: {size}; the learning rate "
                f"({fmt(lr)}) is too high.", [
                    f"{lr_times(lr, min(0.1, 10 ** (-3 - med)) if med < 30 else 0.1)}: brings the update ratio "
                    "towards 1e-3",
                    CLIP,
                    "schedule.warmup_epochs=1: a linear warmup avoids the largest steps at the start",
                ])
    factor = min(10 ** (-3 - med), 1e4) if med > -30 else 1e3
    return (f"Updates too small in {where(f.layers)} since step {f.step}: {size}; the learning rate "
            f"({fmt(lr)}) is too low to move the weights.", [
                f"{lr_times(lr, factor)}: brings the update ratio towards 1e-3",
                "optimizer.name=adam optimizer.lr=0.003: Adam scales each coordinate's step (the lesson: if unsure, "
                "take Adam)",
                "lr_find (tricklab.tricks.lr_find): the LR range test picks the learning rate from the data",
            ])


def _nan(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    return (f"The loss became NaN/Inf at step {f.step}: the weights or activations overflowed; everything "
            "trained after this point is lost.", [
                ROLLBACK,
                f"{lr_times(lr, 0.1)}: a ten times smaller learning rate",
                CLIP,
            ])


def _spike(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    if f.criterion == "epoch":
        what = (f"the mean training loss of epoch {int(e.get('epoch', 0)) + 1} (to step {f.step}) was "
                f"{fmt(e.get('loss'))}, {fmt(e.get('factor'), 2)} × the loss at the start ({fmt(e.get('loss_start'))})")
    else:
        what = (f"{fmt(e.get('loss'))} at step {f.step}, {fmt(e.get('factor'), 2)} × the median "
                f"{fmt(e.get('median_before'))} of the probes before (start {fmt(e.get('loss_start'))})")
    return (f"Loss spike: {what}.", [
                ROLLBACK,
                f"{lr_times(lr, 0.1)}: a ten times smaller learning rate",
                CLIP,
            ])


def _oscillation(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    return (f"The loss oscillates since step {f.step}: {int(e.get('turns', 0))} changes of direction over the "
            f"last {int(e.get('window', 0))} probes, between {fmt(e.get('loss_min'))} and {fmt(e.get('loss_max'))}, "
            "without net progress.", [
                f"{lr_times(lr, 0.1)}: smaller steps stop overshooting the minimum",
                "schedule.name=exponential schedule.gamma=0.98: decay the learning rate every epoch (the lesson)",
                CLIP,
            ])


def _plateau(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    span = (f"over {int(e.get('epochs', 0))} epochs" if f.criterion == "epochs"
            else f"over the last {int(e.get('window', 0))} probes")
    msg = (f"The loss has not moved since step {f.step}: {fmt(e.get('loss_before'))} → {fmt(e.get('loss_now'))} "
           f"({fmt(100 * e.get('improvement', 0), 2)} %) {span}, with the learning rate at {fmt(lr)}.")
    return msg, [
        f"{lr_times(lr, 10)}: a larger learning rate (or run lr_find)",
        "schedule.name=one_cycle: warm up to a high learning rate, then anneal",
        "optimizer.name=adam optimizer.lr=0.003: Adam adapts the step per coordinate (the lesson: if unsure, Adam)",
    ]


def _overfitting(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    measured = " (evaluated like the validation split)" if e.get("train_evaluated") else ""
    if f.criterion == "gap":
        what = (f"training accuracy{measured} {fmt(100 * e.get('train_accuracy', 0), 3)} % vs validation "
                f"{fmt(100 * e.get('val_accuracy', 0), 3)} % (a gap of {fmt(100 * e.get('gap', 0), 2)} points)")
    else:
        what = (f"the validation loss rose to {fmt(e.get('val_loss'))} (best {fmt(e.get('best_val_loss'))}) "
                f"while the training loss{measured} fell to {fmt(e.get('train_loss'))}")
    noise = ""
    if f.criterion != "gap" and e.get("val_loss_se"):
        noise = f"; that is {fmt(e.get('rise', 0) / e['val_loss_se'], 2)} standard errors above the best"
    capacity = (f" The model has {fmt(e.get('params_per_example'), 3)} parameters per training example "
                f"({int(e.get('num_params', 0)):,} for {int(e.get('num_examples', 0)):,})."
                if e.get("params_per_example") else "")
    return f"Overfitting since step {f.step}: {what} at epoch {int(e.get('epoch', 0)) + 1}{noise}.{capacity}", [
        "early_stopping.patience=3: stop when the validation loss stops improving and restore the best weights",
        "optimizer.weight_decay=0.005: a larger penalty on large weights",
        "model.dropout=0.3: dropout (implicit model averaging; the lesson: 10–50 %)",
        "averaging.mode=swa (or ensemble): average weights or models",
    ]


def _unscaled(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    why = {"large": "far above the unit scale the init assumes", "small": "far below the unit scale",
           "outliers": "with extreme values", "nonfinite": "with non-finite values"}.get(f.criterion, "off scale")
    return (f"Inputs are not scaled (since step {f.step}): the batch has mean {fmt(e.get('input_mean'))}, std "
            f"{fmt(e.get('input_std'))}, max |x| {fmt(e.get('input_absmax'))} (rms {fmt(e.get('input_rms'))}; scaled "
            f"inputs have rms ≈ 1) — {why}.", [
                "data.scale=standard: x' = (x − μ)/σ with training-split statistics",
                "data.scale=minmax01: x' = (x − min)/(max − min), into [0, 1]",
                NORM,
            ])


def _capacity(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    p, n = int(e.get("num_params", 0)), int(e.get("num_examples", 0))
    msg = capacity_warning(p, n, e.get("limit", 10.0)) or f"The model has {p:,} parameters for {n:,} examples."
    return msg, [
        "model.width=… / model.depth=…: a smaller model",
        "optimizer.weight_decay=0.005: a larger penalty on large weights",
        "model.dropout=0.3: dropout",
        "early_stopping.patience=3: stop when the validation loss stops improving",
    ]


def _exploding_init(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    how = {"loss": (f"the loss at init is {fmt(e.get('loss'))}, {fmt(e.get('loss_over_ln_c'), 2)} × ln C = "
                    f"{fmt(e.get('ln_classes'))} (a fresh classifier's is ≈ ln C; logit rms {fmt(e.get('logit_rms'))})"),
           "signal": (f"the signal grows to {fmt(e.get('signal_max'), 2)} × the first layer's input along the forward "
                      "pass"),
           "gradient": (f"at step {f.step} the first layer's gradient is {fmt(e.get('grad_ratio'))} × the last's")
           }.get(f.criterion, "the signal explodes")
    msg = (f"Exploding initialisation at step {f.step}: {how}. It starts at {where(f.layers)} (layer "
           f"#{int(e.get('layer_index', 0))}), whose weights multiply the signal's rms by {fmt(e.get('weight_gain'), 2)} "
           f"(He init: 1.41, LeCun: 1, PyTorch's default: 0.58); the largest gain is {fmt(e.get('max_gain'), 2)}.")
    return msg, [
        "init.scheme=he (ReLU family) or init.scheme=lecun (tanh, sigmoid, SELU): re-initialise the layers in place "
        "with a variance of 2/n_in or 1/n_in (tricklab doctor --repair does it in place, with the smallest of glorot, "
        "lecun and he that keeps the signal within a decade)",
        f"in your code: replace the scaling of {where(f.layers[:1])}'s weights with nn.init.kaiming_normal_ "
        "(or remove the custom init and keep PyTorch's default)",
        NORM,
        CLIP,
    ]


def _vanishing_init(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    shrinks = (f"the signal shrinks to {fmt(e.get('signal_min'), 2)} × the first layer's input by layer "
               f"#{int(e.get('signal_layer_index', 0))} of {int(e.get('layers', 0))}" if f.criterion == "signal" else
               f"the gradient shrinks on its way back: the first layer's is {fmt(e.get('grad_ratio'), 2)} × the last "
               f"layer's over {int(e.get('layers', 0))} layers")
    msg = (f"Vanishing initialisation at step {f.step}: {shrinks}; it starts at {where(f.layers)} (layer #{int(e.get('layer_index', 0))}), whose weights multiply the signal's "
           f"rms by {fmt(e.get('weight_gain'), 2)} (He init: 1.41, LeCun: 1). The gradients at step {f.step}: first "
           f"layer ‖g‖ = {fmt(e.get('grad_first'))}, last {fmt(e.get('grad_last'))}.")
    return msg, [
        "init.scheme=he (ReLU family) or init.scheme=lecun (tanh, sigmoid): re-initialise the layers in place so "
        "each keeps the signal's scale (tricklab doctor --repair does it in place, with the smallest of glorot, lecun "
        "and he that keeps the signal within a decade)",
        f"in your code: drop the small-weight init of {where(f.layers[:1])} (nn.init.kaiming_normal_ instead)",
        NORM,
        "model.name=resnet / identity shortcuts: a residual path carries the signal past weak layers",
    ]


def _range(e: dict[str, float]) -> str:
    families = list(TYPICAL_LR)
    index = int(e.get("family_index", -1))
    name = FAMILY_NAMES[families[index]] if 0 <= index < len(families) else ""
    return f"{fmt(e.get('range_low'), 2)} … {fmt(e.get('range_high'), 2)}" + (f" for {name}" if name else "")


def _rate(e: dict[str, float], lr: float | None) -> tuple[float | None, str]:
    """The rate to name and how: the set rate, with the scheduled rate at the step when a warm-up or decay has
    moved it by more than a tenth ("50 (12.7 at this step, on its schedule)")."""
    rate, now = e.get("lr", lr), e.get("lr_now")
    shown = fmt(rate)
    if rate and now and math.isfinite(now) and abs(now - rate) > 0.1 * rate:
        shown += f" (set; {fmt(now)} at this step, on its schedule)"
    return rate, shown


def _lr_high(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    rate, shown = _rate(e, lr)
    sign = {"nonfinite": "the loss became NaN/Inf",
            "oversized": (f"each step changes the median layer by 10^{fmt(e.get('log10_update_ratio'), 2)} of its "
                          "weights (healthy ≈ 1e-3)"),
            "diverging": f"the loss rose to {fmt(e.get('loss'))} from {fmt(e.get('loss_start'))} at the start",
            "growth": (f"the gradient norm grew to {fmt(e.get('grad_norm'))} from {fmt(e.get('grad_norm_start'))} "
                       "while the loss got worse"),
            "wrecked": (f"the first steps were oversized, and since then the net is wrecked: ReLUs dead, weights inflated "
                        f"or the loss stuck at {fmt(e.get('loss'))} (start {fmt(e.get('loss_start'))})")
            }.get(f.criterion, "the steps are too large")
    msg = (f"Learning rate too high since step {f.step}: {shown} is {fmt(e.get('times_high'), 2)} × the top of "
           f"the typical range {_range(e)}, and {sign}.")
    return msg, [
        f"{lr_times(rate, 0.1)}: a ten times smaller learning rate (or one inside {_range(e)})",
        CLIP,
        "schedule.warmup_epochs=1: a linear warmup avoids the largest steps at the start",
    ]


def _lr_low(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    rate, shown = _rate(e, lr)
    sign = (f"each step changes the median layer by only 10^{fmt(e.get('log10_update_ratio'), 2)} of its weights"
            if f.criterion == "tiny" else f"the loss has not moved from {fmt(e.get('loss_start'))} "
                                          f"(now {fmt(e.get('loss'))})")
    msg = (f"Learning rate too low since step {f.step}: {shown} is {fmt(e.get('times_low'), 2)} × below the "
           f"bottom of the typical range {_range(e)}, and {sign}.")
    return msg, [
        f"{lr_times(rate, 100)}: a learning rate inside {_range(e)}",
        "lr_find (tricklab.tricks.lr_find): the LR range test picks the learning rate from the data",
        "optimizer.name=adam optimizer.lr=0.003: Adam scales each coordinate's step (the lesson: if unsure, Adam)",
    ]


def _linear(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    msg = (f"The model is linear (seen at step {f.step}): its {int(e.get('weight_layers', 0))} weight layers "
           f"({where(f.layers)}) run with no nonlinear function between them, so together they are one linear "
           "map — depth adds nothing and the classes must be linearly separable.")
    first = f.layers[0] if f.layers else "the first layer"
    return msg, [
        f"needs a code change: apply an activation after {first} and every hidden layer, e.g. "
        "x = F.relu(self.fc1(x)) (model.python code; tricklab cannot edit it)",
        "model.activation=relu: the built-in models put one after every hidden layer",
        "init.scheme=he: the init that fits the ReLU you add",
    ]


def _mismatch(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    last = f.layers[0] if f.layers else "the output layer"
    if f.criterion == "classes":
        msg = (f"Output/loss mismatch at step {f.step}: the model has {int(e.get('output_dim', 0))} outputs for "
               f"{int(e.get('classes', 0))} classes; the loss at init is ≈ ln {int(e.get('output_dim', 0))} = "
               f"{fmt(e.get('ln_output_dim'))}, not ln {int(e.get('classes', 0))} = {fmt(e.get('ln_classes'))} "
               f"(now {fmt(e.get('loss'))}).")
        return msg, [
            f"needs a code change: give {last} {int(e.get('classes', 0))} outputs (nn.Linear(..., num_classes))",
            "check the labels: targets must be 0 … C − 1",
            "model.python: build the head from the data's class count instead of a constant",
        ]
    what = ("rows that sum to 1 (a softmax)" if f.criterion == "softmax"
            else "values in [0, 1] (a sigmoid)")
    loss = ("cross-entropy applies log-softmax itself" if e.get("loss_known")
            else f"the loss stays at or above {fmt(e.get('loss_floor'))}, cross-entropy's floor on probabilities")
    msg = (f"Output/loss mismatch since step {f.step}: the model outputs probabilities — {what}, between "
           f"{fmt(e.get('output_min'))} and {fmt(e.get('output_max'))} — where the loss expects logits; {loss}, so "
           f"the loss cannot fall below {fmt(e.get('loss_floor'))} and its gradient is squashed (now "
           f"{fmt(e.get('loss'))}).")
    return msg, [
        f"needs a code change: return the logits of {last} (remove the softmax/sigmoid at the end of forward; "
        "apply it only when you need probabilities)",
        "or keep the softmax and use torch.log + F.nll_loss — numerically worse than logits + cross_entropy",
        "F.log_softmax at the end is fine: cross_entropy of log-probabilities equals that of logits",
    ]


BF16 = ("precision=bf16: bfloat16 has float32's range (up to 3.4e38, down to 1.2e-38) at the same 16 bits — no "
        "overflow, no underflow, no loss scale (recent GPUs and CPUs compute it natively)")


def _scale(e: dict[str, float]) -> str:
    return f"the loss scale is {fmt(e['loss_scale'])}" if "loss_scale" in e else "no loss scaler is known to run"


def _fp16_overflow(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    if f.criterion == "forward":
        loss = e.get("loss", math.nan)
        what = (f"the forward pass overflowed float16 at step {f.step}: the loss is {'NaN' if math.isnan(loss) else fmt(loss)} while every "
                f"weight is finite — an activation of {where(f.layers)} went past float16's largest value, 65504 "
                "(a loss scale only scales the backward pass and cannot help)")
        first = NORM
    elif f.criterion == "scale":
        what = (f"the loss scale is below 1 since step {f.step} ({fmt(e.get('loss_scale'))} now): the gradients overflow "
                "float16 (above 65504) even at their true size, so the scaler must shrink them, skipping a step each time "
                "it halves")
        first = CLIP
    else:
        what = (f"float16 overflow since step {f.step}: the loss scaler skipped {int(e.get('skipped', 0))} of "
                f"{int(e.get('observed', 0))} steps ({fmt(100 * e.get('skip_share', 0.0))} %; a healthy one "
                f"skips about 1 in 2000) — every skip halves the scale and wastes the step; {_scale(e)}")
        first = CLIP
    return f"{what[0].upper()}{what[1:]}.", [
        BF16,
        first,
        f"{lr_times(lr, 0.1)}: smaller steps keep weights, activations and gradients inside float16's range",
    ]


def _fp16_underflow(f: Finding, lr: float | None) -> tuple[str, list[str]]:
    e = f.evidence
    if f.criterion == "weights":
        ratio = f", the median update here is {fmt(e['update_ratio'])} of a weight" if "update_ratio" in e else ""
        return (f"The weights themselves are float16 (seen at step {f.step}): an update below 2^-11 ≈ 0.05 % of a "
                f"weight rounds away in w + Δw{ratio}, and Adam's ε = 1e-8 is 0 in float16 — float16 without a float32 "
                "copy of the weights loses what training adds.", [
                    "mixed precision: keep the model in float32 (model.float()) and run the forward pass under "
                    "torch.autocast(device_type, dtype=torch.float16) with a torch.amp.GradScaler — precision=fp16 in "
                    "a recipe does exactly that",
                    BF16,
                    "optimizer eps 1e-4 or more if the weights must stay float16 (Adam's 1e-8 underflows to 0)",
                ])
    scaled = "loss_scale" in e
    after = "after the loss scale" if scaled else "unscaled"
    return (f"float16 underflow since step {f.step}: {fmt(100 * e.get('subnormal_share', 0.0))} % of the weight "
            f"gradients' nonzero entries lie below float16's smallest normal number (6.1e-5) {after} — they lose "
            f"precision, and smaller ones flush to 0; {_scale(e)}.", [
                ("raise the loss scale: torch.amp.GradScaler(init_scale=2.**16) grows it every 2000 clean steps; a "
                 "larger init_scale or a shorter growth_interval reaches it sooner") if scaled else
                ("a loss scaler: torch.amp.GradScaler() — backpropagate scaler.scale(loss), then scaler.step(optimizer) "
                 "and scaler.update() (precision=fp16 in a recipe always has one)"),
                BF16,
                "model.norm=batch: normalised layers keep the gradients at a healthier scale",
            ])


WRITERS: dict[str, Callable[[Finding, float | None], tuple[str, list[str]]]] = {
    "vanishing_gradients": _vanishing,
    "exploding_gradients": _exploding,
    "dead_units": _dead,
    "saturation": _saturation,
    "update_ratio": _update_ratio,
    "nan_loss": _nan,
    "loss_spike": _spike,
    "plateau": _plateau,
    "oscillation": _oscillation,
    "overfitting": _overfitting,
    "unscaled_inputs": _unscaled,
    "too_many_parameters": _capacity,
    "exploding_init": _exploding_init,
    "vanishing_init": _vanishing_init,
    "lr_too_high": _lr_high,
    "lr_too_low": _lr_low,
    "linear_model": _linear,
    "output_loss_mismatch": _mismatch,
    "fp16_overflow": _fp16_overflow,
    "fp16_underflow": _fp16_underflow,
}


def describe(finding: Finding, lr: float | None = None) -> tuple[str, list[str]]:
    """(message, advice best first) for a finding; ``lr``: the run's learning rate, for the LR overrides."""
    return WRITERS[finding.kind](finding, lr)


def to_alarm(finding: Finding, lr: float | None = None, step: int | None = None) -> Alarm:
    """The ``Alarm`` for a finding (``step`` overrides the finding's, e.g. the first step of a merged alarm)."""
    if step is not None and step != finding.step:
        finding = dataclasses.replace(finding, step=step)
    message, advice = describe(finding, lr)
    return Alarm(kind=finding.kind, step=finding.step, message=message,
                 layer=finding.layers[0] if finding.layers else None, layers=list(finding.layers),
                 evidence=dict(finding.evidence), advice=advice)
