"""Preflight: refuse a run that cannot fit in memory, before any data is generated or any weight allocated.

Without it, ``--set model.width=65536 --set model.depth=100`` asks the allocator for 120 TiB and dies with a
``RuntimeError`` (or is killed by the OOM killer with nothing said), and ``--set data.size=1000000000000``
fills memory while generating data; both after the run directory exists. ``preflight(recipe)`` estimates the
bytes of the three things a run holds and refuses, naming the field that makes the largest of them too big:

- **model** (``model.width``/``model.depth``): the parameters, counted on PyTorch's meta device (shapes only, no
  storage: a 4·10¹¹-parameter model costs nothing to count), times 4 bytes (float32) times ``PARAMETER_COPIES``
  (weights, gradients, two optimizer slots — Adam's m and v, the most any built-in optimizer keeps — and the
  checkpoint's in-memory copy of weights and optimizer state), plus one averaged copy for EMA/SWA; times the
  members of an ensemble, which are all kept.
- **data** (``data.size``): examples × input values × ``BYTES_PER_INPUT_VALUE`` — the generators' float64
  arrays, the float32 splits and their scaled copies exist at once while the data is prepared.
- **activations** (``data.batch_size``): what one training step keeps for the backward pass: the batch (never
  more than the training examples) × ``ACTIVATIONS_PER_UNIT`` outputs per unit of every weight layer (weights,
  norm, activation) × the positions of the input (1 for vectors; a conv layer sees every position of a signal or
  image — pooling only lowers it, so this is an upper bound) × 4 bytes.

Data and model live on the host first (data is generated and the model built on the CPU before ``.to(device)``),
so the budget is the host's memory: ``MEMORY_SHARE`` of the physical memory, or of the cgroup's limit in a
container when that is lower. Half, because the estimate leaves out what it cannot see — the allocator's slack
and fragmentation, torch's own few hundred MB, the doctor's probes, evaluation batches, Python — and the rest of
the machine needs memory too; a run estimated above half is at best swapping.

Datasets read from files (csv, npz, idx) reveal their shape and size only when read, which preflight does not
do: their model is counted for one input value (a lower bound that still catches a width no data could afford),
and their data and activations are estimated only as far as ``data.size`` says. User models (``model.python``)
are checked by ``tricklab.models.user`` once their factory has run.

Batch norm needs more than one value per channel in training (it divides by the batch's standard deviation):
a batch of one example (``data.batch_size: 1``, ``data.train_subset: 1``) breaks every batch-norm layer that sees
no other positions — all of them in an MLP, those after the last pooling in a CNN. A forward pass of one example
through the model built one unit wide finds out, layer by layer, instead of torch's ``ValueError`` in the first
training step, after the run directory was made.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tricklab.data.synthetic import DEFAULT_SIZE, SPIRAL_CLASSES, TEACHER_CLASSES, TEACHER_FEATURES
from tricklab.errors import InputError
from tricklab.models import MODELS, build_model
from tricklab.models.blocks import Reshape
from tricklab.models.registry import DEFAULT_WIDTH
from tricklab.recipe import Recipe
from tricklab.recipe.schema import ModelConfig

MEMORY_SHARE = 0.5
"""Share of the machine's memory a run may be estimated at (see the module's docstring for why half)."""
BYTES_PER_VALUE = 4  # float32: weights, gradients, optimizer state, activations
PARAMETER_COPIES = 7
"""Weights, gradients, 2 optimizer slots, and the checkpoint's serialised weights + 2 slots (``save_checkpoint``
builds the whole file in memory before writing it)."""
BYTES_PER_INPUT_VALUE = 16
"""8 (the generator's float64 array) + 4 (the float32 splits) + 4 (their scaled copies)."""
ACTIVATIONS_PER_UNIT = 3
"""A hidden layer keeps the outputs of its weights, its norm and its activation for the backward pass."""
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v2, v1


@dataclass(frozen=True)
class KnownData:
    """What a built-in dataset holds, known without loading it."""

    input_shape: tuple[int, ...]
    num_classes: int
    examples: int | None  # None: read from files, as many as they hold
    generated: bool       # ``data.size`` is the number generated (else a cap on the number read)
    own_test_share: float | None = None  # the share of the dataset's own test split; None: carved by test_fraction


KNOWN_DATA = {
    # Greydanus 2020 (arXiv:2011.14439): 40-long signals, 5000 samples by default, 80/20 train/test
    "mnist1d": KnownData((1, 40), 10, 5000, generated=True, own_test_share=0.2),
    "synthetic/spirals": KnownData((2,), SPIRAL_CLASSES, DEFAULT_SIZE, generated=True),
    "synthetic/teacher": KnownData((TEACHER_FEATURES,), TEACHER_CLASSES, DEFAULT_SIZE, generated=True),
    "digits": KnownData((1, 8, 8), 10, 1797, generated=False),  # sklearn's load_digits: 1797 8×8 images
    "cifar10": KnownData((3, 32, 32), 10, None, generated=False, own_test_share=1 / 6),  # Krizhevsky 2009
}
UNKNOWN_SHAPE = (1,)
"""The input a file dataset's model is counted for: one value (a lower bound)."""


MODEL = "model"  # the model's part: sized by model.width or model.depth, which one is decided on refusal


@dataclass(frozen=True)
class Part:
    """One part of the estimate: the field that sizes it, its bytes, and what it is, in words."""

    field: str
    bytes: int
    what: str


def preflight(recipe: Recipe) -> None:
    """Refuse ``recipe`` with an ``InputError`` if it cannot fit in this machine's memory or trains batch norm on
    one example per batch; return None otherwise. Reads no data and allocates no weights of the real size (meta
    tensors; a model one unit wide for the batch-norm check)."""
    d, m = recipe.data, recipe.model
    known = None if d.python else KNOWN_DATA.get(d.name if d.name != "synthetic" else f"synthetic/{d.variant or 'spirals'}")
    examples = _examples(recipe, known)
    train_examples = _train_examples(recipe, known, examples)
    batch = min(d.batch_size, train_examples) if train_examples is not None else None
    model = None if m.python else _meta_model(recipe, known, m.width, m.depth)
    parts = []
    if model is not None:
        parts.append(_model_part(recipe, model))
        if batch is not None:
            parts.append(_activation_part(model, batch))
    if known is not None and examples is not None:
        values = examples * math.prod(known.input_shape)
        parts.append(Part("data.size", values * BYTES_PER_INPUT_VALUE,
                          f"{examples:,} examples of {math.prod(known.input_shape):,} values ({d.name})"))
    _check_memory(recipe, known, parts)
    one_example_batches = min(d.batch_size, d.train_subset or d.batch_size) == 1
    # an MLP flattens its input: its batch norm sees one value per channel whatever the input's shape
    shape_matters = known is None and MODELS.canonical(m.name) != "mlp"
    if not m.python and m.norm == "batch" and one_example_batches and not shape_matters:
        _check_batch_norm(recipe, known, "data.train_subset" if d.train_subset == 1 else "data.batch_size")


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or the container's cgroup limit when lower; None
    where it cannot be read (no ``sysconf``)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit():  # "max" (v2) means no limit; v1 says so with a huge number, which min() ignores
            total = min(total, int(text))
    return total


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 KiB``, ... ``3.2 EiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


# -- the estimate ------------------------------------------------------------------------------------------------
def _examples(recipe: Recipe, known: KnownData | None) -> int | None:
    """All examples the dataset will hold (before any split); None when only reading the files would tell."""
    size = recipe.data.size
    if known is None or known.examples is None:
        return size if known is not None else None  # cifar10: size caps what is read; csv/npz/idx: unknown
    if known.generated:
        return size or known.examples
    return min(size or known.examples, known.examples)


def _train_examples(recipe: Recipe, known: KnownData | None, examples: int | None) -> int | None:
    """About how many examples the training split gets; None when unknown (a file dataset without a size)."""
    d = recipe.data
    if examples is None:
        return d.train_subset
    test_share = known.own_test_share if known is not None and known.own_test_share is not None else d.test_fraction
    n = max(1, int(examples * (1 - test_share) * (1 - d.val_fraction)))
    return min(n, d.train_subset) if d.train_subset is not None else n


def _meta_model(recipe: Recipe, known: KnownData | None, width: int | None, depth: int) -> nn.Module:
    """The recipe's built-in model on the meta device (shapes without storage)."""
    m = recipe.model
    shape, classes = (known.input_shape, known.num_classes) if known is not None else (UNKNOWN_SHAPE, 2)
    with torch.device("meta"):
        return build_model(m.name, shape, classes, depth=depth, width=width, activation=m.activation,
                           norm=m.norm, dropout=m.dropout)


def _parameter_bytes(recipe: Recipe, model: nn.Module) -> int:
    copies = PARAMETER_COPIES + (1 if recipe.averaging.mode in ("ema", "swa") else 0)
    members = recipe.averaging.k if recipe.averaging.mode == "ensemble" else 1
    return members * copies * BYTES_PER_VALUE * sum(p.numel() for p in model.parameters())


def _model_part(recipe: Recipe, model: nn.Module) -> Part:
    m = recipe.model
    count = sum(p.numel() for p in model.parameters())
    width = m.width or DEFAULT_WIDTH[MODELS.canonical(m.name)]
    what = f"model {m.name} of depth {m.depth} and width {width}: {count:,} parameters"
    if recipe.averaging.mode == "ensemble":
        what += f", {recipe.averaging.k} ensemble members"
    return Part(MODEL, _parameter_bytes(recipe, model), what)


def _activation_part(model: nn.Module, batch: int) -> Part:
    reshape = getattr(model, "reshape", None)
    positions = math.prod(reshape.shape[1:]) if isinstance(reshape, Reshape) else 1
    units = sum(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
                for layer in model.modules() if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)))
    values = batch * units * positions * ACTIVATIONS_PER_UNIT
    return Part("data.batch_size", values * BYTES_PER_VALUE, f"activations of a batch of {batch:,}")


def _check_memory(recipe: Recipe, known: KnownData | None, parts: list[Part]) -> None:
    memory = machine_memory()
    if memory is None or not parts:
        return
    budget = int(memory * MEMORY_SHARE)
    total = sum(p.bytes for p in parts)
    if total <= budget:
        return
    largest = max(parts, key=lambda p: p.bytes)
    field = _model_field(recipe, known, budget) if largest.field == MODEL else largest.field
    detail = "; ".join(f"{format_bytes(p.bytes)} for {p.what}" for p in sorted(parts, key=lambda p: -p.bytes))
    raise InputError(
        field,
        f"the run would need about {format_bytes(total)} of memory, more than {MEMORY_SHARE:.0%} of this "
        f"machine's {format_bytes(memory)} ({detail})",
        allowed=f"a run estimated at up to {format_bytes(budget)}: a smaller {field}",
    )


def _model_field(recipe: Recipe, known: KnownData | None, budget: int) -> str:
    """Which of width and depth to lower: the width, if the model is too big even at the default depth."""
    m = recipe.model
    default_depth = ModelConfig.model_fields["depth"].default
    if m.width is None:
        return "model.depth"
    if m.depth <= default_depth:
        return "model.width"
    shallow = _meta_model(recipe, known, m.width, default_depth)
    return "model.width" if _parameter_bytes(recipe, shallow) > budget else "model.depth"


# -- batch norm on one example -----------------------------------------------------------------------------------
class _OneValuePerChannel(Exception):
    """Raised by a hook in the trial forward pass, naming the first batch-norm layer with one value per channel."""


def _check_batch_norm(recipe: Recipe, known: KnownData | None, field: str) -> None:
    """A training-mode forward pass of one example through the recipe's model built one unit wide (how many
    values a batch-norm layer sees per channel depends on the batch, the depth and the input's positions, never on
    the width); refuse at the first batch-norm layer that would see one value per channel. On the CPU and not on
    the meta device, whose first forward pass imports ~2 s of torch; under ``fork_rng``, so the run's random
    numbers are untouched."""
    m = recipe.model
    shape, classes = (known.input_shape, known.num_classes) if known is not None else (UNKNOWN_SHAPE, 2)

    def stop_there(name: str):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if args[0].numel() == args[0].shape[1]:
                raise _OneValuePerChannel(name)
        return hook

    with torch.random.fork_rng(devices=[]):
        model = build_model(m.name, shape, classes, depth=m.depth, width=1, activation=m.activation, norm=m.norm,
                            dropout=m.dropout)
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.register_forward_pre_hook(stop_there(name))
        try:
            with torch.no_grad():
                model.train()(torch.zeros(1, *shape))
        except _OneValuePerChannel as err:
            raise InputError(
                field,
                f"batches of one example reach batch norm ({err}) with one value per channel: batch norm normalises "
                "each channel by its mean and variance over the batch (and positions), which one value does not "
                "have",
                allowed=f"{field} >= 2, or model.norm: layer, group or none",
            ) from None
