"""``tricklab report PATH [--out FILE.html] [--json]`` — one self-contained HTML report of a run directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EPILOG = """examples:
  tricklab report runs/mnist1d-cnn-20261127-101500-a1b2c3              # writes report.html into the run directory
  tricklab report runs/mnist1d-cnn-20261127-101500-a1b2c3 --out cnn.html
  tricklab report runs/mnist1d-cnn-20261127-101500-a1b2c3 --json       # last line: {"report": PATH}

The report is one HTML file with everything inline (no network, works offline): summary, learning curves,
per-layer gradient/activation/update views when the doctor watched the run, alarms, recipe and environment."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="write an HTML report of a run directory", description=__doc__,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="a run directory (runs/NAME-DATE-ID)")
    p.add_argument("--out", metavar="FILE.html", help="where to write the report (default: PATH/report.html)")
    p.add_argument("--json", action="store_true", help='print {"report": PATH} as one JSON object on the last line')
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tricklab.errors import InputError
    from tricklab.report import write_run_report

    path = Path(args.path)
    if path.is_file():
        raise InputError("PATH", f"{path} is a file; store reports come with studies; give a run directory for now")
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise InputError("--out", f"{out} is a directory; give a file name such as {out / 'report.html'}")
    written = write_run_report(path, out)
    print(json.dumps({"report": str(written)}) if args.json else str(written))
    return 0
