"""Benchmark: the MNIST-1D speedrun recipe against the MNIST-1D paper's protocol, in one run.

    python bench/speedrun.py [--seeds 5] [--threads N] [--baseline-seeds 5]

Claim: ``recipes/mnist1d-speedrun.yaml`` reaches >= 0.975 mean test accuracy over 5 seeds with <= 3 s of
training wall time per run on a 2-core CPU. Each seed is one ``tricklab.train.train`` run (no doctor);
"training wall time" is the run's ``train_seconds`` (the Trainer's loop: steps and per-epoch validation; data
loading, model construction and the final test evaluation are not in it), beside it the process's CPU time.

The baseline is the MNIST-1D paper's protocol (Greydanus 2020, arXiv:2011.14439, its CNN baseline): three
convolutions of 25 channels (kernel 5 stride 2, then kernel 3 stride 2 twice, ReLU, no normalisation), a
linear layer on the 125 flattened features, PyTorch's default init, Adam at 1e-2 without weight decay and
without a schedule, batch 100, 6000 steps; the paper reports about 94%. It runs here through the same
``train`` on the same standardised split (3600 train, 400 validation, 1000 test), as a user model.

Prints a table (median and min–max over the seeds, the machine, torch's version, the load) and, as its last
line, a JSON object with ``mean_accuracy``, ``seconds_per_run`` (median), ``baseline_accuracy`` and
``baseline_seconds`` (median per run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "mnist1d-speedrun.yaml"
TARGET_ACCURACY, TARGET_SECONDS = 0.975, 3.0
PAPER_STEPS, PAPER_BATCH = 6000, 100


class PaperCNN(nn.Module):
    """The MNIST-1D paper's CNN baseline: conv(1→25, k5, s2) → conv(25→25, k3, s2) → conv(25→25, k3, s2), ReLU
    after each, flatten, linear. Length 40 → 19 → 10 → 5 positions, so the linear layer sees 25·5 = 125."""

    def __init__(self, length: int, num_classes: int, channels: int = 25) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        positions = length
        for kernel in (5, 3, 3):
            positions = (positions + 2 - kernel) // 2 + 1
        self.linear = nn.Linear(channels * positions, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, -1)
        h = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(h))))))
        return self.linear(h.flatten(1))


def paper_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The factory ``model.python: "speedrun:paper_cnn"`` names."""
    length = 1
    for d in input_shape:
        length *= d
    return PaperCNN(length, num_classes)


def baseline_overrides() -> list[str]:
    from tricklab.train.trainer import batches_per_epoch

    epochs = -(-PAPER_STEPS // batches_per_epoch(3600, PAPER_BATCH))   # 36 steps per epoch: 167 epochs, 6012 steps
    return ["name=mnist1d-paper-cnn", "model.python=speedrun:paper_cnn", "init.scheme=default",
            "optimizer.name=adam", "optimizer.lr=0.01", "optimizer.weight_decay=0", "optimizer.decay=l2",
            "schedule.name=constant", f"data.batch_size={PAPER_BATCH}", f"epochs={epochs}"]


def run(recipe: str | None, overrides: list[str], workdir: str) -> tuple[float, float, float, int]:
    """(test accuracy, training wall s, training-process CPU s, steps) of one ``train`` run."""
    from tricklab.train import train

    cpu = time.process_time()
    result = train(recipe, overrides=overrides, run_dir=tempfile.mkdtemp(dir=workdir))
    return result.test_accuracy, result.train_seconds, time.process_time() - cpu, result.steps


def summary(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--baseline-seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))   # model.python: "speedrun:paper_cnn"
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as work:
        run(str(RECIPE), ["epochs=1"], work)                      # warm-up: data cache, allocator, imports
        for label, recipe, overrides, seeds in (("speedrun", str(RECIPE), [], args.seeds),
                                                 ("paper protocol", None, baseline_overrides(), args.baseline_seeds)):
            r: dict[str, list[float]] = {"acc": [], "train_s": [], "cpu_s": [], "steps": []}
            for seed in range(seeds):
                acc, train_s, cpu_s, steps = run(recipe, overrides + [f"seed={seed}"], work)
                for key, value in zip(r, (acc, train_s, cpu_s, steps)):
                    r[key].append(value)
            rows[label] = r
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"torch {torch.__version__}, python {platform.python_version()}; {args.threads} torch thread(s); "
          f"MNIST-1D (3600 train, 1000 test), seeds 0..n−1")
    print(f"{'recipe':16s} {'runs':>4s} {'steps':>6s} {'test accuracy mean (min–max)':>30s} "
          f"{'training wall s median [min–max]':>34s} {'CPU s median [min–max]':>26s}")
    for label, r in rows.items():
        acc = f"{statistics.mean(r['acc']):.4f} ({min(r['acc']):.3f}–{max(r['acc']):.3f})"
        print(f"{label:16s} {len(r['acc']):4d} {int(r['steps'][0]):6d} {acc:>30s} {summary(r['train_s']):>34s} "
              f"{summary(r['cpu_s']):>26s}")
    s, b = rows["speedrun"], rows["paper protocol"]
    mean_acc, seconds = statistics.mean(s["acc"]), statistics.median(s["train_s"])
    print(json.dumps({
        "mean_accuracy": mean_acc, "seconds_per_run": seconds,
        "baseline_accuracy": statistics.mean(b["acc"]), "baseline_seconds": statistics.median(b["train_s"]),
        "max_seconds_per_run": max(s["train_s"]), "min_accuracy": min(s["acc"]),
        "meets_target": mean_acc >= TARGET_ACCURACY and seconds <= TARGET_SECONDS,
        "target_accuracy": TARGET_ACCURACY, "target_seconds": TARGET_SECONDS, "threads": args.threads,
        "load": load[0], "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
