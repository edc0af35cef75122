"""``tricklab doctor [RECIPE.yaml] [--set ...] [--repair] [--json]`` — train under the doctor: per-layer
probes, named diagnoses with the numbers behind them and the tricks to try, and (with --repair) in-run repair."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from tricklab.cli import add_recipe_arguments, plain
from tricklab.cli.train_cmd import MAX_NPROC, check_run_paths, check_several_processes, launch

EPILOG = """examples:
  tricklab doctor                                   # the default recipe: a healthy run, no alarm
  tricklab doctor --set model.name=mlp --set model.depth=20 --set model.activation=sigmoid --set init.scheme=normal
  tricklab doctor --set optimizer.name=sgd --set optimizer.lr=50 --repair --json
  tricklab doctor --nproc 2 --set optimizer.lr=5      # DDP on 2 processes, the doctor on process 0

With --json the last line of stdout is one JSON object: the fields of tricklab train --json plus
diagnosis (alarm kinds found), repairs (list of {step, action, reason}), and before/after metrics when
the run was repaired. Alarms carry {kind, layer, step, message}; advice maps each kind to the tricks to try."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="train under the doctor: diagnose (and --repair) a run that does not train",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(p, "optimizer.lr=0.1")
    p.add_argument("--repair", action="store_true", help="repair in the run: roll back and apply the next trick")
    p.add_argument("--budget", type=int, default=4, metavar="N", help="at most N repairs (default 4)")
    p.add_argument("--every", type=int, default=None, metavar="STEPS",
                   help="probe every STEPS optimizer steps (default: the probe's default interval)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where run directories are made")
    p.add_argument("--store", default="tricklab.sqlite", metavar="PATH", help="SQLite store ('none' to skip)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train on N processes as tricklab train --nproc does; the doctor probes process 0 (the "
                        "gradients it sees are the all-reduced ones of the whole batch); not with --repair")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tricklab.diagnose.probes import DEFAULT_EVERY
    from tricklab.diagnose.run_doctor import doctor_train
    from tricklab.errors import InputError

    if args.budget < 0:
        raise InputError("--budget", f"must be >= 0, got {args.budget}")
    if args.every is not None and args.every < 1:
        raise InputError("--every", f"must be >= 1, got {args.every}")
    check_run_paths(args.runs_dir, args.store)
    if not 1 <= args.nproc <= MAX_NPROC:
        raise InputError("--nproc", f"must be an integer from 1 to {MAX_NPROC}, got {args.nproc}")
    if args.nproc > 1 and "RANK" not in os.environ:
        if args.repair:
            raise InputError("--repair", "repairs change a run on one process (its rate, clipping, weights); with "
                             "--nproc every process would have to change alike", allowed="--repair without --nproc, "
                             "or --nproc N without --repair (diagnosis only)")
        check_several_processes(args)
        return launch(args.nproc)
    outcome = doctor_train(args.recipe, overrides=args.overrides, repair=args.repair, budget=args.budget,
                           every=args.every or DEFAULT_EVERY, runs_root=args.runs_dir,
                           store=None if args.store == "none" else args.store, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":   # one of --nproc's other processes: process 0 reports
        return 0
    payload = outcome.to_json()
    if args.json:
        print(json.dumps(payload))
    else:
        _print_panel(payload, outcome)
    return 0


def _print_panel(r: dict[str, Any], outcome: Any) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console()
    acc = "—" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
    head = f"status {r['status']}   test accuracy {acc}   epochs {r['epochs']}   run {r['run_dir']}"
    if not outcome.alarms:
        console.print(Panel(f"{head}\n\n[green]No problem found.[/]", title="tricklab doctor"))
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("problem", "layer", "since step", "what the doctor sees", "try"):
        table.add_column(col, overflow="fold")
    for a in outcome.alarms:
        table.add_row(a.kind, a.layer or "—", str(a.step), a.message, "\n".join(a.advice[:3]))
    console.print(Panel(table, title=f"tricklab doctor — {head}"))
    for rep in r["repairs"]:
        console.print(f"[cyan]repair[/] step {rep['step']}: {rep['action']} — {rep['reason']}", highlight=False)
    if r["repairs"]:
        console.print(f"before: {r['before']}\nafter:  {r['after']}", highlight=False)
