"""``tricklab study STUDY.yaml [--store PATH] [--executor local|population|ray] [--workers N] [--json]``.

Runs every trial (arm × seed) of a study that the store does not hold yet, then compares the arms (mean,
95% CI, paired differences against the baseline over the same seeds, Holm-corrected) and writes the HTML
report. Re-running the same command completes what is missing and redoes nothing finished (it says so when
nothing is left); --rerun trains every trial again."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tricklab.cli import plain
from tricklab.cli.train_cmd import check_run_paths

EPILOG = """examples:
  tricklab study examples/dropout.yaml                       # local worker processes, one per core
  tricklab study examples/dropout.yaml --executor ray        # one Ray task per trial (RAY_ADDRESS or a local Ray)
  tricklab study examples/dropout.yaml --executor ray --ray-address 10.0.0.5:6379   # an existing cluster
  tricklab study examples/dropout.yaml --json                # last line: trials_total, trials_completed, ...
  tricklab study examples/dropout.yaml --executor population --rerun   # train every trial again

With --json the last line of stdout is {"trials_total", "trials_completed", "trials_failed", "store", "report",
"arms": [{"name", "mean", "ci_low", "ci_high", "n"}], ...}."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("study", help="run a seeded ablation study (resumable) and compare its arms",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the study spec (YAML)")
    p.add_argument("--store", default="tricklab.sqlite", metavar="PATH", help="SQLite store (default: tricklab.sqlite)")
    add_executor_options(p, None, "the spec's executor, else local")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="an existing Ray cluster for --executor ray (default: the spec's address, else RAY_ADDRESS, "
                        "else a Ray started for this study)")
    p.add_argument("--runs-dir", default=None, metavar="DIR", help="trial run directories (default: runs/ beside the store)")
    p.add_argument("--tensorboard", action="store_true",
                   help="each trial logs to TensorBoard while it trains (RUN_DIR/tensorboard; tensorboard --logdir "
                        "RUNS/STUDY groups them by arm); needs pip install 'tricklab[tensorboard]'")
    p.add_argument("--rerun", action="store_true",
                   help="train every trial again, finished or not (their run directories are kept as NAME.rerun-N; "
                        "the store keeps only the new outcomes)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def add_executor_options(p: argparse.ArgumentParser, default: str | None, default_help: str) -> None:
    """``--executor`` and ``--workers``, as ``tricklab study`` and ``tricklab lesson`` take them."""
    from tricklab.study.executor_registry import EXECUTORS

    p.add_argument("--executor", choices=EXECUTORS, default=default,
                   help=f"where trials train (default: {default_help})")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="parallel trials (default: one per core)")


def check_workers(workers: int | None) -> None:
    from tricklab.errors import InputError

    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be >= 1, got {workers}")


def run(args: argparse.Namespace) -> int:
    from tricklab.report import write_study_report
    from tricklab.study import load_study
    from tricklab.study.runner import run_study

    check_workers(args.workers)
    check_run_paths(args.runs_dir, args.store)
    if args.tensorboard:
        from tricklab.integrations.tensorboard import require_tensorboard

        require_tensorboard()
    spec = load_study(args.spec)
    outcome = run_study(spec, store=args.store, executor=args.executor, workers=args.workers,
                        runs_root=args.runs_dir, progress=not args.quiet, address=args.ray_address, rerun=args.rerun,
                        report=None if args.no_report else write_study_report, tensorboard=args.tensorboard)
    payload = outcome.to_json()
    if not args.json:
        _print_table(payload)
    if outcome.note:
        sys.stderr.write(f"note: {outcome.note}\n")
    _all_failed(outcome.trials, args.store)   # with --json, the error object is then the only JSON printed
    if args.json:
        print(json.dumps(payload))
    return 0


def _all_failed(trials: list[dict[str, Any]], store: str) -> int:
    """0, unless every trial failed (nothing was measured): then a ``TricklabError`` (exit 1) with one line per
    kind of failure."""
    from tricklab.errors import TricklabError

    if not trials or any(t["status"] != "failed" for t in trials):
        return 0
    kinds: dict[str, int] = {}
    for t in trials:
        first = (t["error"] or "unknown error").strip().splitlines()[0][:300]
        kinds[first] = kinds.get(first, 0) + 1
    lines = "".join(f"\n  {n} × {first}" for first, n in kinds.items())
    raise TricklabError(f"every trial failed ({len(trials)}); nothing was measured. Fix the cause below (each "
                        f"trial's full error is in {store}) and run the same command again: failed trials are "
                        f"retried up to the spec's max_retries (--rerun starts every trial afresh){lines}")


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"study {r['study']} — {r['metric']} (baseline: {r['baseline']})")
    for col in ("arm", "n", "mean", "95% CI", "vs baseline"):
        table.add_column(col)
    for arm in r["arms"]:
        diff = r.get("differences", {}).get(arm["name"])
        words = diff.get("words", "") if diff else ("baseline" if arm["name"] == r["baseline"] else "")
        table.add_row(arm["name"], str(arm["n"]), _fmt(arm["mean"]),
                      f"[{_fmt(arm['ci_low'])}, {_fmt(arm['ci_high'])}]", words)
    console.print(table)
    console.print(f"trials: {r['trials_completed']}/{r['trials_total']} finished, {r['trials_failed']} failed; "
                  f"trained now: {r['trained_now']} in {r['seconds']:.0f} s; store {r['store']}; report {r['report']}",
                  highlight=False)
