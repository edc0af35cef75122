"""``tricklab lesson NAME|all [--quick] [--json] [--out DIR] [--force] [--mnist DIR]
[--executor local|population|ray] [--workers N]``.

Runs the study behind one section of the lesson (or all of them), judges the lesson's claim from the 95% interval
of the paired difference that tests it (supported / not_supported / no_meaningful_difference / inconclusive),
explains the result from the measured numbers, and writes the lesson book (one HTML page, a section per lesson).
Resumable: re-running reuses every finished trial in OUT/lessons.sqlite."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from tricklab.cli import plain
from tricklab.cli.study_cmd import add_executor_options, check_workers

SQLITE_HEADER = b"SQLite format 3\x00"

EPILOG = """lessons: {names}

examples:
  tricklab lesson init --quick           # smoke: 3 seeds, few epochs, 1 tuning seed (1-2 minutes on 2 cores)
  tricklab lesson all                    # the verdicts of record (docs/LESSONS.md has their runtime)
  tricklab lesson all --quick --json     # last line: a JSON list, one object per lesson
  tricklab lesson dropout --mnist ~/mnist  # dropout on MNIST itself too (its four IDX files in ~/mnist)

With --json the last line of stdout is {{"lesson", "claim", "verdict", "n_seeds", "effect", "ci_low", "ci_high",
"report", "margin", ...}} (for all: a list of them). The verdict rule (a positive effect means the claim holds;
m = the lesson's margin of practical relevance): no_meaningful_difference when the oriented 95% CI lies inside ±m,
supported when above 0, not_supported when below 0, inconclusive otherwise or below 5 seeds. --quick: smoke (it
checks the machinery, not the claim)."""


def add_parser(sub: Any) -> None:
    from tricklab.lessons.paths import DEFAULT_OUT
    from tricklab.lessons.registry import lesson_names

    p = sub.add_parser("lesson", help="check one of the lesson's claims (or all) with a seeded study and a verdict",
                       description=plain(__doc__), epilog=EPILOG.format(names=", ".join(lesson_names())),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME|all", help="a lesson name, or all")
    p.add_argument("--quick", action="store_true",
                   help="the small budget: at least 3 seeds, fewer epochs (a smoke check, not the verdict of record)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line of stdout")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"where the store, trial runs and the book go (default: {DEFAULT_OUT}/); an existing book "
                        "there is replaced only if tricklab wrote it")
    p.add_argument("--force", action="store_true",
                   help="replace the book's file in DIR even when it is not an earlier tricklab lesson book")
    p.add_argument("--mnist", metavar="DIR",
                   help="MNIST's four IDX files in DIR (raw or .gz): the dropout lesson adds the notebook's own data "
                        "as a third dataset (60,000 images: hours on a CPU)")
    add_executor_options(p, "local", "local worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tricklab.lessons.book import write_book
    from tricklab.lessons.registry import ALL, select
    from tricklab.lessons.run import run_lesson
    from tricklab.report.outputs import claim_output

    check_workers(args.workers)
    _check_name(args.name)
    lessons = select(args.name)
    if args.mnist is not None:
        lessons = _with_mnist(lessons, args.name, Path(args.mnist))
    out = _check_out(Path(args.out))
    suffix = "-quick" if args.quick else ""
    book = (out / (f"lessons{suffix}.html" if args.name == ALL else f"lesson-{args.name}{suffix}.html")).resolve()
    claim_output(book, "--out", "html", force=args.force)
    results = []
    for lesson in lessons:
        result = run_lesson(lesson, quick=args.quick, out_dir=out, executor=args.executor, workers=args.workers,
                            progress=not args.quiet)
        results.append(result)
        if not args.json:
            _print_result(result)
    write_book(results, book)
    if args.json:
        payload = [r.to_json() for r in results]
        print(json.dumps(payload if args.name == ALL else payload[0]))
    else:
        total = sum(r.seconds for r in results)
        print(f"lesson book: {book}  ({len(results)} lesson(s), {total:.0f} s)")
    return 0


def _check_name(name: str) -> None:
    """Refuse an unknown lesson with the nearest name (``batchnrom`` → ``batchnorm``)."""
    from tricklab.errors import InputError
    from tricklab.lessons.registry import ALL, lesson_names
    from tricklab.registry import did_you_mean

    names = [*lesson_names(), ALL]
    if name not in names:
        raise InputError("lesson", f"unknown lesson {name!r}{did_you_mean(name, names)}", allowed=names)


def _with_mnist(lessons: list[Any], name: str, directory: Path) -> list[Any]:
    """``--mnist DIR``: the dropout lesson measured on MNIST too (``catalog.dropout.on_mnist``), once DIR is seen
    to hold the four IDX files; any other lesson is refused (none of them measures on MNIST)."""
    from tricklab.data.idx import EXPECTED, FILES, find_file
    from tricklab.errors import InputError
    from tricklab.lessons.catalog.dropout import on_mnist

    if not any(lesson.name == "dropout" for lesson in lessons):
        raise InputError("--mnist", f"lesson {name!r} does not measure on MNIST",
                         allowed="tricklab lesson dropout --mnist DIR, or tricklab lesson all --mnist DIR")
    if not directory.is_dir():
        raise InputError("--mnist", f"{str(directory)!r} is not a directory", allowed=f"a directory holding {EXPECTED}")
    missing = [stem for stem in FILES.values() if find_file(directory, stem) is None]
    if missing:
        raise InputError("--mnist", f"{str(directory)!r} lacks {', '.join(missing)}", allowed=EXPECTED)
    path = str(directory.resolve())
    return [on_mnist(path) if lesson.name == "dropout" else lesson for lesson in lessons]


def _check_out(out: Path) -> Path:
    """``--out`` if the lessons can keep their store, runs and book there — before any lesson trains: a directory
    (or a path where one can be made) whose ``lessons.sqlite``, if present, is a SQLite file and whose ``runs``
    and ``data`` are directories. Anything else in the way is refused naming ``--out``, never replaced."""
    from tricklab.errors import InputError
    from tricklab.fsutil import require_directory_path, require_file
    from tricklab.lessons.paths import STORE_FILE

    what = "a directory for the lessons' store, runs and book"
    for directory in (out, out / "runs", out / "data"):   # the runs and the derived datasets (lessons.run)
        require_directory_path(directory, "--out", what=what)
    store = out / STORE_FILE
    if os.path.lexists(store):
        with open(require_file(store, "--out", what="a tricklab store"), "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise InputError("--out", f"{store} exists and is not a SQLite store; it is not overwritten",
                             allowed="a directory whose lessons.sqlite, if any, is a tricklab store")
    return out


def _print_result(r: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from tricklab.lessons.book import verdict_numbers
    from tricklab.lessons.words import budget, effect_texts, test_set

    console = Console(highlight=False)
    console.rule(f"[bold]lesson {r.lesson.name}[/] — {r.lesson.title_de}")
    console.print(f"[dim]{budget(r)}[/]", markup=True)
    console.print(f"claim: {r.lesson.claim}", markup=False)
    style = {"supported": "green", "not_supported": "red", "no_meaningful_difference": "cyan"}.get(r.verdict, "yellow")
    console.print(f"verdict: [bold {style}]{r.verdict}[/] — ", end="")
    console.print(verdict_numbers(r), markup=False)
    for line in r.explanation:
        console.print(f"  • {line}", markup=False)
    table = Table(title="checks (effect > 0: the claim holds)", title_justify="left")
    for col in ("check", "n", "effect", "95% CI", "margin", "test set", "verdict"):
        table.add_column(col)
    for c in r.checks:
        o = c.oriented
        table.add_row(c.check.name, str(o.n), *effect_texts(o.effect, o.ci_low, o.ci_high), f"±{o.margin:.3g}",
                      test_set(c.test_examples) or "—", "smoke" if r.smoke else o.verdict)
    console.print(table)
    reused = len(r.trials) - r.trained_now
    console.print(f"ran in {r.seconds:.0f} s wall, {r.cpu_seconds:.0f} s CPU ({r.trained_now} trials trained now, "
                  f"{reused} reused from {r.store})",
                  markup=False)
