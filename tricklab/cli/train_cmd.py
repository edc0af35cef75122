"""``tricklab train [RECIPE.yaml] [--set key=value ...] [--json] [--resume RUN_DIR]``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from tricklab.cli import add_recipe_arguments, plain

EPILOG = """examples:
  tricklab train                                   # the built-in default: MNIST-1D, 4-layer CNN, sensible tricks
  tricklab train recipes/default.yaml --set optimizer.lr=0.01 --set model.depth=8
  tricklab train --set model.name=mlp --set init.scheme=normal --json
  tricklab train optimizer.lr=0.01 epochs=30                 # KEY=VALUE without --set works the same
  tricklab train --resume runs/mnist1d-cnn-20261127-101500-a1b2c3   # continue a killed run exactly
  tricklab train --resume runs/mnist1d-cnn-20261127-101500-a1b2c3 epochs=30   # extend a run to 30 epochs

With --json the last line of stdout is one JSON object: status, test_accuracy, test_loss, best_epoch, epochs,
steps, wall_seconds, run_dir, alarms, ... A diverged run (NaN/Inf loss) exits 0 with status "diverged"."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train one recipe (default: MNIST-1D CNN)", description=plain(__doc__),
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(p, "optimizer.lr=0.1")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint; with "
                                                        "--set epochs=N, extend a run (finished or not) to N epochs")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where run directories are made (default: runs)")
    p.add_argument("--store", default="tricklab.sqlite", metavar="PATH",
                   help="SQLite store to record the run in (default: tricklab.sqlite; 'none' to skip)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train on N processes (DistributedDataParallel under torchrun; gloo on CPUs, NCCL on GPUs): "
                        "each takes 1/N of every batch, process 0 writes the run (default: 1)")
    p.add_argument("--tensorboard", action="store_true",
                   help="log to TensorBoard while training, into RUN_DIR/tensorboard (view: tensorboard --logdir "
                        "runs); needs pip install 'tricklab[tensorboard]'")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tricklab.errors import InputError
    from tricklab.train import train

    if args.resume and args.recipe:
        raise InputError("--resume", "give either a recipe or --resume RUN_DIR, not both")
    check_run_paths(None if args.resume else args.runs_dir, args.store)
    if not 1 <= args.nproc <= MAX_NPROC:
        raise InputError("--nproc", f"must be an integer from 1 to {MAX_NPROC}, got {args.nproc}")
    if args.nproc > 1 and "RANK" not in os.environ:
        if args.resume:
            raise InputError("--nproc", "a run is resumed on one process: its checkpoint is an ordinary one",
                             allowed=f"tricklab train --resume {args.resume} (without --nproc)")
        check_several_processes(args)
        return launch(args.nproc)
    result = train(args.recipe, overrides=args.overrides, runs_root=args.runs_dir, resume=args.resume,
                   store=None if args.store == "none" else args.store, progress=not args.quiet,
                   callbacks=tensorboard_callbacks(args.tensorboard))
    if os.environ.get("RANK", "0") != "0":   # one of --nproc's other processes: process 0 reports
        return 0
    payload = result.to_json()
    if args.json:
        payload.pop("recipe", None)
        print(json.dumps(payload))
    else:
        _print_summary(payload)
    return 0


MAX_NPROC = 1024


def check_several_processes(args: argparse.Namespace) -> None:
    """Refuse, before any process starts, a recipe that cannot train on several (exit 2, the keys named)."""
    from tricklab.errors import InputError
    from tricklab.recipe import load_recipe
    from tricklab.train.run import several_processes_refusal

    refused = several_processes_refusal(load_recipe(args.recipe, args.overrides))
    if refused:
        raise InputError("--nproc", refused, allowed="precision fp32, accumulate 1, no augment, mixup or label "
                                                     "smoothing; or --nproc 1")


def launch(nproc: int) -> int:
    """Run this very command on ``nproc`` processes under torchrun (``--nproc`` dropped: each process sees the
    world torchrun made, ``tricklab.train.distributed``); its exit code is theirs."""
    import subprocess
    import sys

    argv, skip = [], False
    for word in sys.argv[1:]:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            argv.append(word)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tricklab", *argv]
    return subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))).returncode


def tensorboard_callbacks(wanted: bool) -> list[Any]:
    """``--tensorboard``: a live TensorBoard logger into the run directory (refused at once without the package)."""
    if not wanted:
        return []
    from tricklab.integrations.tensorboard import TensorBoardCallback, require_tensorboard

    require_tensorboard()
    return [TensorBoardCallback()]


def check_run_paths(runs_dir: str | None, store: str | None) -> None:
    """Refuse a ``--runs-dir`` that cannot hold run directories and a ``--store`` that cannot be a store file (a
    FIFO, a device, a directory, a file in the way above either) — when the arguments are read, before any data
    is loaded or anything created. ``None`` (and ``--store none``) skip the check."""
    from tricklab.fsutil import require_directory_path, require_writable_file_path

    if runs_dir is not None:
        require_directory_path(runs_dir, "--runs-dir", what="a directory where run directories are made")
    if store is not None and store != "none":
        require_writable_file_path(store, "--store", what="a SQLite store file (tricklab.sqlite), or none",
                                   parent_must_exist=True)


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _print_summary(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from tricklab.tricks.optimizers import describe_momentum_form

    console = Console()
    table = Table(title=f"tricklab train — {r['recipe']['name']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    status_style = {"completed": "green", "stopped_early": "yellow", "diverged": "red"}[r["status"]]
    table.add_row("status", f"[{status_style}]{r['status']}[/]" + (f" ({r['stop_reason']})" if r["stop_reason"] else ""))
    table.add_row("test accuracy", _fmt(r["test_accuracy"]))
    table.add_row("test loss", _fmt(r["test_loss"]))
    table.add_row("best epoch", str(r["best_epoch"]))
    table.add_row("epochs / steps", f"{r['epochs']} / {r['steps']}")
    table.add_row("time", f"{r['wall_seconds']:.1f} s ({r['train_seconds']:.1f} s training, {r['device']})")
    table.add_row("parameters", f"{r['num_params']:,}")
    table.add_row("optimizer", describe_momentum_form(r["recipe"]["optimizer"]["name"]))
    d = r["data"]
    table.add_row("data", f"{d['name']}: {d['train']} train / {d['val']} val / {d['test']} test, shape {d['input_shape']}")
    table.add_row("run directory", r["run_dir"])
    console.print(table)
    for alarm in r["alarms"]:
        console.print(f"[yellow]alarm[/] {alarm['kind']}: {alarm['message']}", highlight=False)
