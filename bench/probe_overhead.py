"""Benchmark: what the probe costs a training loop, at its default interval and when it probes every step.

    python bench/probe_overhead.py [--runs 5] [--steps 600] [--block 10] [--threads 1]

The same model (the default recipe's CNN, and its MLP variant), the same MNIST-1D batches and AdamW in a bare
PyTorch loop and in the same loop driven through ``Probe`` at ``DEFAULT_EVERY``, at every step, and at a few
other intervals; plus the design the probe rejects (permanent hooks that return at once on non-probe steps),
never probing, to show what "no hooks at all" saves. Each repetition trains every variant from the same
initial weights over the same batches, interleaved in blocks of 10 steps in a rotating order, so the load
of a shared machine hits all of them alike. Times are the training thread's CPU time (one intra-op thread,
so all the loop's work is in it; other processes on the machine do not count) and, beside them, wall time.
Prints a table (median and min–max over the runs, ratio of medians to the bare loop, the machine, torch's
version) and, as the last line, a JSON object with the headline CPU-time ratios (the worse of the two
models) and every ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.diagnose.probes import DEFAULT_EVERY, Probe, activation_family, layer_kind
from tricklab.recipe import load_recipe
from tricklab.train.run import build_recipe_model, prepare_data

OTHER_EVERY = (10, 50)
"""Intervals measured besides ``DEFAULT_EVERY`` and 1, to show where the overhead flattens out."""


def idle_hooks(model: nn.Module) -> list:
    """The rejected design: a hook on every weight layer and activation that returns on a Python bool."""
    armed = False

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if armed:
            raise AssertionError("never armed in this benchmark")

    return [m.register_forward_hook(hook) for m in model.modules()
            if layer_kind(m) is not None or activation_family(m) is not None]


class Loop:
    """One variant's training loop (its own model and AdamW), run block by block so variants can interleave."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, variant: str) -> None:
        self.model = model.train()
        self.lr = lr
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.probe = Probe(model, every=int(variant.split("=")[1])) if variant.startswith("every=") else None
        self.handles = idle_hooks(model) if variant == "idle hooks" else []
        self.step = 0
        self.records = 0

    def run(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
        """(CPU, wall) seconds for forward, backward and AdamW step over ``batches`` (+ the variant's probing)."""
        model, opt, probe = self.model, self.opt, self.probe
        start, start_cpu = time.perf_counter(), time.thread_time()
        for x, y in batches:
            if probe is not None:
                probe.begin(self.step, x)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if probe is not None:
                probe.after_backward()
            opt.step()
            if probe is not None and probe.after_step(loss, lr=self.lr) is not None:
                self.records += 1
            self.step += 1
        return time.thread_time() - start_cpu, time.perf_counter() - start

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        if self.probe is not None:
            assert self.records == -(-self.step // self.probe.every), "a probe step was missed"
            self.probe.close()


def one_run(make_model: Callable[[], nn.Module], batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float,
            weight_decay: float, variants: list[str], block: int) -> dict[str, tuple[float, float]]:
    """Every variant over all ``batches``, interleaved in blocks of ``block`` steps (rotating the order), so
    load changes on a shared machine hit every variant alike; returns (CPU, wall) seconds per variant."""
    loops = {v: Loop(make_model(), lr, weight_decay, v) for v in variants}
    cpu, wall = dict.fromkeys(variants, 0.0), dict.fromkeys(variants, 0.0)
    for b, start in enumerate(range(0, len(batches), block)):
        shift = b % len(variants)
        for v in variants[shift:] + variants[:shift]:
            c, w = loops[v].run(batches[start:start + block])
            cpu[v] += c
            wall[v] += w
    for loop in loops.values():
        loop.close()
    return {v: (cpu[v], wall[v]) for v in variants}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.3f} [{min(values):.3f}–{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--block", type=int, default=10, help="steps per variant before switching to the next")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (1: on a shared 2-core machine, OpenMP spinning swamps small kernels)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    everies = sorted({1, DEFAULT_EVERY, *OTHER_EVERY})
    variants = ["bare", "idle hooks", *[f"every={k}" for k in everies]]

    cpu: dict[str, dict[str, list[float]]] = {}
    wall: dict[str, dict[str, list[float]]] = {}
    for model_name in ("cnn", "mlp"):
        recipe = load_recipe(None, [f"model.name={model_name}"])
        splits = prepare_data(recipe)
        g = torch.Generator().manual_seed(0)
        n, bs = len(splits.x_train), recipe.data.batch_size
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-args.steps * bs // n))])
        batches = [(splits.x_train[idx], splits.y_train[idx])
                   for idx in order[: args.steps * bs].split(bs)]
        o = recipe.optimizer

        def make(recipe=recipe, splits=splits) -> nn.Module:
            return build_recipe_model(recipe, splits, seed=0)

        one_run(make, batches[:40], o.lr, o.weight_decay, variants, 20)  # warm-up: lazy init, allocator
        cpu[model_name], wall[model_name] = {v: [] for v in variants}, {v: [] for v in variants}
        for _ in range(args.runs):
            for v, (c, w) in one_run(make, batches, o.lr, o.weight_decay, variants, args.block).items():
                cpu[model_name][v].append(c)
                wall[model_name][v].append(w)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s), "
          f"torch {torch.__version__}, python {platform.python_version()}; {args.runs} runs of {args.steps} "
          f"AdamW steps (batch 64, MNIST-1D); DEFAULT_EVERY = {DEFAULT_EVERY}")
    print("CPU = the training thread's CPU time (what the loop costs, robust to other processes on a shared "
          "machine); wall = elapsed time. ratio = median / median of the bare loop; paired = median over runs of "
          "(variant / bare in the same run).")
    print(f"{'model':6s} {'variant':12s} {'CPU s: median [min–max]':>26s} {'ms/step':>8s} {'ratio':>6s} {'paired':>6s} "
          f"{'wall s: median [min–max]':>26s} {'ratio':>6s}")
    ratios: dict[str, dict[str, float]] = {}
    paired: dict[str, dict[str, float]] = {}
    wall_ratios: dict[str, dict[str, float]] = {}
    for model_name in cpu:
        bare, bare_wall = statistics.median(cpu[model_name]["bare"]), statistics.median(wall[model_name]["bare"])
        ratios[model_name], paired[model_name], wall_ratios[model_name] = {}, {}, {}
        for v in variants:
            c, w = cpu[model_name][v], wall[model_name][v]
            ratios[model_name][v] = round(statistics.median(c) / bare, 4)
            paired[model_name][v] = round(statistics.median(a / b for a, b in zip(c, cpu[model_name]["bare"])), 4)
            wall_ratios[model_name][v] = round(statistics.median(w) / bare_wall, 4)
            print(f"{model_name:6s} {v:12s} {summary(c):>26s} {1000 * statistics.median(c) / args.steps:8.2f} "
                  f"{ratios[model_name][v]:6.3f} {paired[model_name][v]:6.3f} {summary(w):>26s} "
                  f"{wall_ratios[model_name][v]:6.3f}")
    worst = {v: max(r[v] for r in ratios.values()) for v in variants}
    print(json.dumps({
        "default_every": DEFAULT_EVERY,
        "default_ratio": worst[f"every={DEFAULT_EVERY}"],
        "every_step_ratio": worst["every=1"],
        "idle_hooks_ratio": worst["idle hooks"],
        "cpu_ratios": ratios,
        "paired_cpu_ratios": paired,
        "wall_ratios": wall_ratios,
        "runs": args.runs,
        "steps": args.steps,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
