"""Benchmark: population training (K models stacked into one) against training them one after another.

    python bench/population.py [--runs 5] [--epochs 1] [--ks 1,4,16,64] [--threads 1] [--device cpu|cuda]

MNIST-1D, the default recipe's CNN and its MLP variant (AdamW, one-cycle, batch 64, the clipping recorder, per-
epoch validation and the final test evaluation; no doctor). Sequential: the Trainer set up as
``tricklab train`` sets it up, one member after another (seeds 0, 1, ...). Population: ``train_population``
with K members (seeds 0..K−1). Both from prepared data (no data loading, no run directory) and including model
construction and the final evaluation. Throughput is member-steps per second of the process's CPU time (with
one torch thread all work is in this process and other processes on a shared machine do not count) and of
wall time; speedup = population throughput / sequential throughput (medians over the runs), CPU-based with one
thread; "paired" = the median over runs of each run's own ratio (a run trains the sequential members and then
the populations back to back, so a drift in the machine's speed between runs cancels). On more cores
both scale the same way by running one process per core (the local and population executors do exactly that),
so the one-thread speedup is the speedup on N cores with N workers. ``--threads 2`` measures the other reading
of "on 2 cores": one process using both cores, members one after another against one population; its speedup
is wall-based (the CPU time of two threads counts their waiting on each other). ``--device cuda`` runs the same
comparison on a GPU (data, models and populations there; wall time after ``torch.cuda.synchronize()``; the
process's CPU time says nothing about GPU work).

A second table is the design check: one training step (forward, backward, AdamW) of 16 members as
``torch.func.vmap`` over ``functional_call`` of stacked parameters (``stack_module_state``), as tricklab's
``StackedNet`` (grouped channels-last convolutions, batched matrix products, fused per-member AdamW), and as 16
single-model steps.

Prints the tables (median and min–max over the runs, the machine, torch's version, the load) and, as its last
line, a JSON object: ``speedup_k16`` (the smaller of the two models'; target >= 4), per-model speedups per K,
and ``saturation_k`` (the smallest K within 10% of the best throughput).
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
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tricklab.population.engine import PopulationMember, train_population
from tricklab.population.stacked import StackedNet
from tricklab.population.stacked_optim import StackedOptimizer
from tricklab.recipe import load_recipe
from tricklab.train.run import _trick_callbacks, build_recipe_model, build_recipe_optimizer, finish_run, prepare_data
from tricklab.train.trainer import Trainer, batches_per_epoch
from tricklab.tricks.schedules import build_schedule

TARGET = 4.0        # the bench's first target (session 2); the bound analysis in bench/README.md puts it out of reach
TARGET_AT_EQUAL_RESOURCES = 2.5   # issue 17's: speedup_k16 for both models, 1 thread


def sequential(recipe, splits, seed: int) -> None:
    """One member as ``tricklab.train.run._execute`` trains it (no run directory, no doctor)."""
    rec = recipe.model_copy(update={"seed": seed})
    model = build_recipe_model(rec, splits, seed)
    optimizer = build_recipe_optimizer(rec, model)
    spe = batches_per_epoch(len(splits.x_train), rec.data.batch_size)
    schedule = build_schedule("one_cycle", lr=rec.optimizer.lr, total_steps=rec.epochs * spe, steps_per_epoch=spe)
    tricks, _ = _trick_callbacks(rec)
    started = time.perf_counter()
    trainer = Trainer(model, optimizer, (splits.x_train, splits.y_train), (splits.x_val, splits.y_val),
                      epochs=rec.epochs, batch_size=rec.data.batch_size, seed=seed, lr_schedule=schedule,
                      callbacks=tricks)
    state = trainer.fit()
    finish_run(rec, splits, splits.x_train.device, [state], model, stopper=None, run_dir=None, started=started,
               train_seconds=time.perf_counter() - started)


def population(recipe, splits, k: int) -> None:
    train_population([PopulationMember(recipe.model_copy(update={"seed": s})) for s in range(k)], splits=splits)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    _sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    _sync()
    return time.process_time() - start_cpu, time.perf_counter() - start


def step_designs(recipe, splits, k: int, repeats: int, clock: str = "cpu") -> dict[str, float]:
    """ms (process CPU or wall, ``clock``) per member-step of one AdamW step of ``k`` members: vmap, StackedNet,
    one model at a time."""
    from torch.func import functional_call, stack_module_state, vmap

    models = [build_recipe_model(recipe, splits, s) for s in range(k)]
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(splits.x_train), (k, recipe.data.batch_size), generator=gen).to(splits.x_train.device)
    x, y = splits.x_train[idx], splits.y_train[idx]
    o = recipe.optimizer

    params, buffers = stack_module_state(copy.deepcopy(models))
    base = copy.deepcopy(models[0])
    vmapped = vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), in_dims=(0, 0, 0), randomness="different")
    vopt = torch.optim.AdamW(list(params.values()), lr=o.lr, weight_decay=o.weight_decay)

    def vmap_step() -> None:
        out = vmapped(params, buffers, x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").view(k, -1).mean(1)
        vopt.zero_grad(set_to_none=True)
        loss.sum().backward()
        vopt.step()

    net = StackedNet(models[0], copy.deepcopy(models), splits.input_shape, [0.0] * k, [None] * k)
    sopt = StackedOptimizer(o.name, list(net.params.values()), [n in net.decayed for n in net.params],
                            weight_decay=[o.weight_decay] * k,
                            decoupled=[True] * k, momentum=[o.momentum] * k, betas=[o.betas] * k, eps=[o.eps] * k)

    def stacked_step() -> None:
        out = net.forward(x, training=True)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").view(k, -1).mean(1)
        net.zero_grad()
        loss.sum().backward()
        sopt.step([o.lr] * k)

    singles = [copy.deepcopy(m) for m in models]
    sopts = [torch.optim.AdamW(m.parameters(), lr=o.lr, weight_decay=o.weight_decay) for m in singles]

    def single_steps() -> None:
        for i, (m, opt) in enumerate(zip(singles, sopts)):
            loss = F.cross_entropy(m(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    out = {}
    for name, fn in (("vmap (torch.func)", vmap_step), ("StackedNet", stacked_step), ("one at a time", single_steps)):
        for _ in range(3):
            fn()
        cpu = []
        for _ in range(repeats):
            cpu_s, wall_s = timed(lambda fn=fn: [fn() for _ in range(10)])
            cpu.append((cpu_s if clock == "cpu" else wall_s) / 10 / k * 1e3)
        out[name] = statistics.median(cpu)
    return out


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()


def summary(values: list[float], fmt: str = "7.0f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt.lstrip('0123456789')}}–{max(values):{fmt.lstrip('0123456789')}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--ks", default="1,4,16,64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    steps = args.epochs * batches_per_epoch(3600, 64)
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    designs = {}
    for name in ("mlp", "cnn"):
        recipe = load_recipe(None, [f"model.name={name}", f"epochs={args.epochs}", f"device={args.device}"])
        splits = prepare_data(recipe)
        rows: dict[str, dict[str, list[float]]] = {"sequential": {"cpu": [], "wall": []}}
        rows.update({f"K={k}": {"cpu": [], "wall": []} for k in ks})
        sequential(recipe, splits, 0)
        population(recipe, splits, 2)                      # warm-up
        for r in range(args.runs):
            cpu, wall = timed(functools.partial(sequential, recipe, splits, r))
            rows["sequential"]["cpu"].append(steps / cpu)
            rows["sequential"]["wall"].append(steps / wall)
            for k in ks:
                cpu, wall = timed(functools.partial(population, recipe, splits, k))
                rows[f"K={k}"]["cpu"].append(k * steps / cpu)
                rows[f"K={k}"]["wall"].append(k * steps / wall)
        table[name] = rows
        designs[name] = step_designs(recipe, splits, 16, args.runs, "cpu" if args.device == "cpu" else "wall")

    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"torch {torch.__version__}, python {platform.python_version()}; device {_device_name(args.device)}; "
          f"{args.threads} torch thread(s); "
          f"{args.runs} runs; {args.epochs} epoch(s) = {steps} steps per member; MNIST-1D, batch 64, AdamW")
    # CPU time of 2 threads counts their waiting too; on a GPU the work is not the process's CPU time
    basis = "cpu" if args.threads == 1 and args.device == "cpu" else "wall"
    print(f"{'model':5s} {'trained as':12s} {'member-steps/s (CPU)':>26s} {'speedup (' + basis + ')':>14s} "
          f"{'paired':>7s} {'member-steps/s (wall)':>26s}")
    speedups: dict[str, dict[int, float]] = {}
    paired: dict[str, dict[int, float]] = {}
    saturation: dict[str, int] = {}
    for name, rows in table.items():
        base = statistics.median(rows["sequential"][basis])
        speedups[name], paired[name] = {}, {}
        for label, t in rows.items():
            s = statistics.median(t[basis]) / base
            # the same run's sequential members as the baseline: the machine's speed drifts between runs
            pair = statistics.median(p / q for p, q in zip(t[basis], rows["sequential"][basis]))
            if label != "sequential":
                speedups[name][int(label[2:])] = s
                paired[name][int(label[2:])] = pair
            print(f"{name:5s} {label:12s} {summary(t['cpu']):>26s} {s:14.2f} {pair:7.2f} {summary(t['wall']):>26s}")
        best = max(speedups[name].values())
        saturation[name] = min(k for k, s in speedups[name].items() if s >= 0.9 * best)
    print(f"\none AdamW step of 16 members, {'CPU' if args.device == 'cpu' else 'wall'} ms per member-step (median of "
          f"{args.runs} × 10 steps):")
    for name, d in designs.items():
        print(f"{name:5s} " + "   ".join(f"{label} {ms:.2f}" for label, ms in d.items()))
    k16 = {name: s.get(16) for name, s in speedups.items()}
    headline = min(v for v in k16.values() if v is not None) if all(k16.values()) else None
    print(json.dumps({
        "speedup_k16": headline, "target": TARGET, "meets_target": headline is not None and headline >= TARGET,
        "target_issue17": TARGET_AT_EQUAL_RESOURCES,
        "meets_target_issue17": headline is not None and headline >= TARGET_AT_EQUAL_RESOURCES,
        "speedup_k16_mlp": k16["mlp"], "speedup_k16_cnn": k16["cnn"],
        "speedups": {n: {str(k): round(v, 3) for k, v in s.items()} for n, s in speedups.items()},
        "paired_speedups": {n: {str(k): round(v, 3) for k, v in s.items()} for n, s in paired.items()},
        "saturation_k": saturation,
        "sequential_member_steps_per_s": {n: statistics.median(r["sequential"]["cpu"]) for n, r in table.items()},
        "step_ms_per_member_k16": designs, "speedup_basis": basis, "device": args.device, "threads": args.threads, "runs": args.runs,
        "load": load[0],
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
