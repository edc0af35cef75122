"""Benchmark: how fast the ``tricklab`` command starts (DESIGN.md: ``import tricklab`` is torch-free, so the CLI
starts at once). Target: ``tricklab --help`` and every ``tricklab COMMAND --help`` under 1 s.

    python bench/startup.py [--runs 5]

Each variant is one fresh Python process, timed from outside (wall clock, ``time.perf_counter`` around
``subprocess.run``): ``python -c pass`` (the interpreter alone: the baseline, measured in the same session),
``import tricklab``, ``python -m tricklab --help``, ``python -m tricklab COMMAND --help`` for every command, and the
installed ``tricklab --help`` script when it is on the path. Each repetition runs every variant once, in a
rotating order, so a shared machine's load hits all alike. Prints a table (median and min–max over the runs, the
median minus the baseline's, the machine, load average) and, as its last line, a JSON object: ``worst_help_s`` is
the slowest median of the ``--help`` variants (target < 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 1.0


def variants() -> dict[str, list[str]]:
    from tricklab.cli.main import build_parser  # the parser only: torch-free (tests/test_startup.py)

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    py = [sys.executable]
    out = {"python -c pass (baseline)": [*py, "-c", "pass"],
           "import tricklab": [*py, "-c", "import tricklab"],
           "python -m tricklab --help": [*py, "-m", "tricklab", "--help"]}
    for command in sub.choices:
        out[f"python -m tricklab {command} --help"] = [*py, "-m", "tricklab", command, "--help"]
    script = shutil.which("tricklab", path=str(Path(sys.executable).parent))
    if script:
        out["tricklab --help (script)"] = [script, "--help"]
    return out


def time_once(argv: list[str], cwd: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of every variant (default 5)")
    args = parser.parse_args()
    table = variants()
    names = list(table)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cwd = os.path.dirname(os.path.abspath(__file__))   # not the repository root: the installed package is timed
    for argv in table.values():   # warm the file cache and the bytecode once, untimed
        time_once(argv, cwd)
    times: dict[str, list[float]] = {name: [] for name in names}
    for run in range(args.runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(table[name], cwd))
    base = statistics.median(times[names[0]])
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load_before} before and "
          f"{load_after} after (1/5/15 min), Python {platform.python_version()}")
    print(f"{args.runs} runs per variant, rotating order; wall seconds of one fresh process each\n")
    width = max(map(len, names))
    print(f"| {'variant':<{width}} | median | min   | max   | median − baseline |")
    print(f"|{'-' * (width + 2)}|--------|-------|-------|-------------------|")
    for name in names:
        t = times[name]
        med = statistics.median(t)
        print(f"| {name:<{width}} | {med:.3f}  | {min(t):.3f} | {max(t):.3f} | {med - base:+.3f}            |")
    helps = {n: statistics.median(t) for n, t in times.items() if n.endswith("--help") or "--help " in n}
    worst = max(helps, key=helps.__getitem__)
    print(f"\nslowest --help: {worst} {helps[worst]:.3f} s (target < {TARGET_S} s: "
          f"{'met' if helps[worst] < TARGET_S else 'NOT met'})")
    print(json.dumps({"runs": args.runs, "baseline_s": round(base, 4),
                      "import_s": round(statistics.median(times["import tricklab"]), 4),
                      "help_s": round(statistics.median(times["python -m tricklab --help"]), 4),
                      "worst_help": worst, "worst_help_s": round(helps[worst], 4), "target_s": TARGET_S,
                      "met": helps[worst] < TARGET_S}))


if __name__ == "__main__":
    main()
