"""Benchmark: the MNIST-1D speedrun recipe against the MNIST-1D paper's protocol, in one run.

    python bench/speedrun.py [--seeds 5] [--threads N] [--baseline-seeds 5] [--ablate]

Claim (issue 19): ``examples/mnist1d-speedrun.yaml`` reaches >= 0.985 mean test accuracy over 5 seeds with <= 3 s
of training wall time per run on a 2-core CPU. Each seed is one ``tricklab.train.train`` run (no doctor);
"training wall time" is the run's ``train_seconds`` (the Trainer's loop: steps and any validation; data loading,
model construction and the final test evaluation are not in it), beside it the process's CPU time.

The baseline is the MNIST-1D paper's protocol (Greydanus 2020, arXiv:2011.14439, its CNN baseline): three
convolutions of 25 channels (kernel 5 stride 2, then kernel 3 stride 2 twice, ReLU, no normalisation), a
linear layer on the 125 flattened features, PyTorch's default init, Adam at 1e-2 without weight decay and
without a schedule, batch 100, 6000 steps; the paper reports about 94%. It runs here through the same
``train`` on the same standardised data: the 4000 training examples (no validation split, as in the paper and the
recipe) and the 1000 test examples, as a user model.

``--ablate``: each trick of the recipe left out in turn (``ABLATIONS``: the recipe with one key set back to the
value that switches the trick off), same seeds, and the change in mean accuracy and seconds against the recipe.

Prints a table (median and min–max over the seeds, the machine, torch's version, the load) and, as its last
line, a JSON object with ``mean_accuracy``, ``seconds_per_run`` (median), ``baseline_accuracy`` and
``baseline_seconds`` (median per run), and with ``--ablate`` ``ablations`` (per trick: mean accuracy, seconds).
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
RECIPE = ROOT / "examples" / "mnist1d-speedrun.yaml"
TARGET_ACCURACY, TARGET_SECONDS = 0.985, 3.0
TRAIN_EXAMPLES = 4000
ABLATIONS: dict[str, list[str]] = {
    "GELU (ReLU instead)": ["model.activation=relu"],
    "batch norm": ["model.norm=none"],
    "He init (PyTorch's default)": ["init.scheme=default"],
    "weight decay": ["optimizer.weight_decay=0"],
    "one-cycle (constant LR)": ["schedule.name=constant"],
    "one-cycle (constant LR at 1/5 of the peak)": ["schedule.name=constant", "optimizer.lr=0.003"],
    "input standardisation": ["data.scale=none"],
    "the validation 10 % used for training": ["data.val_fraction=0.1"],
    "the 6th epoch": ["epochs=5"],
}
"""Each trick of the recipe and the override that leaves it out (the rest of the recipe unchanged)."""
ADDITIONS: dict[str, list[str]] = {
    "+ label smoothing 0.1": ["loss.label_smoothing=0.1"],
    "+ shift/noise augmentation": ["data.augment=shift_noise"],
    "+ mixup α = 0.2": ["data.mixup=0.2"],
    "+ bf16 autocast": ["precision=bf16"],
}
"""Issue 19's new tricks, each added to the recipe: whether they earn a place in it at this budget."""
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

    epochs = -(-PAPER_STEPS // batches_per_epoch(TRAIN_EXAMPLES, PAPER_BATCH))   # 40 steps per epoch: 150 epochs
    return ["name=mnist1d-paper-cnn", "model.python=speedrun:paper_cnn", "init.scheme=default", "data.val_fraction=0",
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


def measure(recipe: str | None, overrides: list[str], seeds: int, work: str) -> dict[str, list[float]]:
    """Accuracy, training seconds, CPU seconds and steps of ``seeds`` runs (seeds 0..n−1)."""
    r: dict[str, list[float]] = {"acc": [], "train_s": [], "cpu_s": [], "steps": []}
    for seed in range(seeds):
        for key, value in zip(r, run(recipe, overrides + [f"seed={seed}"], work)):
            r[key].append(value)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--baseline-seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ablate", action="store_true", help="also leave out each trick, and add each new one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))   # model.python: "speedrun:paper_cnn"
    variants: list[tuple[str, str | None, list[str], int]] = [("speedrun", str(RECIPE), [], args.seeds)]
    if args.ablate:
        variants += [(f"− {name}", str(RECIPE), ov, args.seeds) for name, ov in ABLATIONS.items()]
        variants += [(name, str(RECIPE), ov, args.seeds) for name, ov in ADDITIONS.items()]
    variants.append(("paper protocol", None, baseline_overrides(), args.baseline_seeds))
    rows: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as work:
        run(str(RECIPE), ["epochs=1"], work)                      # warm-up: data cache, allocator, imports
        for label, recipe, overrides, seeds in variants:
            rows[label] = measure(recipe, overrides, seeds, work)
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"torch {torch.__version__}, python {platform.python_version()}; {args.threads} torch thread(s); "
          f"MNIST-1D ({TRAIN_EXAMPLES} train, 1000 test), seeds 0..n−1")
    s = rows["speedrun"]
    mean_acc, seconds = statistics.mean(s["acc"]), statistics.median(s["train_s"])
    width = max(len(label) for label in rows)
    print(f"{'recipe':{width}s} {'runs':>4s} {'steps':>6s} {'test accuracy mean (min–max)':>30s} {'Δ':>8s} "
          f"{'training wall s median [min–max]':>34s} {'CPU s median [min–max]':>26s}")
    for label, r in rows.items():
        acc = f"{statistics.mean(r['acc']):.4f} ({min(r['acc']):.3f}–{max(r['acc']):.3f})"
        delta = f"{statistics.mean(r['acc']) - mean_acc:+.4f}" if label != "speedrun" else ""
        print(f"{label:{width}s} {len(r['acc']):4d} {int(r['steps'][0]):6d} {acc:>30s} {delta:>8s} "
              f"{summary(r['train_s']):>34s} {summary(r['cpu_s']):>26s}")
    b = rows["paper protocol"]
    out = {
        "mean_accuracy": mean_acc, "seconds_per_run": seconds,
        "baseline_accuracy": statistics.mean(b["acc"]), "baseline_seconds": statistics.median(b["train_s"]),
        "max_seconds_per_run": max(s["train_s"]), "min_accuracy": min(s["acc"]),
        "meets_target": mean_acc >= TARGET_ACCURACY and seconds <= TARGET_SECONDS,
        "target_accuracy": TARGET_ACCURACY, "target_seconds": TARGET_SECONDS, "threads": args.threads,
        "load": load[0], "torch": torch.__version__,
    }
    if args.ablate:
        out["ablations"] = {label: {"mean_accuracy": round(statistics.mean(r["acc"]), 4),
                                    "seconds_per_run": round(statistics.median(r["train_s"]), 3)}
                            for label, r in rows.items() if label not in ("speedrun", "paper protocol")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
