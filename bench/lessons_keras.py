"""An independent cross-check of the dropout and batch-norm lessons in Keras 3 (issue 16 item 9).

    KERAS_BACKEND=torch python bench/lessons_keras.py [--lessons dropout,batchnorm] [--seeds N] [--epochs E]
        [--quick] [--tricklab-json PATH ...] [--work DIR] [--workers W] [--out PATH]

For each lesson, every arm is trained again in Keras 3 (the torch backend; ``pip install tricklab[keras]``) and
the lesson's checks are judged on the Keras trials by tricklab's own statistics: the Keras runs become the same
per-trial records the lesson's measures read (test accuracy, per-epoch validation accuracy with the optimizer
step and the epoch's wall seconds), and ``tricklab.lessons.run.judge`` — ``outcome.evaluate_checks``,
``inference.infer``, ``verdicts.orient`` — turns them into effects, 95% intervals and verdicts exactly as it
does for tricklab's trials. The table puts both frameworks' effect, interval and verdict side by side per check;
the verdicts must agree, and where they do not, a sentence built from the numbers says how they differ (the same
sentence the lesson book shows, ``tricklab.lessons.book.disagreement``). The last line of stdout is one JSON
object with every number; ``--out PATH`` writes it to a file too (``docs/lessons_keras.json``: the lesson book
shows it beside each lesson's own checks).

Like for like, per lesson:

- the lesson and its arms are read at run time (``get_lesson``); each trial's recipe is tricklab's
  (``StudySpec.trial_recipe``: the arm's overrides, the trial's seed, the split drawn per seed);
- the data: the recipe's split and scaling as tricklab prepares it (``train.run.prepare_data``: the same
  tensors), visited in tricklab's batch order (``train.loop.epoch_order`` per seed and epoch, cut into
  ``batches_per_epoch`` batches: the same examples in every step);
- the model is built in Keras from the recipe's fields (``model.name``, depth, width, activation, norm,
  dropout; ``init.scheme``), layer for layer as tricklab's; before training, ``mirror`` copies the torch
  model's weights into the Keras model and requires the same parameters per layer and the same logits (eval
  mode), so a layout that drifts apart stops the bench instead of comparing two different networks;
- the optimizer: Keras's AdamW with the recipe's β, ε and weight decay, biases and batch-norm parameters
  excluded from the decay (as tricklab's param groups); each arm at the learning rate tricklab's per-arm tuning
  chose (read from a ``tricklab lesson NAME --json`` output, ``--tricklab-json``, or from tricklab's lesson run
  in-process here, in ``--work``); the arms at their own, untuned LR too where the lesson has the ``shared_lr``
  check, so the Holm family of the secondary checks is the same on both sides;
- the schedule: 1cycle as tricklab's (the formula of torch's ``OneCycleLR``: cosine up for 30% of the steps
  from η/25, cosine down to η/25/10⁴), as a Keras ``LearningRateSchedule`` (Keras has no 1cycle of its own);
- the budget: the lesson's variant (full unless ``--quick``), or ``--seeds``/``--epochs`` for both frameworks:
  tricklab's side is then run in-process with the same budget.

What differs (``DIFFERENCES``, written into the JSON and shown by the book) is listed there: the frameworks'
random streams, Keras's AdamW ε placement and batch norm's variance estimate, and the LR tuned on tricklab's
models. Seconds are each framework's own: Keras's per-step overhead is larger, and tricklab's trials record the
doctor's probes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if os.environ.setdefault("KERAS_BACKEND", "torch") != "torch":
    raise SystemExit(f"bench/lessons_keras.py runs Keras on the torch backend; KERAS_BACKEND is "
                     f"{os.environ['KERAS_BACKEND']!r}")

import keras  # noqa: E402  (the backend is chosen before the import)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from tricklab.lessons.book import disagreement  # noqa: E402
from tricklab.lessons.lesson import Lesson, TrialView  # noqa: E402
from tricklab.lessons.outcome import LessonResult  # noqa: E402
from tricklab.lessons.registry import get_lesson  # noqa: E402
from tricklab.lessons.run import judge, lesson_spec, run_lesson  # noqa: E402
from tricklab.lessons.tuning import TunedArm  # noqa: E402
from tricklab.lessons.words import effect_texts  # noqa: E402
from tricklab.models.blocks import pool_positions, signal_shape  # noqa: E402
from tricklab.models.cnn import KERNEL_SIZE  # noqa: E402
from tricklab.provenance import environment  # noqa: E402
from tricklab.recipe import Recipe  # noqa: E402
from tricklab.study.spec import StudySpec  # noqa: E402
from tricklab.train.loop import batches_per_epoch, epoch_order  # noqa: E402
from tricklab.train.run import build_recipe_model, json_safe, prepare_data  # noqa: E402

LESSONS = ("dropout", "batchnorm")
MODEL_FIELDS = {"name", "depth", "width", "activation", "norm", "dropout", "python"}
"""The recipe's model fields the Keras builder reads; a model section with any other field set is refused."""
ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}
INITS = {  # tricklab's scheme → Keras VarianceScaling (scale, mode, distribution): the same distribution
    "he": (2.0, "fan_in", "untruncated_normal"),      # N(0, √(2/n_in)) — Keras's HeNormal would truncate
    "he_uniform": (2.0, "fan_in", "uniform"),         # U(±√(6/n_in))
}
BN_MOMENTUM = 0.9   # Keras keeps m·old + (1 − m)·batch: torch's BatchNorm momentum 0.1 is Keras's 0.9
BN_EPSILON = 1e-5   # torch's default (Keras's own is 1e-3)
MIRROR_TOLERANCE = 1e-4   # largest |logit difference| between the torch model and its Keras mirror (float32)
DIFFERENCES = (
    "random streams: Keras draws its initial weights (the same distribution) and its dropout masks from its own "
    "seeded generator, so no trial starts from tricklab's weights; the data split and the batch order are "
    "tricklab's",
    "learning rate: each arm trains at the LR tricklab's per-arm tuning chose on tricklab's models; Keras's "
    "models were not tuned on their own",
    "AdamW: Keras adds ε to √v before the bias correction of v (torch after it), a difference of ε·√(1 − β₂ᵗ); "
    "weight decay, β and the decayed parameters are the same",
    "batch norm: Keras normalises with the batch variance and also keeps it (biased) as the running estimate; "
    "torch keeps the unbiased one (n/(n − 1) larger) for evaluation",
    "seconds: each framework's own wall time — Keras's per-step overhead is larger, and tricklab's trials run the "
    "doctor's probes during training; the seconds checks compare arms within one framework, never across",
)


# -- the schedule -------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tricklab_bench")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """1cycle as tricklab's ``schedules.one_cycle`` (torch's ``OneCycleLR``, cos, two phases), step t from 0:
    η_start = max_lr/div, η_end = η_start/final_div, peak a = pct·T − 1; t ≤ a: cos from η_start to max_lr,
    after: cos from max_lr to η_end at T − 1; later steps stay at η_end."""

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> None:
        self.max_lr, self.total_steps, self.pct_start = float(max_lr), int(total_steps), float(pct_start)
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        self.peak = self.pct_start * self.total_steps - 1.0
        self.last = float(self.total_steps - 1)
        if not 0.0 < self.peak < self.last:
            raise ValueError(f"one_cycle needs 1 < pct_start·total_steps < total_steps, got {pct_start}·{total_steps}")

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        t = ops.clip(ops.cast(step, "float32"), 0.0, self.last)
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor

        def anneal(a: float, b: float, pct: Any) -> Any:
            return b + (a - b) / 2.0 * (ops.cos(math.pi * pct) + 1.0)

        up = anneal(start, self.max_lr, t / self.peak)
        down = anneal(self.max_lr, end, (t - self.peak) / (self.last - self.peak))
        return ops.where(t <= self.peak, up, down)

    def get_config(self) -> dict[str, Any]:
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor}


# -- the model ----------------------------------------------------------------------------------------------------

def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"the Keras mirror knows the activations {sorted(ACTIVATIONS)}, not {name!r}")
    return ACTIVATIONS[name]


def _initializer(scheme: str) -> keras.initializers.Initializer:
    if scheme not in INITS:
        raise ValueError(f"the Keras mirror knows the init schemes {sorted(INITS)}, not {scheme!r}")
    scale, mode, distribution = INITS[scheme]
    return keras.initializers.VarianceScaling(scale=scale, mode=mode, distribution=distribution)


def keras_model(recipe: Recipe, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """The recipe's model in Keras, layer for layer as ``tricklab.models`` builds it (channels first, as torch):

    - ``mlp``: flatten → depth × [Dense(width) → BatchNorm? → activation → Dropout?] → Dense(classes);
    - ``cnn``: depth × [Conv(width, k, same) → BatchNorm? → activation], max-pooling by 2 after the layers
      ``models.blocks.pool_positions`` picks, global average pooling → Dropout? → Dense(classes); k = 5 for
      signals, 3×3 for images; a vector input is read as a one-channel signal;
    - ``cnn_flatten`` (Dropout.ipynb's layout): the same convolutions, pooling only while the flattened features
      stay at 256 or more (``models.cnn.flatten_pools``), then Flatten → Dropout? → Dense(classes).

    Weights drawn from the recipe's init scheme, biases 0, batch norm γ = 1, β = 0 (as tricklab's init)."""
    m = recipe.model
    set_fields = {k for k, v in m.model_dump(exclude_defaults=True).items() if v is not None}
    unknown = set_fields - MODEL_FIELDS
    if m.python or unknown:
        raise ValueError(f"the Keras mirror builds tricklab's mlp and cnn from the fields {sorted(MODEL_FIELDS - {'python'})}; "
                         f"this recipe sets {sorted(unknown) or 'model.python'}")
    if m.norm not in ("none", "batch"):
        raise ValueError(f"the Keras mirror knows the norms none and batch, not {m.norm!r}")
    layers, act, init = keras.layers, _activation(m.activation), recipe.init.scheme
    width = m.width
    if width is None:
        raise ValueError("the Keras mirror needs model.width")

    def weights(layer: type, *args: Any, **kwargs: Any) -> Any:
        return layer(*args, kernel_initializer=_initializer(init), bias_initializer="zeros", **kwargs)

    def norm(axis: int) -> list[Any]:
        return [layers.BatchNormalization(axis=axis, momentum=BN_MOMENTUM, epsilon=BN_EPSILON)] if m.norm == "batch" \
            else []

    inputs = keras.Input(shape=tuple(input_shape))
    if m.name == "mlp":
        stack: list[Any] = [layers.Flatten(data_format="channels_last")]   # torch's order: (C, H, W) as it is
        for _ in range(m.depth):
            stack += [weights(layers.Dense, width), *norm(-1), layers.Activation(act)]
            if m.dropout > 0:
                stack.append(layers.Dropout(m.dropout))
    elif m.name in ("cnn", "cnn_flatten"):
        shape = signal_shape(tuple(input_shape))
        dims = len(shape) - 1
        if dims not in (1, 2):
            raise ValueError(f"the Keras mirror's cnn takes signals and images, not inputs of shape {tuple(input_shape)}")
        conv = (layers.Conv1D, layers.Conv2D)[dims - 1]
        pool = (layers.MaxPooling1D, layers.MaxPooling2D)[dims - 1]
        gap = (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D)[dims - 1]
        pools = pool_positions(m.depth, shape[1:])
        if m.name == "cnn_flatten":   # Dropout.ipynb's head: pool only while ≥ FLATTEN_MIN features remain
            from tricklab.models.cnn import flatten_pools

            pools = flatten_pools(pools, width, tuple(shape[1:]))
        stack = [layers.Reshape(shape)] if tuple(shape) != tuple(input_shape) else []
        for i in range(m.depth):
            stack += [weights(conv, width, KERNEL_SIZE[dims], padding="same", data_format="channels_first"),
                      *norm(1), layers.Activation(act)]
            if i in pools:
                stack.append(pool(2, padding="same", data_format="channels_first"))
        # cnn: global average pooling → dropout → dense; cnn_flatten: flatten → dropout → dense, flattening the
        # (channels, positions) tensor as it is, torch's order (Keras's channels_first Flatten would move channels last)
        stack.append(layers.Flatten(data_format="channels_last") if m.name == "cnn_flatten"
                     else gap(data_format="channels_first"))
        if m.dropout > 0:
            stack.append(layers.Dropout(m.dropout))
    else:
        raise ValueError(f"the Keras mirror builds the models mlp, cnn and cnn_flatten, not {m.name!r}")
    stack.append(weights(layers.Dense, num_classes))
    x = inputs
    for layer in stack:
        x = layer(x)
    return keras.Model(inputs, x, name=f"keras_{m.name}")


def _torch_layers(model: nn.Module) -> list[nn.Module]:
    """The torch model's layers with parameters or batch-norm statistics, in registration (= forward) order."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
    return [m for m in model.modules() if isinstance(m, kinds)]


def _keras_layers(model: keras.Model) -> list[Any]:
    return [layer for layer in model.layers if layer.weights]


def _copy_weights(torch_layer: nn.Module, keras_layer: Any) -> None:
    """torch → Keras: Linear (out, in) → kernel (in, out); Conv (out, in, *k) → kernel (*k, in, out); batch norm
    γ, β, running mean and variance."""
    if isinstance(torch_layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        values = [torch_layer.weight, torch_layer.bias, torch_layer.running_mean, torch_layer.running_var]
        keras_layer.set_weights([v.detach().cpu().numpy() for v in values])
        return
    w = torch_layer.weight.detach().cpu().numpy()
    kernel = w.T if w.ndim == 2 else np.transpose(w, (*range(2, w.ndim), 1, 0))
    keras_layer.set_weights([kernel, torch_layer.bias.detach().cpu().numpy()])


@dataclass(frozen=True)
class Mirror:
    """How the Keras model of a recipe matches tricklab's: per layer (kind, parameters) on both sides, the total
    trainable parameters, and the largest |logit difference| on the validation inputs with the torch model's
    weights copied into the Keras model (eval mode: dropout off, batch norm on its running statistics)."""

    torch_layers: list[tuple[str, int]]
    keras_layers: list[tuple[str, int]]
    torch_params: int
    keras_params: int
    max_abs_diff: float

    @property
    def same(self) -> bool:
        return ([n for _, n in self.torch_layers] == [n for _, n in self.keras_layers]
                and self.torch_params == self.keras_params and self.max_abs_diff <= MIRROR_TOLERANCE)

    def to_json(self) -> dict[str, Any]:
        return {"torch_layers": [list(x) for x in self.torch_layers],
                "keras_layers": [list(x) for x in self.keras_layers], "torch_params": self.torch_params,
                "keras_params": self.keras_params, "max_abs_logit_diff": self.max_abs_diff, "same": self.same}


def mirror(recipe: Recipe, splits: Any) -> Mirror:
    """Build tricklab's model and the Keras one for ``recipe``, copy the weights across, compare (``Mirror``)."""
    torch_model = build_recipe_model(recipe, splits, recipe.seed).eval()
    k_model = keras_model(recipe, splits.input_shape, splits.num_classes)
    t_layers, k_layers = _torch_layers(torch_model), _keras_layers(k_model)
    t_desc = [(type(layer).__name__, sum(p.numel() for p in layer.parameters())) for layer in t_layers]
    k_desc = [(type(layer).__name__, sum(int(np.prod(w.shape)) for w in layer.trainable_weights)) for layer in k_layers]
    diff = math.inf
    if [n for _, n in t_desc] == [n for _, n in k_desc]:
        for t_layer, k_layer in zip(t_layers, k_layers, strict=True):
            _copy_weights(t_layer, k_layer)
        x = splits.x_val.cpu()
        with torch.no_grad():
            expected = torch_model(x).numpy()
        got = np.asarray(k_model(x.numpy(), training=False).detach().cpu().numpy())
        diff = float(np.max(np.abs(expected - got)))
    return Mirror(t_desc, k_desc, sum(p.numel() for p in torch_model.parameters() if p.requires_grad),
                  int(sum(int(np.prod(w.shape)) for w in k_model.trainable_weights)), diff)


# -- one trial ----------------------------------------------------------------------------------------------------

def _split_metrics(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy (float64) and accuracy of ``model`` in evaluation mode on (x, y)."""
    logits = np.concatenate([np.asarray(model.predict_on_batch(x[i:i + 1024]), dtype=np.float64)
                             for i in range(0, len(x), 1024)])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {"loss": float(-log_p[np.arange(len(y)), y].mean()), "accuracy": float((logits.argmax(axis=1) == y).mean())}


def between_evals(steps: int, evals_per_epoch: int) -> set[int]:
    """The batches (counted from 1) after which an epoch of ``steps`` validates inside the epoch when the recipe asks
    for ``evals_per_epoch`` = k > 1 evaluations: ⌊j·steps/k⌋, j = 1 … k − 1 (the k-th is the epoch's end), as
    tricklab's loop plans them."""
    k = evals_per_epoch
    return {j * steps // k for j in range(1, k)} - {0, steps} if steps > 0 and k > 1 else set()


def train_keras(recipe: Recipe, splits: Any, lr: float) -> dict[str, Any]:
    """Train ``recipe``'s model in Keras at learning rate ``lr`` on ``splits`` (tricklab's tensors) in tricklab's
    batch order; returns the per-trial record the lesson's measures read (as ``RunResult.to_json``: status,
    test/validation accuracy and loss, per-epoch history with ``step``, ``val_accuracy``, ``epoch_seconds`` — the
    epoch's training seconds, evaluations inside it left out — and, with ``evals_per_epoch`` > 1, the epoch's
    evaluations under ``evals``: ``step``, ``seconds`` of training since the start, validation loss and accuracy)."""
    keras.utils.set_random_seed(recipe.seed)
    if recipe.schedule.name != "one_cycle" or recipe.optimizer.name != "adamw" or recipe.optimizer.decay != "decoupled":
        raise ValueError("the Keras cross-check trains AdamW (decoupled decay) with the 1cycle schedule; the recipe "
                         f"has {recipe.optimizer.name} ({recipe.optimizer.decay}) with {recipe.schedule.name}")
    if recipe.accumulate != 1 or recipe.clip.mode != "none" or recipe.loss.label_smoothing or \
            recipe.early_stopping.patience or recipe.averaging.mode != "none" or recipe.data.augment != "none" or \
            recipe.data.mixup:
        raise ValueError("the Keras cross-check trains plain runs: no accumulation, clipping, label smoothing, early "
                         "stopping, averaging or augmentation")
    x_train, y_train = splits.x_train.cpu().numpy(), splits.y_train.cpu().numpy()
    x_val, y_val = splits.x_val.cpu().numpy(), splits.y_val.cpu().numpy()
    x_test, y_test = splits.x_test.cpu().numpy(), splits.y_test.cpu().numpy()
    n, bs = len(x_train), min(recipe.data.batch_size, len(x_train))
    steps = batches_per_epoch(n, recipe.data.batch_size)
    o = recipe.optimizer
    schedule = OneCycle(lr, recipe.epochs * steps, pct_start=recipe.schedule.pct_start)
    model = keras_model(recipe, splits.input_shape, splits.num_classes)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=o.weight_decay, beta_1=o.betas[0],
                                       beta_2=o.betas[1], epsilon=o.eps)
    # tricklab's param groups: no decay on biases and on normalisation parameters (γ, β)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    evals_per_epoch = int(getattr(recipe, "evals_per_epoch", 1) or 1)
    inside = between_evals(steps, evals_per_epoch)
    history: list[dict[str, Any]] = []
    status, step, lr_now, started = "completed", 0, float(lr), time.perf_counter()
    trained_before = 0.0   # training seconds of the epochs before, evaluations left out (tricklab's ``seconds``)
    for epoch in range(recipe.epochs):
        epoch_started, eval_seconds = time.perf_counter(), 0.0
        evals: list[dict[str, float]] = []
        order = epoch_order(recipe.seed, epoch, n).numpy()
        loss_sum, seen = 0.0, 0
        for b in range(steps):
            idx = order[b * bs:(b + 1) * bs]
            loss = float(model.train_on_batch(x_train[idx], y_train[idx]))
            lr_now = float(schedule(step))
            step += 1
            loss_sum, seen = loss_sum + loss * len(idx), seen + len(idx)
            if not math.isfinite(loss):
                status = "diverged"
                break
            if b + 1 in inside:    # a validation inside the epoch: its own time is not training time
                now = time.perf_counter()
                val = _split_metrics(model, x_val, y_val)
                evals.append({"step": step, "seconds": trained_before + now - epoch_started - eval_seconds,
                              "val_loss": val["loss"], "val_accuracy": val["accuracy"]})
                eval_seconds += time.perf_counter() - now
        trained = time.perf_counter() - epoch_started - eval_seconds
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": lr_now, "train_loss": loss_sum / seen}
        if status != "diverged":
            val = _split_metrics(model, x_val, y_val)
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            if evals_per_epoch > 1:
                evals.append({"step": step, "seconds": trained_before + trained, "val_loss": val["loss"],
                              "val_accuracy": val["accuracy"]})
        row["epoch_seconds"] = time.perf_counter() - epoch_started - eval_seconds
        if evals_per_epoch > 1:
            row["evals"] = evals
        trained_before += trained
        history.append(row)
        if status == "diverged":
            break
    test = _split_metrics(model, x_test, y_test) if status != "diverged" else {"loss": None, "accuracy": None}
    val = _split_metrics(model, x_val, y_val) if status != "diverged" else {"loss": None, "accuracy": None}
    return {"status": status, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "val_accuracy": val["accuracy"], "val_loss": val["loss"], "epochs": len(history), "steps": step,
            "wall_seconds": time.perf_counter() - started, "history": history,
            "recipe": {"epochs": recipe.epochs}, "num_params": int(model.count_params()),
            "data": {"num_classes": int(splits.num_classes), "test": int(len(y_test))}}


# -- tricklab's side ----------------------------------------------------------------------------------------------

def budgeted(lesson: Lesson, quick: bool, seeds: int | None, epochs: int | None,
             tuning_seeds: int | None = None) -> Lesson:
    """``lesson`` with its ``quick`` or full variant's seeds/epochs/tuning seeds replaced where given."""
    v = lesson.variant(quick)
    v = replace(v, seeds=seeds or v.seeds, epochs=epochs or v.epochs, tuning_seeds=tuning_seeds or v.tuning_seeds)
    return replace(lesson, **{"quick" if quick else "full": v})


def read_tricklab_json(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lesson objects of a ``tricklab lesson NAME|all --json`` output: the whole file as JSON, or its last
    line that is (the command prints the JSON as its last line of stdout)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip().startswith(("{", "["))]
        if not lines:
            raise ValueError(f"{path}: no JSON object in it (the output of tricklab lesson NAME --json)") from None
        data = json.loads(lines[-1])
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(d, dict) and "lesson" in d and "checks" in d and "arms" in d for d in items):
        raise ValueError(f"{path}: not the output of tricklab lesson NAME --json")
    return items


def tricklab_side(lesson: Lesson, quick: bool, given: dict[str, Any] | None, work: Path,
                  workers: int | None) -> tuple[Lesson, StudySpec, dict[str, Any], str]:
    """(the lesson at the budget judged, its study spec, tricklab's ``--json`` object, where it came from). From
    ``given`` (a ``--json`` output: its variant, seeds and epochs, checked against this tricklab's definition) or
    by running the lesson in-process in ``work``."""
    if given is not None:
        quick = given.get("variant") == "quick"
        lesson = budgeted(lesson, quick, int(given["seeds"]), int(given["epochs"]))
        spec = lesson_spec(lesson, quick, work)
        if given.get("study") != spec.name:
            raise ValueError(f"the JSON of lesson {lesson.name} comes from study {given.get('study')!r}, but this "
                             f"tricklab defines it as {spec.name!r} (another definition or budget): re-run "
                             f"tricklab lesson {lesson.name} --json, or leave --tricklab-json out")
        return lesson, spec, given, "tricklab lesson --json output"
    result = run_lesson(lesson, quick=quick, out_dir=work, workers=workers, progress=False, study_report=False)
    return lesson, result.spec, result.to_json(), f"run in-process in {work}"


def tuned_arms(tricklab: Mapping[str, Any]) -> list[TunedArm] | None:
    """Each arm's LR choice as tricklab's JSON records it (None: the lesson does not tune)."""
    arms = tricklab["arms"]
    if not all(a.get("tuned") for a in arms):
        return None
    return [TunedArm(a["name"], float(a["shared_lr"]), float(a["lr"]),
                     tuple((float(g["lr"]), g["val_accuracy"]) for g in a.get("lr_grid", [])),
                     tuple(a.get("tuning_seeds", []))) for a in arms]


# -- the cross-check ----------------------------------------------------------------------------------------------

def keras_side(lesson: Lesson, quick: bool, spec: StudySpec, tuned: list[TunedArm] | None,
               lrs: Mapping[str, float], progress: bool = True, cache: Path | None = None,
               inner_evals: bool = True) -> tuple[LessonResult, dict[str, Any], float, int]:
    """Train every arm × seed in Keras (at its tuned LR; at its own LR too where that differs and the lesson
    tunes), judge them with tricklab's ``judge``; returns (the result, each arm's mirror check, seconds, the
    number of Keras runs trained). ``cache``: a directory keeping each Keras run's record (by study, arm, seed
    and LR), so a second invocation trains only what is missing. ``inner_evals`` False: the records are judged on
    their epoch-end evaluations only (as tricklab trials that recorded none inside their epochs)."""
    started = time.perf_counter()

    def train(arm: str, recipe: Recipe, splits: Any, lr: float) -> dict[str, Any]:
        name = "".join(c if c.isalnum() or c in "-._" else "_" for c in f"{arm}-seed{recipe.seed}-lr{lr:.6g}")
        path = None if cache is None else cache / spec.name / f"{name}.json"
        if path is not None and path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
        else:
            record = train_keras(recipe, splits, lr)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(json_safe(record)), encoding="utf-8")
        if not inner_evals:
            record = {**record, "history": [{k: v for k, v in h.items() if k != "evals"} for h in record["history"]]}
        return record

    mirrors: dict[str, Any] = {}
    trials: list[TrialView] = []
    shared: list[TrialView] = []
    seeds, trained = spec.seed_list(), 0
    for arm in spec.arm_names():
        first = spec.trial_recipe(arm, seeds[0])
        check = mirror(first, prepare_data(first))
        if not check.same:
            raise RuntimeError(f"lesson {lesson.name}, arm {arm}: the Keras model does not mirror tricklab's "
                               f"({json.dumps(check.to_json())})")
        mirrors[arm] = check.to_json()
        own = float(first.optimizer.lr)
        for seed in seeds:
            recipe = spec.trial_recipe(arm, seed)
            splits = prepare_data(recipe)
            result = train(arm, recipe, splits, lrs[arm])
            trained += 1
            trials.append(TrialView(arm, seed, result["status"], result))
            if tuned is not None:
                if lrs[arm] == own:
                    shared.append(trials[-1])
                else:
                    at_own = train(arm, recipe, splits, own)
                    trained += 1
                    shared.append(TrialView(arm, seed, at_own["status"], at_own))
            if progress:
                print(f"  keras {lesson.name} {arm} seed {seed}: test accuracy {result['test_accuracy']}",
                      file=sys.stderr, flush=True)
    result = judge(lesson, quick, spec, trials, shared=shared if tuned is not None else None, tuned=tuned)
    return result, mirrors, time.perf_counter() - started, trained


def _side(check: Mapping[str, Any]) -> dict[str, Any]:
    """What the table and the book read of one side's check (``CheckResult.to_json``): the rule's verdict at this
    budget (a quick run's ``smoke`` set aside), effect, interval, n, margin, p-values, pool."""
    keys = ("verdict", "effect", "ci_low", "ci_high", "n", "margin", "method", "p", "p_holm", "treatment_mean",
            "baseline_mean")
    out = {k: check.get(k) for k in keys}
    out["verdict"] = check.get("verdict_at_this_budget", check.get("verdict"))
    if "pool" in check:
        out["pool"] = check["pool"]
    return out


def compare(name: str, tricklab: Mapping[str, Any], keras_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per check (tricklab's order): both sides, whether the verdicts agree, and where they do not, the sentence
    that says how (``book.disagreement``)."""
    by_name = {c["check"]: c for c in keras_json["checks"]}
    rows = []
    for t in tricklab["checks"]:
        k = by_name.get(t["check"])
        if k is None:
            raise ValueError(f"lesson {name}: tricklab's check {t['check']!r} has no Keras counterpart")
        row = {"check": t["check"], "question": t["question"], "measure": t["measure"],
               "measure_label": t.get("measure_label", t["measure"]), "expects": t.get("expects"),
               "tricklab": _side(t), "keras": _side(k)}
        row["agree"] = row["tricklab"]["verdict"] == row["keras"]["verdict"]
        row["why"] = None if row["agree"] else disagreement(row)
        rows.append(row)
    return rows


def _arm_rows(tricklab: Mapping[str, Any], keras_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = ("n", "mean", "ci_low", "ci_high", "statuses")
    k_arms = {a["name"]: a for a in keras_json["arms"]}
    return [{"name": a["name"], "lr": a["lr"], "shared_lr": a.get("shared_lr", a["lr"]), "measure": tricklab["measure"],
             "tricklab": {k: a.get(k) for k in keys}, "keras": {k: k_arms[a["name"]].get(k) for k in keys}}
            for a in tricklab["arms"]]


def lesson_named(name: str, dropout_datasets: str | None = None) -> Lesson:
    """The registered lesson ``name``; for dropout with ``dropout_datasets``, the catalog's ``dropout_lesson`` on
    those of its datasets (``catalog.dropout.DATASETS``)."""
    if name != "dropout" or not dropout_datasets:
        return get_lesson(name)
    from tricklab.lessons.catalog import dropout

    factory, known = getattr(dropout, "dropout_lesson", None), getattr(dropout, "DATASETS", None)
    if factory is None or known is None:
        raise ValueError("--dropout-datasets: this tricklab's dropout lesson has no datasets to choose from")
    chosen = [d.strip() for d in dropout_datasets.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in known]
    if unknown or not chosen:
        raise ValueError(f"--dropout-datasets: {unknown or 'none given'}; the lesson's datasets: {', '.join(known)}")
    return factory({d: known[d] for d in chosen}, note=f" Cross-check subset: {', '.join(chosen)} only.")


def cross_check(name: str, args: argparse.Namespace, given: dict[str, Any] | None, work: Path) -> dict[str, Any]:
    """One lesson, both frameworks: the JSON entry of ``docs/lessons_keras.json``."""
    lesson = budgeted(lesson_named(name, args.dropout_datasets), args.quick, args.seeds, args.epochs,
                      args.tuning_seeds)
    t0 = time.perf_counter()
    lesson, spec, tricklab, source = tricklab_side(lesson, args.quick, given, work, args.workers)
    tricklab_wall = time.perf_counter() - t0
    quick = tricklab.get("variant") == "quick"
    tuned = tuned_arms(tricklab)
    lrs = {a["name"]: float(a["lr"]) for a in tricklab["arms"]}
    print(f"{name}: tricklab side {source} ({tricklab_wall:.0f} s); Keras: {len(spec.arm_names())} arms × "
          f"{len(spec.seed_list())} seeds × {lesson.variant(quick).epochs} epochs", file=sys.stderr, flush=True)
    result, mirrors, keras_seconds, trained = keras_side(lesson, quick, spec, tuned, lrs, progress=args.progress,
                                                         cache=work / "keras", inner_evals=args.inner_evals)
    keras_json = result.to_json()
    checks = compare(name, tricklab, keras_json)
    return {"lesson": name, "claim": lesson.claim, "variant": tricklab.get("variant"), "seeds": spec.seed_list(),
            "epochs": lesson.variant(quick).epochs, "tuning_seeds": lesson.variant(quick).tuning_seeds,
            "arm_names": spec.arm_names(), "keras_inner_evals": args.inner_evals, "dropout_datasets": args.dropout_datasets if name == "dropout" else None, "study": spec.name, "tricklab_source": source,
            "tricklab_seconds": tricklab.get("seconds"), "tricklab_cpu_seconds": tricklab.get("cpu_seconds"),
            "tricklab_wall_here": round(tricklab_wall, 1), "keras_seconds": round(keras_seconds, 1),
            "keras_trials": trained,
            "arms": _arm_rows(tricklab, keras_json), "mirror": mirrors, "checks": checks,
            "primary_agree": checks[0]["agree"], "all_agree": all(c["agree"] for c in checks),
            "keras_explanation": keras_json["explanation"]}


def table(entries: Sequence[Mapping[str, Any]]) -> str:
    """The side-by-side table (Markdown) of every lesson's checks."""
    lines = ["| lesson | check | tricklab effect [95% CI] | verdict | Keras effect [95% CI] | verdict | agree |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        for c in e["checks"]:
            cells = []
            for side in ("tricklab", "keras"):
                s = c[side]
                effect, ci = effect_texts(s["effect"], _end(s["ci_low"], -1), _end(s["ci_high"], 1))
                cells += [f"{effect} {ci}", s["verdict"]]
            lines.append(f"| {e['lesson']} | {c['check']} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                         f"{'yes' if c['agree'] else '**no**'} |")
    return "\n".join(lines)


def _end(x: float | None, sign: int) -> float:
    """An interval end as JSON holds it: None is an end the method could not bound (±∞)."""
    return math.copysign(math.inf, sign) if x is None else float(x)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", default=",".join(LESSONS), help=f"comma-separated, of {', '.join(LESSONS)}")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N−1 (default: the variant's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the variant's)")
    parser.add_argument("--tuning-seeds", type=int, default=None, help="seeds of tricklab's per-arm LR tuning "
                        "(default: the variant's)")
    parser.add_argument("--quick", action="store_true", help="the quick variant (3 seeds: the rule cannot decide)")
    parser.add_argument("--dropout-datasets", default=None, metavar="NAMES",
                        help="the dropout lesson on these of its datasets only (comma-separated, e.g. digits): the "
                             "catalog's dropout_lesson(datasets) — a study of its own, cheaper than all of them")
    parser.add_argument("--tricklab-json", action="append", default=[], metavar="PATH",
                        help="a `tricklab lesson NAME --json` output to compare with (else tricklab runs in-process)")
    parser.add_argument("--work", default=None, help="where tricklab's in-process lessons keep their store")
    parser.add_argument("--workers", type=int, default=1, help="tricklab's trial workers (in-process run)")
    parser.add_argument("--out", default=None, help="write the JSON object here too")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--no-inner-evals", dest="inner_evals", action="store_false",
                        help="judge the Keras runs on their epoch-end validations only, as tricklab trials that recorded "
                             "none inside their epochs (a recipe's evals_per_epoch that tricklab's runs did not honour)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="combine outputs of this bench (e.g. one lesson each, run side by side) into one: print "
                             "the table, write --out; trains nothing")
    args = parser.parse_args(argv)
    if args.merge:
        return _emit(merge(args.merge), args.out)
    names = [n.strip() for n in args.lessons.split(",") if n.strip()]
    unknown = [n for n in names if n not in LESSONS]
    if unknown or not names:
        parser.error(f"--lessons: {unknown or 'none given'}; allowed: {', '.join(LESSONS)}")
    given: dict[str, dict[str, Any]] = {}
    for path in args.tricklab_json:
        for item in read_tricklab_json(path):
            given[item["lesson"]] = item
    if given and (args.seeds or args.epochs or args.quick or args.tuning_seeds or args.dropout_datasets):
        parser.error("--tricklab-json brings its own budget (variant, seeds, epochs); leave --seeds/--epochs/--quick out")
    started, started_wall = time.perf_counter(), time.time()
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for name in names:
            entries.append(cross_check(name, args, given.get(name), work))
    env = environment()
    out = {"bench": "lessons_keras", "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
           "keras": keras.__version__, "keras_backend": keras.backend.backend(),
           "torch": torch.__version__, "tricklab": env["tricklab"], "git_revision": env["git_revision"],
           "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
           "wall_seconds": round(time.perf_counter() - started, 1), "differences": list(DIFFERENCES),
           "lessons": entries, "all_agree": all(e["all_agree"] for e in entries),
           "primary_agree": all(e["primary_agree"] for e in entries)}
    return _emit(out, args.out)


def merge(paths: Sequence[str]) -> dict[str, Any]:
    """One output of several (each lesson once, the last file's entry winning): the first file's environment,
    ``runs`` with each file's lessons, start, wall seconds and load, ``wall_seconds`` the longest of them (runs
    side by side) and the agreement over every lesson."""
    outputs = []
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("bench") != "lessons_keras":
            raise ValueError(f"{path}: not an output of bench/lessons_keras.py")
        outputs.append(data)
    lessons: dict[str, Any] = {}
    for data in outputs:
        lessons.update({e["lesson"]: e for e in data["lessons"]})
    entries = [lessons[n] for n in [*LESSONS, *sorted(set(lessons) - set(LESSONS))] if n in lessons]
    runs = [{"lessons": [e["lesson"] for e in d["lessons"]], "started_utc": d.get("started_utc"),
             "wall_seconds": d.get("wall_seconds"), "load_average": d.get("load_average")} for d in outputs]
    return {**outputs[0], "runs": runs, "wall_seconds": max(float(r["wall_seconds"] or 0.0) for r in runs),
            "lessons": entries, "all_agree": all(e["all_agree"] for e in entries),
            "primary_agree": all(e["primary_agree"] for e in entries)}


def _emit(out: dict[str, Any], path: str | None) -> dict[str, Any]:
    """Print the table, the disagreement sentences and the JSON (last line); write the JSON to ``path``."""
    entries = out["lessons"]
    print(table(entries))
    for e in entries:
        for c in e["checks"]:
            if c["why"]:
                print(f"- {e['lesson']}: {c['why']}")
    print("known design differences: " + "; ".join(out["differences"]))
    out = json_safe(out)
    text = json.dumps(out, allow_nan=False)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(text)
    return out


if __name__ == "__main__":
    main()
