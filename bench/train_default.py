"""Benchmark: `tricklab train` on the built-in default recipe (and its MLP variant) against the 60 s target,
with a bare PyTorch loop over the same model, data and number of steps as the baseline in the same run.

    python bench/train_default.py [--runs 5]

Prints a table (median and min–max over the runs, the machine, torch's version) and, as its last line, a
JSON object with the headline figures. Wall time is the whole command as a user sees it (process start,
imports, data from the cache, training, evaluation, writing the run directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 60.0


def cli_run(overrides: list[str], workdir: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "tricklab", "train", "--json", "--quiet", "--store", "none", "--runs-dir", workdir]
    for o in overrides:
        cmd += ["--set", o]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    elapsed = time.perf_counter() - start
    return elapsed, json.loads(out.stdout.strip().splitlines()[-1])


def bare_loop_seconds(model_name: str) -> float:
    """The same model, data and number of optimizer steps in a hand-written loop (AdamW, constant LR)."""
    import torch
    import torch.nn.functional as F

    from tricklab.recipe import load_recipe
    from tricklab.train.run import build_recipe_model, prepare_data

    recipe = load_recipe(None, [f"model.name={model_name}"])
    splits = prepare_data(recipe)
    model = build_recipe_model(recipe, splits, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.optimizer.lr, weight_decay=recipe.optimizer.weight_decay)
    x, y, bs = splits.x_train, splits.y_train, recipe.data.batch_size
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        model.train()
        for i in range(0, len(x) - 1, bs):
            idx = order[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            model(splits.x_val).argmax(1)
    return time.perf_counter() - start


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f}  [{min(values):.2f}–{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import torch

    rows = {}
    with tempfile.TemporaryDirectory() as work:
        cli_run(["epochs=1"], work)  # warm the MNIST-1D cache so every timed run sees the same start
        for label, overrides in (("default (cnn)", []), ("--set model.name=mlp", ["model.name=mlp"])):
            walls, train_s, accs = [], [], []
            for seed in range(args.runs):
                wall, result = cli_run(overrides + [f"seed={seed}"], work)
                walls.append(wall)
                train_s.append(result["train_seconds"])
                accs.append(result["test_accuracy"])
            bare = [bare_loop_seconds("mlp" if overrides else "cnn") for _ in range(args.runs)]
            rows[label] = {"wall": walls, "train": train_s, "acc": accs, "bare": bare}

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"python {platform.python_version()}; {args.runs} runs (seeds 0..{args.runs - 1}); target < {TARGET_SECONDS:.0f} s")
    print(f"{'recipe':24s} {'command wall s':>24s} {'training s':>24s} {'bare loop s':>24s} {'test accuracy':>28s}")
    for label, r in rows.items():
        print(f"{label:24s} {summary(r['wall']):>24s} {summary(r['train']):>24s} {summary(r['bare']):>24s} "
              f"{statistics.mean(r['acc']):.4f} ± {statistics.stdev(r['acc']) if len(r['acc']) > 1 else 0:.4f}")
    d, m = rows["default (cnn)"], rows["--set model.name=mlp"]
    print(json.dumps({
        "default_wall_median_s": statistics.median(d["wall"]),
        "default_accuracy_mean": statistics.mean(d["acc"]),
        "default_accuracy_min": min(d["acc"]),
        "mlp_wall_median_s": statistics.median(m["wall"]),
        "mlp_accuracy_mean": statistics.mean(m["acc"]),
        "mlp_accuracy_min": min(m["acc"]),
        "trainer_vs_bare_ratio_cnn": statistics.median(d["train"]) / statistics.median(d["bare"]),
        "target_s": TARGET_SECONDS,
        "meets_target": max(d["wall"]) < TARGET_SECONDS and min(d["acc"]) >= 0.95 and min(m["acc"]) >= 0.65,
    }))


if __name__ == "__main__":
    main()
