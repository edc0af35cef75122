"""``tricklab report PATH [--study NAME] [--out FILE.html] [--force] [--json]`` — one self-contained HTML report
of a run directory, or of a study in a store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tricklab.cli import plain

EPILOG = """examples:
  tricklab report runs/mnist1d-cnn-20261127-101500-a1b2c3              # writes report.html into the run directory
  tricklab report runs/mnist1d-cnn-20261127-101500-a1b2c3 --out cnn.html
  tricklab report tricklab.sqlite                   # the store's only study: writes <study>-report.html beside it
  tricklab report tricklab.sqlite --study dropout   # a store holding several studies needs --study
  tricklab report tricklab.sqlite --json            # last line: {"report": PATH, "study": ..., "csv": ..., ...}

The report is one HTML file with everything inline (no network, works offline). A run: summary, learning curves,
per-layer gradient/activation/update views when the doctor watched the run, alarms, recipe and environment.
A study: per-arm means with 95% intervals, paired differences against the baseline (forest plot, p-values,
verdict), learning curves per arm, steps to the target, alarms, failures, the spec — plus <study>-trials.csv
and <study>-summary.md beside the HTML.

Where it goes: without --out, next to what it reports on — PATH/report.html inside a run directory, or
<study>-report.html in the store's directory — never into the current directory unless PATH is there.
A file already there is replaced only if it is an earlier tricklab report (CSV, summary) of the same kind;
any other file (a store, a recipe, a result.json, a checkpoint, your own notes) is left alone and the command
exits 2 naming it, unless --force. The store a report is made from is never overwritten, --force or not.
Only a run's own files are read: a file in the run directory that is a link leading outside it is left out."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="write an HTML report of a run directory or of a study in a store",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="a run directory (runs/NAME-DATE-ID) or a store file (tricklab.sqlite)")
    p.add_argument("--study", metavar="NAME", help="the study to report when the store holds several")
    p.add_argument("--out", metavar="FILE.html",
                   help="where to write the report (default: PATH/report.html for a run, "
                        "<store dir>/<study>-report.html for a study)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out file even when it is not an earlier tricklab report")
    p.add_argument("--json", action="store_true", help='print {"report": PATH, ...} as one JSON object on the last line')
    p.add_argument("--tensorboard", metavar="LOGDIR",
                   help="also export a run's per-layer statistics as TensorBoard events into LOGDIR, a directory "
                        "(needs pip install 'tricklab[tensorboard]')")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tricklab.errors import InputError
    from tricklab.fsutil import require_directory_path, require_file, require_writable_file_path

    path = Path(args.path)
    out = Path(args.out) if args.out else None
    if out is not None:
        require_writable_file_path(out, "--out", what="an HTML file path in an existing directory",
                                   parent_must_exist=True)
    if not path.is_dir():  # a store: a regular file, checked with stat before anything opens it
        store = require_file(path, "PATH", what="a run directory (runs/NAME-DATE-ID) or a store file "
                                                "(tricklab.sqlite)")
        if args.tensorboard:
            raise InputError("--tensorboard", "TensorBoard export is for a run directory, not a store",
                             allowed="a run directory as PATH")
        return _study_report(store, args.study, out, args.force, args.json)
    if args.study is not None:
        raise InputError("--study", f"{path} is not a store file; --study chooses a study of a store",
                         allowed="a store file (tricklab.sqlite) as PATH, or no --study for a run directory")
    if args.tensorboard:  # checked before the report is written, so a bad LOGDIR leaves nothing behind
        require_directory_path(args.tensorboard, "--tensorboard", what="a directory for TensorBoard event files")
    from tricklab.report import write_run_report

    written = write_run_report(path, out, force=args.force)
    result = {"report": str(written)}
    if args.tensorboard:
        from tricklab.integrations.tensorboard import export_run

        notes: list[str] = []
        result["tensorboard"] = str(export_run(path, args.tensorboard, notes=notes))
        for line in notes:
            sys.stderr.write(f"note: {line}\n")
    print(json.dumps(result) if args.json else "\n".join(result.values()))
    return 0


def _study_report(store: Path, study: str | None, out: Path | None, force: bool, as_json: bool) -> int:
    from tricklab.report.outputs import claim_output
    from tricklab.report.study_data import choose_study
    from tricklab.report.study_report import report_paths, write_study_report

    if out is not None:  # before the store is opened; the files beside it are checked once the study is known
        claim_output(out, "--out", "html", force=force, inputs=[store])
    name = choose_study(store, study)
    written = write_study_report(store, name, out, force=force)
    _, csv_path, md_path = report_paths(name, written, store)
    if as_json:
        print(json.dumps({"report": str(written), "study": name, "csv": str(csv_path), "summary": str(md_path)}))
    else:
        print(written)
    return 0
