"""One run from one recipe: build data, model and tricks, train, evaluate, keep everything.

Data flow (DESIGN.md): recipe → data (scaled with train-split statistics) → model (init, norm, dropout)
→ optimizer + param groups (no decay on bias/norm) + schedule + clipping → Trainer → RunResult → run
directory and store.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tricklab.data import Splits, load_data
from tricklab.data.user import DataSplits, load_user_data
from tricklab.errors import InputError, Interrupted
from tricklab.fsutil import atomic_write_text, exclusive_lock, require_file, safe_name
from tricklab.models import build_model, load_user_model
from tricklab.provenance import __version__, git_revision
from tricklab.recipe import (
    Recipe,
    apply_overrides,
    load_recipe,
    parse_overrides,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from tricklab.recipe.identity import data_fingerprint, recipe_differences, recipe_hash, with_absolute_paths
from tricklab.store import Store
from tricklab.store.records import Alarm
from tricklab.train import distributed
from tricklab.train.best_checkpoints import BEST_DIR, BestCheckpoints
from tricklab.train.callbacks import EarlyStoppingCallback, GradientClipping, PlateauSchedule, WeightAveraging
from tricklab.train.events import Callback, TrainState
from tricklab.train.progress import ProgressReporter
from tricklab.train.rows import history_csv, metric_rows
from tricklab.train.trainer import Trainer, batches_per_epoch, evaluate_split
from tricklab.tricks.augment import build_augment
from tricklab.tricks.augment import input_kind as augment_input_dims
from tricklab.tricks.averaging import Ensemble
from tricklab.tricks.init import init_model_
from tricklab.tricks.monitor import Monitor
from tricklab.tricks.norm import apply_weight_norm
from tricklab.tricks.optimizers import build_optimizer
from tricklab.tricks.precision import refusal as precision_refusal
from tricklab.tricks.regularization import add_decoupled_weight_decay, capacity_warning, param_groups
from tricklab.tricks.scaling import fit_scaler
from tricklab.tricks.schedules import build_schedule

RECIPE_FILE = "recipe.yaml"
IDENTITY_FILE = "identity.json"
"""The recipe a run directory was made for (canonical form and hash) and its data file's fingerprint, written when
the run starts; a resume compares ``recipe.yaml`` and the data with it (``identity_problems``)."""
RESULT_FILE = "result.json"
LOCK_FILE = ".lock"  # held while a process trains in the run directory (see ``fsutil.exclusive_lock``)
METRICS_FILE = "metrics.json"


@dataclass
class RunResult:
    """The outcome of one run; ``to_json()`` is the object ``tricklab train --json`` prints."""

    status: str                      # completed | stopped_early | diverged
    test_accuracy: float | None
    test_loss: float | None
    best_epoch: int | None
    epochs: int                      # epochs completed
    steps: int                       # optimizer steps taken
    wall_seconds: float
    run_dir: str | None
    run_id: str
    alarms: list[Alarm] = field(default_factory=list)   # in the JSON: their ``brief()`` {kind, layer, step, message}
    history: list[dict[str, float]] = field(default_factory=list)
    diverged_step: int | None = None
    stop_reason: str = ""
    val_accuracy: float | None = None
    val_loss: float | None = None
    train_seconds: float = 0.0
    num_params: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    recipe: dict[str, Any] = field(default_factory=dict)
    lr_found: float | None = None    # optimizer.lr: auto — the η the range test chose (lr_find.json beside it)
    train_accuracy: float | None = None   # the training split after training, in eval mode, by the evaluated model
    train_loss: float | None = None       # (an ensemble's averaged probabilities), as test_* and val_*

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (non-finite numbers become null)."""
        return json_safe({**asdict(self), "alarms": [a.brief() for a in self.alarms]})


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON has no NaN/Inf)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is not there is an input error."""
    has_mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "cuda was requested but no CUDA device is available", allowed="auto, cpu")
    if requested == "mps" and not has_mps:
        raise InputError("device", "mps was requested but is not available", allowed="auto, cpu")
    return torch.device(requested)


def prepare_data(recipe: Recipe, device: torch.device | str = "cpu") -> Splits | DataSplits:
    """Load the recipe's data and scale every split with statistics of the training split only."""
    d = recipe.data
    if d.python:   # a user's datasets, as the factory makes them (tricklab.data.user): not loaded, carved or scaled
        return load_user_data(d.python, d.batch_size).to(device)
    splits = load_data(d.name, path=d.path, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                       split_seed=d.split_seed, size=d.size, train_subset=d.train_subset,
                       label_column=d.label_column, variant=d.variant)
    scaler = fit_scaler(d.scale, splits.x_train)
    splits.x_train, splits.x_val, splits.x_test = (scaler.transform(x) for x in
                                                   (splits.x_train, splits.x_val, splits.x_test))
    return splits.to(device)


def build_recipe_model(recipe: Recipe, splits: Splits, seed: int) -> nn.Module:
    """The recipe's model, initialised by its scheme (seeded), with weight norm applied after init."""
    m = recipe.model
    torch.manual_seed(seed)
    if m.python:
        model = load_user_model(m.python, splits.input_shape, splits.num_classes)
    else:
        model = build_model(m.name, splits.input_shape, splits.num_classes, depth=m.depth, width=m.width,
                            activation=m.activation, norm=m.norm, dropout=m.dropout)
    model = model.to(splits.device)
    sample = splits.sample(512) if recipe.init.scheme == "lsuv" else None
    init_model_(model, recipe.init.scheme, data=sample)
    if m.norm == "weight" and not m.python:
        apply_weight_norm(model)
    return model


def build_recipe_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """Optimizer over two param groups (no weight decay on biases and norm parameters).

    ``decay: l2`` passes λ to the optimizer as coupled L2 (λw added to the gradient = ∇ of λ/2·‖w‖²);
    ``decay: decoupled`` applies w ← w − ηλw outside the gradient (AdamW natively, a step pre-hook otherwise).
    """
    o = recipe.optimizer
    decoupled_hook = o.decay == "decoupled" and o.name != "adamw"
    groups = param_groups(model, o.weight_decay, decoupled=decoupled_hook)
    optimizer = build_optimizer(o.name, groups, lr=o.lr, momentum=o.momentum, betas=o.betas, eps=o.eps)
    if decoupled_hook:
        add_decoupled_weight_decay(optimizer)
    return optimizer


def recipe_schedule(recipe: Recipe, n_train: int) -> Any:
    """The recipe's learning-rate schedule for ``n_train`` training examples (steps from epochs)."""
    steps_per_epoch = batches_per_epoch(n_train, recipe.data.batch_size * recipe.accumulate)  # one step: N batches
    o, s = recipe.optimizer, recipe.schedule
    return build_schedule(
        s.name, lr=o.lr, total_steps=recipe.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
        gamma=s.gamma, warmup_steps=int(round(s.warmup_epochs * steps_per_epoch)),
        step_size_epochs=s.step_size, final_lr=s.final_lr, pct_start=s.pct_start)


def check_buildable(recipe: Recipe, splits: Splits) -> None:
    """Build the first model, its optimizer and schedule once and drop them: what they refuse (a user model that
    fails its trial forward pass, a schedule the run is too short for) is refused before a run directory or a
    store row exists. The run builds them again from the same seed, so nothing it computes changes."""
    if recipe.optimizer.lr == "auto":   # any η builds the same optimizer; the run's is chosen later
        recipe = with_lr(recipe, AUTO_LR_PLACEHOLDER)
    model = build_recipe_model(recipe, splits, recipe.seed)
    build_recipe_optimizer(recipe, model)
    recipe_schedule(recipe, splits.n_train)
    refused = precision_refusal(recipe.precision, splits.device)
    if refused:
        raise InputError("precision", f"{recipe.precision} on {splits.device.type}: {refused}", allowed="fp32, bf16")
    dims = augment_input_dims(recipe.data.augment)
    if dims and len(splits.input_shape) != dims:
        raise InputError("data.augment", f"{recipe.data.augment} transforms examples of {dims} dimensions "
                                         f"({'channels, length' if dims == 2 else 'channels, height, width'}), but this "
                                         f"data's examples have shape {tuple(splits.input_shape)}",
                         allowed="none, " + ("crop_flip" if len(splits.input_shape) == 3 else "shift_noise")
                         if len(splits.input_shape) in (2, 3) else "none")


AUTO_LR_PLACEHOLDER = 1e-3
"""The η an ``optimizer.lr: auto`` recipe's optimizer is built with where only buildability matters."""


def with_lr(recipe: Recipe, lr: float) -> Recipe:
    """``recipe`` with ``optimizer.lr`` set to ``lr``."""
    return recipe.model_copy(update={"optimizer": recipe.optimizer.model_copy(update={"lr": float(lr)})})


def choose_lr(recipe: Recipe, splits: Any, run_path: Path, resume: bool) -> float:
    """``optimizer.lr: auto``: the η the learning-rate range test suggests for this recipe (seeded: the same
    recipe and data give the same η), written beside the run as ``lr_find.json`` and ``lr_find.png``. A resumed
    run reads the η its first start chose, so every epoch trains with the same one."""
    from tricklab.train.lr_search import LR_FIND_JSON, find_lr, write_lr_find

    saved = run_path / LR_FIND_JSON
    if resume and saved.is_file():
        try:
            chosen = json.loads(saved.read_text(encoding="utf-8"))["suggestion"]
        except (OSError, ValueError, KeyError, TypeError):
            chosen = None
        if isinstance(chosen, (int, float)) and math.isfinite(chosen) and chosen > 0:
            return float(chosen)
    found = find_lr(recipe, splits, build_recipe_model, build_recipe_optimizer)
    write_lr_find(found, run_path, title=f"learning-rate range test — {recipe.name} ({recipe.optimizer.name}); "
                                         f"the run trains with η = {found.suggestion:.3g}")
    return found.suggestion


def step_tricks(recipe: Recipe) -> dict[str, Any]:
    """The Trainer's arguments for the recipe's tricks of the step itself: precision, gradient accumulation,
    augmentation, mixup and label smoothing."""
    d = recipe.data
    return {"precision": recipe.precision, "accumulate": recipe.accumulate, "mixup": d.mixup,
            "augment": build_augment(d.augment, shift=d.augment_shift, noise=d.augment_noise),
            "label_smoothing": recipe.loss.label_smoothing}


def stopping_callbacks(recipe: Recipe) -> tuple[EarlyStoppingCallback | None, PlateauSchedule | None]:
    """The recipe's early stopping and plateau schedule (None where it has none): for a trial's Trainer and for a
    population member alike."""
    es, s = recipe.early_stopping, recipe.schedule
    stopper = EarlyStoppingCallback(es.patience, es.monitor, es.min_delta) if es.patience > 0 else None
    plateau = PlateauSchedule(s.factor, s.patience) if s.name == "plateau" else None
    return stopper, plateau


def _trick_callbacks(recipe: Recipe) -> tuple[list[Callback], EarlyStoppingCallback | None]:
    cbs: list[Callback] = [GradientClipping(recipe.clip.mode, recipe.clip.threshold)]
    stopper, plateau = stopping_callbacks(recipe)
    if stopper is not None:
        cbs.append(stopper)
    if recipe.averaging.mode in ("ema", "swa"):
        start = int(recipe.averaging.swa_start * recipe.epochs)
        cbs.append(WeightAveraging(recipe.averaging.mode, decay=recipe.averaging.decay, swa_start_epoch=start))
    if plateau is not None:
        cbs.append(plateau)
    return cbs, stopper


class MetricsFile(Callback):
    """Keeps ``metrics.json`` in the run directory up to date after every epoch (atomically), and ``metrics.csv``
    beside it: the same history as a table any spreadsheet opens."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, state: TrainState) -> None:
        history = state.history + [state.epoch_metrics]
        atomic_write_text(self.path, json.dumps(json_safe(history), indent=1))
        atomic_write_text(self.path.with_suffix(".csv"), history_csv(history))


def new_run_dir(recipe: Recipe, runs_root: str | os.PathLike[str] = "runs") -> Path:
    """``RUNS_ROOT/NAME-DATE-TIME-RANDOM`` for a run named by its recipe. A name that reads as a path (``..``,
    ``/``, ``\\``) is refused rather than quietly rewritten: it cannot lead outside ``runs_root``, and the user learns
    that names are not paths (``--runs-dir`` says where runs go)."""
    safe_name(recipe.name, "name")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(runs_root) / f"{_slug(recipe.name)}-{stamp}-{secrets.token_hex(3)}"


def _slug(text: str) -> str:
    """``text`` as a plain part of a file name: letters, digits, ``-``, ``_`` and ``.`` kept, others ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60].strip(".") or "run"


def run_name(recipe: Recipe) -> str:
    """What a run is, as its name: ``<data>-<model>`` (``digits-mlp``; a local file by its stem, ``iris-mlp``; a
    user's model by its factory, ``mnist1d-make_net``; a user's datasets by theirs, ``load_sensors-mlp``). Used when
    the recipe does not name the run itself."""
    d, m = recipe.data, recipe.model
    if d.python:
        data = d.python.rpartition(":")[2]
    else:
        data = Path(d.path).stem if d.path and d.name in ("csv", "npz") else d.name
    if d.variant and not d.python:
        data = f"{data}-{d.variant}"
    model = m.python.rpartition(":")[2] if m.python else m.name
    return safe_name(f"{_slug(data)}-{_slug(model)}", "name")


def named(recipe: Recipe, explicit: bool) -> Recipe:
    """``recipe`` with its name, or (not ``explicit``ly named) with ``run_name``'s: the name it is recorded under
    in ``recipe.yaml``, the store and the run directory."""
    return recipe if explicit else recipe.model_copy(update={"name": run_name(recipe)})


def best_epoch(history: list[dict[str, float]], monitor: str) -> int | None:
    """The epoch (1-based) of the best finite ``monitor`` value (ties: the earliest); the last epoch when none
    is finite, None without history."""
    index = Monitor(monitor).best_index(history)
    if index is None:
        return int(history[-1]["epoch"]) if history else None
    return int(history[index]["epoch"])


def train(
    recipe: Recipe | dict[str, Any] | str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] = "runs",
    store: Store | str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
    study: dict[str, Any] | None = None,
) -> RunResult:
    """Train one recipe end to end and return its ``RunResult``.

    ``recipe``: a ``Recipe``, a mapping, a YAML path, or None for the built-in default; ``overrides``:
    dotted ``key=value`` strings. ``resume``: a run directory of an interrupted run — its saved recipe and
    latest checkpoint are used and the run continues exactly where the last complete epoch ended. With
    ``resume``, the only override allowed is ``epochs=N`` with N above the saved epochs: it extends the run
    (finished or not) to N epochs, the schedule planned anew for N and N recorded (``extension``).
    ``store``: a ``Store`` or a path (the run and its metric series are recorded there). ``callbacks`` run
    before the trick callbacks (so they see gradients before clipping).

    Started by torchrun on several processes (``tricklab train --nproc N``: ``train.distributed``), process 0
    makes the run as above and the others train into a temporary directory that is removed, without store,
    progress or ``callbacks``; the result is process 0's.
    """
    world = distributed.current_world()
    if world is None:
        return _train(recipe, overrides, run_dir, runs_root, store, resume, progress, callbacks, study, None)
    if resume is not None:
        raise InputError("--nproc", "a run is resumed on one process: its checkpoint is an ordinary one",
                         allowed=f"tricklab train --resume {resume} (without --nproc)")
    scratch = None if world.is_main else Path(tempfile.mkdtemp(prefix=f"tricklab-rank{world.rank}-"))
    try:
        if scratch is None:
            return _train(recipe, overrides, run_dir, runs_root, store, resume, progress, callbacks, study, world)
        return _train(recipe, overrides, scratch / "run", runs_root, None, None, False, (), None, world)
    finally:
        distributed.leave()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def several_processes_refusal(recipe: Recipe) -> str | None:
    """Why ``recipe`` cannot train on several processes (None: it can): they run the plain step only."""
    d = recipe.data
    tricks = {"precision": recipe.precision != "fp32", "accumulate": recipe.accumulate != 1,
              "data.augment": d.augment != "none", "data.mixup": bool(d.mixup),
              "loss.label_smoothing": bool(recipe.loss.label_smoothing)}
    named = [key for key, on in tricks.items() if on]
    return (f"{', '.join(named)}: several processes train the plain step only (each takes its shard of the "
            "batch as it comes)") if named else None


def _train(recipe: Recipe | dict[str, Any] | str | os.PathLike[str] | None, overrides: Sequence[str] | None,
           run_dir: str | os.PathLike[str] | None, runs_root: str | os.PathLike[str],
           store: Store | str | os.PathLike[str] | None, resume: str | os.PathLike[str] | None, progress: bool,
           callbacks: Sequence[Callback], study: dict[str, Any] | None,
           world: distributed.World | None) -> RunResult:
    if resume is not None:
        run_path = Path(resume)
        if not (run_path / RECIPE_FILE).is_file():
            raise InputError("--resume", f"{run_path} is not a run directory (no {RECIPE_FILE} in it)",
                             allowed="a directory tricklab train made, e.g. runs/mnist1d-cnn-20261207-101500-a1b2c3 "
                                     "(ls runs/ lists them)")
        rec = load_recipe(run_path / RECIPE_FILE)
        extended = extension(rec, overrides, run_path)
        rec = extended or rec
        problems = identity_problems(run_path, recipe_to_dict(rec), extend=extended is not None)
        if problems:
            raise InputError("--resume", f"{run_path} cannot be resumed: {'; '.join(problems)}. Its checkpoint was "
                                         "trained with the recipe and data in identity.json",
                             allowed="restore recipe.yaml and the data file, or start a new run with the changed "
                                     "recipe")
    else:
        extended = None
        if isinstance(recipe, Recipe):
            rec = recipe.model_copy(deep=True)
            explicit = "name" in rec.model_fields_set or any(o.partition("=")[0].strip() == "name"
                                                             for o in overrides or [])
            if overrides:
                rec = recipe_from_dict(apply_overrides(recipe_to_dict(rec), list(overrides)))
        else:
            if isinstance(recipe, dict):
                rec = recipe_from_dict(apply_overrides(recipe, list(overrides or [])))
            else:
                rec = load_recipe(recipe, list(overrides or []))
            explicit = "name" in rec.model_fields_set   # the keys of the file or mapping and the overrides
        rec = recipe_from_dict(with_absolute_paths(recipe_to_dict(named(rec, explicit))))
        run_path = Path(run_dir) if run_dir is not None else new_run_dir(rec, runs_root)
    from tricklab.train.preflight import preflight  # memory and batch norm, before any data or weight exists

    preflight(rec)
    # Data and store first: bad data (NaN rows, a missing file) or a bad --store is refused before a run directory
    # or a store row exists.
    started = time.perf_counter()
    device = select_device(rec.device)
    if world is not None:
        refused = several_processes_refusal(rec)
        if refused:
            raise InputError("--nproc", refused, allowed="precision fp32, accumulate 1, no augment, mixup or label "
                                                         "smoothing; or one process")
        device = distributed.device_of(world, device)
        distributed.join(world, device)
    splits = prepare_data(rec, device)
    if resume is None:
        check_buildable(rec, splits)
    own_store = store is not None and not isinstance(store, Store)
    db = Store(store) if own_store else store  # type: ignore[arg-type]
    run_id = run_path.name
    try:
        if resume is None:
            _make_run_dir(run_path)
        lock = exclusive_lock(run_path / LOCK_FILE, wait=True,
                              on_wait=lambda holder: _say_waiting(run_path, holder, resume is not None))
        with lock:
            if resume is None or extended is not None:   # an extension records its new number of epochs
                save_recipe(rec, run_path / RECIPE_FILE)
                write_identity(run_path, recipe_to_dict(rec))
            if resume is not None:
                _remove_stale_temporaries(run_path)
            if db is not None:
                db.add_run(run_id, rec.name, recipe_to_dict(rec), run_dir=str(run_path), version=__version__,
                           git_rev=git_revision(), **(study or {}))
            try:
                lr_found = choose_lr(rec, splits, run_path, resume is not None) if rec.optimizer.lr == "auto" else None
                if lr_found is not None:
                    save_recipe(rec, run_path / RECIPE_FILE, lr_found=lr_found)
                work = rec if lr_found is None else with_lr(rec, lr_found)
                result = _execute(work, run_path, resume is not None, progress, list(callbacks), splits, device,
                                  started)
                if lr_found is not None:   # the recipe stays as written (its identity); the η chosen is beside it
                    result.recipe, result.lr_found = recipe_to_dict(rec), lr_found
                    atomic_write_text(run_path / RESULT_FILE, json.dumps(result.to_json(), indent=1))
            except KeyboardInterrupt:   # Ctrl-C, or SIGTERM through the CLI: the last checkpoint is complete
                if db is not None:
                    db.interrupt_run(run_id)
                raise Interrupted(f"run {run_path} keeps its last complete epoch",
                                  resume=shlex.join(["tricklab", "train", "--resume", str(run_path)])) from None
            if db is not None:
                db.finish_run(run_id, result.status, result.to_json(), metric_rows(result.history), result.alarms)
    finally:
        if own_store and db is not None:
            db.close()
    return result


def extension(saved: Recipe, overrides: Sequence[str] | None, run_path: Path) -> Recipe | None:
    """The recipe of ``run_path`` extended to more epochs by ``overrides`` (``["epochs=30"]``), or None when they
    ask for nothing new. Any other override is refused (the checkpoint was trained with the saved recipe), as are
    fewer epochs and a run that stopped early or diverged (it would end again at once)."""
    pairs = parse_overrides(list(overrides or []))
    if not pairs:
        return None
    others = sorted({".".join(keys) for keys, _ in pairs} - {"epochs"})
    if others:
        raise InputError(f"--set {others[0]}", "a resumed run keeps its saved recipe: its checkpoint was trained "
                                               "with it; only epochs may be raised, to extend the run",
                         allowed=f"--set epochs=N with N > {saved.epochs}, or a new run with the changed recipe")
    wanted = recipe_from_dict({**recipe_to_dict(saved), "epochs": pairs[-1][1]}, source="--set epochs")
    if wanted.epochs < saved.epochs:
        raise InputError("--set epochs", f"{run_path} was planned for {saved.epochs} epochs; a run cannot be "
                                         f"shortened to {wanted.epochs}",
                         allowed=f"N > {saved.epochs} to extend it, or --resume alone to continue it")
    if wanted.epochs == saved.epochs:
        return None
    status = _finished_status(run_path)
    if status in ("stopped_early", "diverged"):
        words = "stopped early" if status == "stopped_early" else "diverged"
        raise InputError("--resume", f"{run_path} {words}; more epochs would end it again at once",
                         allowed="a new run (with a changed recipe) instead of an extension")
    return wanted


def _finished_status(run_path: Path) -> str | None:
    """The status in ``run_path``'s ``result.json`` (None when it has none, or it cannot be read)."""
    try:
        path = require_file(run_path / RESULT_FILE, "--resume") if os.path.lexists(run_path / RESULT_FILE) else None
        return None if path is None else json.loads(path.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def write_identity(run_path: Path, recipe: dict[str, Any]) -> None:
    """Record in ``run_path`` which recipe (and which data file, by content) its checkpoints belong to."""
    identity = {"recipe_hash": recipe_hash(recipe), "recipe": recipe,
                "data": data_fingerprint(recipe.get("data", {}).get("path"))}
    atomic_write_text(run_path / IDENTITY_FILE, json.dumps(identity, indent=1))


def identity_problems(run_path: Path, recipe: dict[str, Any], *, extend: bool = False) -> list[str]:
    """Why ``run_path`` may not be resumed as a run of ``recipe``: the recipe its checkpoints were trained with
    (``identity.json``; ``recipe.yaml`` in directories older than it) differs — each differing key named — or
    its data file changed. Empty when it may. ``extend``: an explicit extension, where ``epochs`` may be larger
    than the saved value (and nothing else may differ)."""
    try:
        path = require_file(run_path / IDENTITY_FILE, "--resume") if os.path.lexists(run_path / IDENTITY_FILE) \
            else run_path / IDENTITY_FILE   # a FIFO in its place is refused by type, never opened
        identity = json.loads(path.read_text(encoding="utf-8"))
        saved, data = identity["recipe"], identity.get("data")
    except InputError:
        return [f"its {IDENTITY_FILE} is not a regular file"]
    except FileNotFoundError:
        try:
            saved, data = recipe_to_dict(load_recipe(run_path / RECIPE_FILE)), None
        except (InputError, OSError) as err:
            return [f"its {RECIPE_FILE} is unreadable ({err})"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"its {IDENTITY_FILE} is unreadable ({type(err).__name__})"]
    if extend and isinstance(saved, dict) and isinstance(saved.get("epochs"), int) \
            and recipe.get("epochs", 0) > saved["epochs"]:
        saved = {**saved, "epochs": recipe["epochs"]}
    problems = recipe_differences(saved, recipe)
    if problems:
        shown = problems[:8] + ([f"... ({len(problems) - 8} more)"] if len(problems) > 8 else [])
        problems = [f"the recipe differs from the one its checkpoint was trained with ({', '.join(shown)})"]
    if isinstance(data, dict):
        now = data_fingerprint(data.get("path"))
        if now is None or now.get("sha256") != data.get("sha256"):
            problems.append(f"its data file {data.get('path')} changed or is gone since the run started "
                            "(content hash differs)")
    return problems


def _make_run_dir(path: Path) -> None:
    """Create a run directory; a path that cannot be one (a file in the way, no permission) is an input error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as err:
        raise InputError("--runs-dir", f"cannot create the run directory {path}: {err.strerror}",
                         allowed="a directory path you can write to") from None


def _remove_stale_temporaries(run_path: Path) -> None:
    """Delete what atomic writes of a killed process left (``.checkpoint.pt.x1y2.tmp``): the caller holds the run
    directory's lock, so no live process is writing them."""
    for tmp in run_path.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _say_waiting(run_path: Path, holder: str, resume: bool) -> None:
    """Two processes on one run directory (a resumed run whose first process still lives, e.g. a study worker
    left by a killed driver): the second waits for the first, then (resuming) continues from its last checkpoint."""
    then = ", then continuing from its last checkpoint" if resume else ""
    sys.stderr.write(f"tricklab: {run_path} is in use by {holder or 'another process'}; waiting for it to end{then}\n")
    sys.stderr.flush()


def _execute(rec: Recipe, run_path: Path, resume: bool, progress: bool, extra: list[Callback], splits: Splits,
             device: torch.device, started: float) -> RunResult:
    members = rec.averaging.k if rec.averaging.mode == "ensemble" else 1
    models: list[nn.Module] = []
    states: list[TrainState] = []
    stoppers: list[EarlyStoppingCallback | None] = []
    train_seconds = 0.0
    for member in range(members):
        seed = rec.seed + member
        model = build_recipe_model(rec, splits, seed)
        optimizer = build_recipe_optimizer(rec, model)
        schedule = recipe_schedule(rec, splits.n_train)
        tricks, stopper = _trick_callbacks(rec)
        label = rec.name if members == 1 else f"{rec.name} [{member + 1}/{members}]"
        # extra callbacks (the doctor) first: they see the gradients before clipping
        cbs = extra + tricks + [MetricsFile(run_path / (METRICS_FILE if members == 1 else f"metrics-{member}.json"))]
        ckpt_dir = run_path if members == 1 else run_path / f"member-{member}"
        if rec.checkpoint.monitor != "none":
            cbs.append(BestCheckpoints(ckpt_dir / BEST_DIR, rec.checkpoint.monitor, rec.checkpoint.top_k))
        if progress:
            cbs.append(ProgressReporter(label))
        trainer = Trainer(model, optimizer, splits.train_data(), splits.val_data(),
                          epochs=rec.epochs, batch_size=rec.data.batch_size, seed=seed, lr_schedule=schedule,
                          callbacks=cbs, checkpoint_dir=ckpt_dir, world=distributed.current_world(),
                          evals_per_epoch=rec.evals_per_epoch, **step_tricks(rec))
        state = trainer.fit(resume=resume)
        train_seconds += trainer.wall_seconds
        models.append(state.eval_model or model)
        states.append(state)
        stoppers.append(stopper)
        if state.status == "diverged":
            break

    final_model: nn.Module = models[0] if members == 1 else Ensemble(models)
    return finish_run(rec, splits, device, states, models[0], evaluated=final_model, stopper=stoppers[0],
                      run_dir=run_path, started=started, train_seconds=train_seconds)


def final_splits(splits: Splits) -> dict[str, Any]:
    """The splits a finished run is evaluated on, by the name its result gives them: test, validation, training."""
    return {"test": splits.test_data(), "val": splits.val_data(), "train": splits.train_data()}


def finish_run(rec: Recipe, splits: Splits, device: torch.device, states: list[TrainState], model: nn.Module, *,
               stopper: EarlyStoppingCallback | None, run_dir: Path | None, started: float, train_seconds: float,
               evaluated: nn.Module | None = None,
               evaluations: Mapping[str, dict[str, float] | None] | None = None) -> RunResult:
    """The ``RunResult`` of a trained recipe and its ``result.json`` in ``run_dir`` — assembled here alone, for
    ``train`` and for every member of a population (``tricklab.population``).

    ``states``: the final state of each model trained (an ensemble's members, else one); ``model``: the first
    (its alarms, its parameter count); ``evaluated``: what the test and validation splits are evaluated with
    (an ensemble; default ``model``) — nothing is evaluated once a model diverged; ``stopper``: the first model's
    early stopping (its best epoch, else the history's); ``started``: ``time.perf_counter()`` when the run began;
    ``evaluations``: the final model's ``test``, ``val`` and ``train`` metrics where the caller has them already
    (a population evaluates its members together), else they are evaluated here. Without ``run_dir`` the run is
    named ``NAME-seedSEED`` and nothing is written."""
    first = states[0]
    diverged = next((s for s in states if s.status == "diverged"), None)
    status = "diverged" if diverged else ("stopped_early" if any(s.status == "stopped_early" for s in states)
                                          else "completed")
    test: dict[str, float | None] = {"loss": None, "accuracy": None}
    val: dict[str, float | None] = {"loss": None, "accuracy": None}
    train: dict[str, float | None] = {"loss": None, "accuracy": None}
    if diverged is None:
        if evaluations is None:
            final_model = model if evaluated is None else evaluated
            evaluations = {name: evaluate_split(final_model, data) for name, data in final_splits(splits).items()}
        test = evaluations["test"] or test
        val = evaluations["val"] or val
        train = evaluations["train"] or train
    alarms = core_alarms(rec, splits, model, states)
    best = (stopper.best_epoch if stopper is not None and stopper.best_epoch is not None
                  else best_epoch(first.history, rec.early_stopping.monitor))
    result = RunResult(
        status=status,
        test_accuracy=test["accuracy"], test_loss=test["loss"],
        best_epoch=best,
        epochs=len(first.history), steps=sum(s.step for s in states),
        wall_seconds=time.perf_counter() - started,
        run_dir=str(run_dir) if run_dir is not None else None,
        run_id=run_dir.name if run_dir is not None else f"{rec.name}-seed{rec.seed}",
        alarms=alarms, history=first.history,
        diverged_step=diverged.diverged_step if diverged else None,
        stop_reason="; ".join(s.stop_reason for s in states if s.stop_reason),
        val_accuracy=val["accuracy"], val_loss=val["loss"], train_seconds=train_seconds,
        train_accuracy=train["accuracy"], train_loss=train["loss"],
        num_params=sum(p.numel() for p in model.parameters()),
        data=splits.summary(), device=str(device), recipe=recipe_to_dict(rec),
    )
    if run_dir is not None:
        atomic_write_text(run_dir / RESULT_FILE, json.dumps(result.to_json(), indent=1))
    return result


def core_alarms(rec: Recipe, splits: Splits, model: nn.Module, states: list[TrainState]) -> list[Alarm]:
    """Alarms the core can raise on its own (the doctor adds per-layer ones): divergence and capacity."""
    alarms = [Alarm("nan_loss", s.diverged_step, f"the loss became NaN/Inf at step {s.diverged_step}; training "
                    "stopped and the last good checkpoint was kept. Try a lower learning rate or gradient clipping.")
              for s in states if s.status == "diverged"]
    num_params = sum(p.numel() for p in model.parameters())
    warning = capacity_warning(num_params, splits.n_train)
    if warning:
        alarms.append(Alarm("too_many_parameters", 0, warning))
    return alarms
