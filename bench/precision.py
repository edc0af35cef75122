"""Benchmark: accuracy and speed of bf16 mixed precision against fp32 on the CPU (issue 19 item 2).

    python bench/precision.py [--seeds 3] [--threads 2] [--set KEY=VALUE ...]

Trains the built-in default recipe (MNIST-1D, the 4-layer CNN, 15 epochs; ``--set`` changes it, e.g.
``--set model.name=mlp``) once per seed in each precision, on the CPU, through ``tricklab.train.train`` — the
same path as ``tricklab train --set precision=bf16``. The precisions alternate within each seed (fp32, bf16, then
bf16, fp32 for the next seed), so a shared machine's load hits both alike. fp16 is not measured: it trains on
CUDA only (``tricklab.tricks.precision``).

Reports per precision the test accuracy (mean and each seed), the training time (``train_seconds``: the
Trainer's epochs, validation included; median over seeds) and the ratio bf16/fp32 of the medians; the last line
is a JSON object. Done means (issue 19): bf16 within 1 point of fp32's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile

import torch

from tricklab.train import train

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            order = PRECISIONS if seed % 2 == 0 else PRECISIONS[::-1]
            for precision in order:
                r = train(None, overrides=[*args.overrides, f"seed={seed}", f"precision={precision}", "device=cpu"],
                          run_dir=os.path.join(tmp, f"{precision}-{seed}"))
                results[precision].append({"seed": seed, "test_accuracy": r.test_accuracy,
                                           "train_seconds": r.train_seconds, "status": r.status})
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"torch {torch.__version__}, {args.threads} torch thread(s); {args.seeds} seed(s), recipe: default"
          + (f" + {' '.join(args.overrides)}" if args.overrides else ""))
    print(f"{'precision':10} {'test acc mean':>13}  {'per seed':30} {'train s median':>15}")
    summary = {}
    for precision, rows in results.items():
        accs = [row["test_accuracy"] for row in rows]
        secs = statistics.median(row["train_seconds"] for row in rows)
        summary[precision] = {"accuracy_mean": statistics.fmean(accs), "accuracies": accs, "train_seconds": secs}
        print(f"{precision:10} {statistics.fmean(accs):13.4f}  {' '.join(f'{a:.4f}' for a in accs):30} {secs:15.2f}")
    gap = summary["fp32"]["accuracy_mean"] - summary["bf16"]["accuracy_mean"]
    ratio = summary["bf16"]["train_seconds"] / summary["fp32"]["train_seconds"]
    print(f"bf16 − fp32 accuracy: {-gap:+.4f} (target: within 0.01); bf16/fp32 training time: {ratio:.2f}")
    print(json.dumps({"fp32": summary["fp32"], "bf16": summary["bf16"], "accuracy_gap": gap, "time_ratio": ratio,
                      "within_one_point": abs(gap) <= 0.01, "threads": args.threads, "load": load[0],
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
