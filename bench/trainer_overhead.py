"""Benchmark: what tricklab's Trainer costs over a bare PyTorch loop (and what PyTorch Lightning costs).

    python bench/trainer_overhead.py [--runs 5] [--epochs 3] [--threads 1]

The same model (the default recipe's CNN and its MLP variant, MNIST-1D), the same initial weights, the same
AdamW, the same batches (``data_order_generator``, ``batches_per_epoch``) and the same per-epoch validation in:

- ``bare``: a hand-written loop (index batches of device tensors, forward, loss, backward, step);
- ``trainer``: ``tricklab.train.Trainer`` with no callbacks (its own per-step work: the device-side loss sum,
  correct count and non-finite check, read once per 25 steps and per epoch);
- ``trainer+tricks``: the Trainer as ``tricklab train`` sets it up for the recipe (the one-cycle schedule
  written into the optimizer every step, the clipping callback's per-step gradient norm);
- ``lightning``: a ``LightningModule`` with the same model and optimizer, fed the usual way (a ``DataLoader``
  over a ``TensorDataset``, batch 64, shuffled), logging the epoch's losses — when lightning is installed.

Each repetition runs every variant once, in a rotating order, so a shared machine's load hits all alike.
Times are the training thread's CPU time (``--threads 1``: all the work is in that thread; other processes do
not count) and wall time. Prints a table (median and min–max over the runs, ratio of medians to ``bare``, the
machine, torch's version) and, as its last line, a JSON object: ``ratio`` is the worse of the two models'
trainer/bare CPU-time ratios (target <= 1.05).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.recipe import load_recipe
from tricklab.train.run import _trick_callbacks, build_recipe_model, prepare_data
from tricklab.train.trainer import Trainer, batches_per_epoch, data_order_generator
from tricklab.tricks.schedules import build_schedule

TARGET = 1.05


def bare_loop(model: nn.Module, opt: torch.optim.Optimizer, splits, epochs: int, batch_size: int) -> None:
    x, y = splits.x_train, splits.y_train
    steps = batches_per_epoch(len(x), batch_size)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=data_order_generator(0, epoch))
        for b in range(steps):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(splits.x_val)
            float(F.cross_entropy(out, splits.y_val)), float((out.argmax(1) == splits.y_val).float().mean())


def trainer_loop(model: nn.Module, opt: torch.optim.Optimizer, splits, epochs: int, batch_size: int,
                 tricks: bool, recipe) -> None:
    schedule, callbacks = None, []
    if tricks:
        spe = batches_per_epoch(len(splits.x_train), batch_size)
        schedule = build_schedule("one_cycle", lr=recipe.optimizer.lr, total_steps=epochs * spe, steps_per_epoch=spe)
        callbacks, _ = _trick_callbacks(recipe)
    Trainer(model, opt, (splits.x_train, splits.y_train), (splits.x_val, splits.y_val), epochs=epochs,
            batch_size=batch_size, seed=0, lr_schedule=schedule, callbacks=callbacks).fit()


def lightning_loop(model: nn.Module, opt_factory: Callable[[nn.Module], torch.optim.Optimizer], splits, epochs: int,
                   batch_size: int) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            out = self.model(x)
            self.log("val_loss", F.cross_entropy(out, y))
            self.log("val_accuracy", (out.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return opt_factory(self.model)

    train = DataLoader(TensorDataset(splits.x_train, splits.y_train), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(splits.x_val, splits.y_val), batch_size=len(splits.x_val))
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Module(), train, val)


def adamw(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def run_variant(variant: str, model: nn.Module, make_opt: Callable[[nn.Module], torch.optim.Optimizer], splits,
                epochs: int, batch_size: int, recipe) -> tuple[float, float]:
    """(CPU, wall) seconds of one training run of ``variant``."""
    if variant == "lightning":
        return timed(functools.partial(lightning_loop, model, make_opt, splits, epochs, batch_size))
    opt = make_opt(model)
    if variant == "bare":
        return timed(functools.partial(bare_loop, model, opt, splits, epochs, batch_size))
    return timed(functools.partial(trainer_loop, model, opt, splits, epochs, batch_size, variant != "trainer", recipe))


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.thread_time() - start_cpu, time.perf_counter() - start


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} [{min(values):.3f}–{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import lightning  # noqa: F401

        has_lightning = True
        import logging

        logging.getLogger("lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    except ImportError:
        has_lightning = False
    variants = ["bare", "trainer", "trainer+tricks"] + (["lightning"] if has_lightning else [])
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in ("mlp", "cnn"):
        recipe = load_recipe(None, [f"model.name={name}"])
        splits = prepare_data(recipe)
        bs, o = recipe.data.batch_size, recipe.optimizer
        initial = build_recipe_model(recipe, splits, seed=0)

        make_opt = functools.partial(adamw, lr=o.lr, weight_decay=o.weight_decay)
        runs = {v: {"cpu": [], "wall": []} for v in variants}
        for r in range(args.runs + 1):                       # run 0 warms up (allocator, lightning imports)
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                model = copy.deepcopy(initial)
                cpu, wall = run_variant(v, model, make_opt, splits, args.epochs, bs, recipe)
                if r:
                    runs[v]["cpu"].append(cpu)
                    runs[v]["wall"].append(wall)
        results[name] = runs

    load = os.getloadavg()
    steps = args.epochs * batches_per_epoch(3600, 64)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"torch {torch.__version__}, python {platform.python_version()}; {args.threads} torch thread(s); "
          f"{args.runs} runs of {args.epochs} epochs ({steps} AdamW steps, batch 64, MNIST-1D) + validation")
    print(f"{'model':6s} {'variant':16s} {'CPU s median [min–max]':>28s} {'ratio':>6s} {'wall s median [min–max]':>28s} "
          f"{'ratio':>6s}")
    ratios: dict[str, float] = {}
    for name, runs in results.items():
        base_cpu, base_wall = statistics.median(runs["bare"]["cpu"]), statistics.median(runs["bare"]["wall"])
        for v, t in runs.items():
            rc, rw = statistics.median(t["cpu"]) / base_cpu, statistics.median(t["wall"]) / base_wall
            ratios[f"{v}_{name}"] = rc
            ratios[f"{v}_{name}_of_minima"] = min(t["cpu"]) / min(runs["bare"]["cpu"])
            print(f"{name:6s} {v:16s} {summary(t['cpu']):>28s} {rc:6.3f} {summary(t['wall']):>28s} {rw:6.3f}")
    print("ratio of the minimum CPU times (the least disturbed runs): " + ", ".join(
        f"{name} trainer {ratios[f'trainer_{name}_of_minima']:.3f}" for name in results))
    paired = {name: [t / b for t, b in zip(runs["trainer"]["cpu"], runs["bare"]["cpu"])]
              for name, runs in results.items()}
    print("paired ratios trainer / bare within each repetition (run back to back), median [min–max]: " + ", ".join(
        f"{name} {statistics.median(p):.3f} [{min(p):.3f}–{max(p):.3f}]" for name, p in paired.items()))
    headline = max(ratios["trainer_mlp"], ratios["trainer_cnn"])
    out = {"ratio": headline, "target": TARGET, "meets_target": headline <= TARGET,
           "ratio_mlp": ratios["trainer_mlp"], "ratio_cnn": ratios["trainer_cnn"],
           "ratio_of_minima_mlp": ratios["trainer_mlp_of_minima"], "ratio_of_minima_cnn": ratios["trainer_cnn_of_minima"],
           "paired_ratio_mlp": statistics.median(paired["mlp"]), "paired_ratio_cnn": statistics.median(paired["cnn"]),
           "tricks_ratio_mlp": ratios["trainer+tricks_mlp"], "tricks_ratio_cnn": ratios["trainer+tricks_cnn"],
           "lightning_ratio_mlp": ratios.get("lightning_mlp"), "lightning_ratio_cnn": ratios.get("lightning_cnn"),
           "runs": args.runs, "threads": args.threads, "load": load[0], "torch": torch.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
