"""Benchmark: the dropout study end to end, sequential (local executor) against population, in one run.

    python bench/population_study.py [--runs 1] [--study examples/dropout.yaml] [--workers 2]

Each run executes the same command twice, as a user would, into fresh stores:
``tricklab study STUDY --executor local|population --workers W --json`` (report included). The local executor
trains one trial per worker process; the population executor trains each worker's share of the trials as one
stacked model. Prints the wall times (median and min–max over the runs), each arm's mean test accuracy under
both executors with the sequential run's 95% CI, the machine and torch's version, and, as its last line, a JSON
object: ``speedup`` (sequential / population wall time; target >= 3), ``cpu_speedup`` (the same for the CPU time
of the commands and their workers: what a busy shared machine does not distort), ``arms_within_ci`` (every
population arm mean inside the sequential run's 95% CI) and per arm the paired difference population −
sequential over the same seeds with its 95% CI (the members' float32 trajectories drift apart from the
sequential ones within a few dozen steps, so each executor's seeds are in effect fresh samples).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 3.0


def study(path: Path, executor: str, workers: int, workdir: Path) -> tuple[float, float, dict, dict]:
    """(wall s, CPU s of the command and its workers, the --json object, {(arm, seed): metric value})."""
    from tricklab.store import Store

    store = workdir / executor / "study.sqlite"
    store.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tricklab", "study", str(path), "--store", str(store), "--executor", executor,
           "--workers", str(workers), "--json", "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=workdir,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    with Store(store) as db:
        values = {(t["arm"], t["seed"]): (t["result"] or {}).get(result["metric"]) for t in db.trials(result["study"])}
    return wall, cpu, result, values


def t_half_width(diffs: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean of ``diffs`` (the paired differences over seeds)."""
    from scipy import stats

    n = len(diffs)
    return float(stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / n ** 0.5) if n > 1 else float("nan")


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}–{max(values):.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--study", default=str(ROOT / "examples" / "dropout.yaml"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import torch

    times: dict[str, list[float]] = {"local": [], "population": []}
    cpu_times: dict[str, list[float]] = {"local": [], "population": []}
    outcomes: dict[str, list[dict]] = {"local": [], "population": []}
    values: dict[str, dict] = {}
    loads = []
    for r in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            for executor in (("local", "population") if r % 2 == 0 else ("population", "local")):
                seconds, cpu, out, values[executor] = study(Path(args.study).resolve(), executor, args.workers,
                                                            Path(tmp) / str(r))
                assert out["trials_completed"] == out["trials_total"] and not out["trials_failed"], out
                times[executor].append(seconds)
                cpu_times[executor].append(cpu)
                outcomes[executor].append(out)
                loads.append(os.getloadavg()[0])

    seq, pop = outcomes["local"][0], outcomes["population"][0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load during the runs "
          f"{min(loads):.1f}–{max(loads):.1f}, torch {torch.__version__}, python {platform.python_version()}; "
          f"{Path(args.study).name}: {seq['trials_total']} trials, {args.workers} workers, {args.runs} run(s)")
    print(f"{'executor':12s} {'wall s median [min–max]':>26s} {'CPU s (all processes)':>26s}")
    for executor, t in times.items():
        print(f"{executor:12s} {summary(t):>26s} {summary(cpu_times[executor]):>26s}")
    speedup = statistics.median(times["local"]) / statistics.median(times["population"])
    cpu_speedup = statistics.median(cpu_times["local"]) / statistics.median(cpu_times["population"])
    print(f"speedup {speedup:.2f}× wall, {cpu_speedup:.2f}× CPU (target >= {TARGET:g}× wall)\n")
    print(f"{'arm':24s} {'sequential mean [95% CI]':>32s} {'population mean':>16s} {'inside':>7s} "
          f"{'paired difference pop − seq [95% CI]':>40s}")
    within = {}
    for a in seq["arms"]:
        b = next(x for x in pop["arms"] if x["name"] == a["name"])
        inside = a["ci_low"] <= b["mean"] <= a["ci_high"]
        diffs = [values["population"][k] - v for k, v in values["local"].items() if k[0] == a["name"]]
        d_mean, d_half = statistics.mean(diffs), t_half_width(diffs)
        within[a["name"]] = {"sequential_mean": a["mean"], "ci_low": a["ci_low"], "ci_high": a["ci_high"],
                             "population_mean": b["mean"], "inside": inside, "paired_difference": d_mean,
                             "paired_ci": [d_mean - d_half, d_mean + d_half]}
        print(f"{a['name']:24s} {a['mean']:9.4f} [{a['ci_low']:.4f}, {a['ci_high']:.4f}] {b['mean']:16.4f} "
              f"{'yes' if inside else 'NO':>7s} {d_mean:+17.4f} [{d_mean - d_half:+.4f}, {d_mean + d_half:+.4f}]")
    print(json.dumps({
        "speedup": speedup, "target": TARGET, "meets_target": speedup >= TARGET,
        "cpu_speedup": cpu_speedup, "sequential_seconds": statistics.median(times["local"]),
        "population_seconds": statistics.median(times["population"]),
        "arms_within_ci": all(v["inside"] for v in within.values()), "arms": within, "metric": seq["metric"],
        "runs": args.runs, "workers": args.workers, "load": max(loads), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
