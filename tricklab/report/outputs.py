"""Outputs never destroy inputs: a report replaces only a file that is an earlier output of the same kind.

``tricklab report --out FILE`` with a typo (``--out result.json``, ``--out tricklab.sqlite``) would otherwise put
an HTML page where a run's result or a whole study's store was, and the atomic rename makes that final. So
before anything is written, each file a report is about to write is checked here: it may be missing, or an
earlier tricklab output of the same kind — recognised by what tricklab writes into it (the HTML generator
``<meta>``, the trials CSV's header, the summary's first lines) — and nothing else, unless the user says
``--force``. Even with ``--force`` a report never replaces the very file it is made from, and a FIFO, device or
directory in the way is refused (``fsutil.require_writable_file_path``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from tricklab.errors import InputError
from tricklab.fsutil import require_writable_file_path
from tricklab.provenance import __version__

GENERATOR = "tricklab"
GENERATOR_META = f'<meta name="generator" content="{GENERATOR} {__version__}">'
"""Written into the ``<head>`` of every HTML page tricklab makes (``html.page``): how a report is recognised as
one, so that a later report may replace it."""

_LEGACY_HTML = ('<meta http-equiv="Content-Security-Policy" content="default-src ', "<title>tricklab ")
"""A tricklab page written before the generator ``<meta>`` existed carries both of these in its head."""

_SNIFF_BYTES = 4096   # every marker lies in a file's first lines


def _head(path: Path) -> str:
    """The first bytes of a regular file as text (undecodable bytes replaced)."""
    with open(path, "rb") as fh:
        return fh.read(_SNIFF_BYTES).decode("utf-8", "replace")


def is_html_report(head: str) -> bool:
    """Whether a file starting with ``head`` is an HTML page tricklab wrote (report, study report, lesson book)."""
    marker = f'<meta name="generator" content="{GENERATOR} '
    return head.startswith("<!DOCTYPE html>") and (marker in head or all(m in head for m in _LEGACY_HTML))


def is_trials_csv(head: str) -> bool:
    """Whether a file starting with ``head`` is a ``<study>-trials.csv`` (``export.csv_columns``)."""
    return head.startswith("study,arm,seed,status,attempts,executor,run_id,")


def is_summary_markdown(head: str) -> bool:
    """Whether a file starting with ``head`` is a ``<study>-summary.md`` (``export.summary_markdown``)."""
    lines = head.split("\n", 3)
    return len(lines) > 2 and lines[0].startswith("# Study ") and lines[2].startswith("Baseline: ")


KINDS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "html": ("an HTML report of tricklab", is_html_report),
    "csv": ("a trials CSV of tricklab", is_trials_csv),
    "markdown": ("a study summary of tricklab", is_summary_markdown),
}


def claim_output(path: str | os.PathLike[str], field: str, kind: str, *, force: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """``path`` as a ``Path`` if a ``kind`` output (``html``, ``csv``, ``markdown``) may be written there: it is
    missing, or (``force`` or) it is an earlier output of that kind — and it is none of ``inputs``, the files the
    output is made from. Else an ``InputError`` naming ``field`` and the path; nothing is written here."""
    what, recognise = KINDS[kind]
    p = require_writable_file_path(path, field, what=f"a new file, or {what} to replace")
    if not p.exists():
        return p
    if any(_same_file(p, i) for i in inputs):
        raise InputError(field, f"{p} is the file this report is made from; it is never overwritten",
                         allowed="another file name")
    if force:
        return p
    try:
        ours = recognise(_head(p))
    except OSError as err:
        raise InputError(field, f"{p} exists and cannot be read ({err.strerror}); it is not overwritten",
                         allowed="another file name, or --force") from None
    if not ours:
        raise InputError(field, f"{p} exists and is not {what}; it is not overwritten (it may be a store, a "
                                "recipe, a result or a checkpoint)",
                         allowed=f"a new file name, {what} to replace, or --force to replace it anyway")
    return p


def _same_file(a: Path, b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
