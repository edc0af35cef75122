"""The lesson book: one self-contained HTML page with a section per lesson — the lesson's claim (German quote
and English), the setup, the verdict with its numbers, the explanation written from the results, tables of the
arms and of the checks, and the plots (values per seed, learning curves, the per-layer mechanism).

This module only lays out what it is given (``BookSection``); the lessons package measures and judges. Every
text goes through the ``html`` helpers, so nothing in a section can inject markup; images are ``data:`` PNGs and
the page carries the same no-script, no-network Content-Security-Policy as the other reports.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tricklab.fsutil import atomic_write_text
from tricklab.report.html import (
    Markup,
    bullet_list,
    image,
    join,
    key_value_table,
    note,
    page,
    paragraph,
    section,
    subsection,
    table,
    tag,
)

VERDICT_CSS = """
.verdict { font-weight: 700; padding: 2px 10px; border-radius: 10px; white-space: nowrap; }
.verdict-supported { background: #dafbe1; color: #116329; }
.verdict-not_supported { background: #ffebe9; color: #a40e26; }
.verdict-inconclusive { background: #eaeef2; color: #424a53; }
.verdict-no_meaningful_difference { background: #ddf4ff; color: #0a3069; }
.verdict-smoke { background: #fff8c5; color: #6f4e00; }
blockquote { margin: 6px 0; padding: 4px 12px; border-left: 4px solid #d0d7de; color: #424a53; font-style: italic; }
.verdict-box { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; margin: 10px 0; background: #f6f8fa; }
ul.explanation li { margin: 3px 0; }
"""
VERDICT_WORDS = ("supported", "not_supported", "no_meaningful_difference", "inconclusive", "smoke")


@dataclass
class BookImage:
    png_base64: str
    alt: str
    caption: str = ""


@dataclass
class BookTable:
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class BookSection:
    """One lesson as the book shows it; every field is plain text (escaped on output) or an image."""

    anchor: str
    title: str
    title_de: str
    quote_de: str
    claim: str
    definition: str
    verdict: str
    verdict_numbers: str
    setup: list[tuple[str, str]]
    explanation: list[str]
    tables: list[tuple[str, BookTable]] = field(default_factory=list)
    images: list[tuple[str, BookImage]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)   # (text, relative href)


def verdict_badge(word: str) -> Markup:
    known = word if word in VERDICT_WORDS else "inconclusive"
    return tag("span", word, class_=f"verdict verdict-{known}")


def _table(t: BookTable) -> Markup:
    parts: list[Any] = [table(t.headers, t.rows, class_="data stats")]
    if t.caption:
        parts.append(paragraph(t.caption, "muted"))
    return join(parts)


_SUPERSCRIPT = re.compile(r"<sup>(.*?)</sup>")


def _quote(text: str) -> Markup:
    """The lesson's German text, escaped like every user string — except its superscripts (``10<sup>10</sup>``,
    ``w<sup>t+1</sup>``: the seed writes powers and time steps so), which become real ``<sup>`` elements."""
    parts: list[Any] = []
    for i, piece in enumerate(_SUPERSCRIPT.split(text)):
        parts.append(tag("sup", piece) if i % 2 else piece)
    return join(parts)


def _section(s: BookSection) -> Markup:
    parts: list[Any] = [note(n) for n in s.notes]
    parts += [
        subsection("Claim", join([tag("blockquote", join([_quote(s.quote_de), " — ", tag("span", s.title_de)]), lang="de"),
                                  paragraph(s.claim)])),
        tag("div", join([tag("strong", "Verdict: "), verdict_badge(s.verdict), " ", s.verdict_numbers]),
            class_="verdict-box", id=f"{s.anchor}-verdict"),
        subsection("How the claim is tested", paragraph(s.definition)),
        subsection("Setup", key_value_table(s.setup)),
        subsection("What the numbers say", bullet_list(s.explanation, class_="explanation")),
    ]
    for title, t in s.tables:
        parts.append(subsection(title, _table(t)))
    for title, img in s.images:
        body: list[Any] = [image(img.png_base64, img.alt)]
        if img.caption:
            body.append(paragraph(img.caption, "muted"))
        parts.append(subsection(title, join(body)))
    if s.links:
        parts.append(paragraph(join(["More: ", join(join([tag("a", text, href=href), " "]) for text, href in s.links)])))
    return section(s.anchor, s.title, *parts)


def _overview(sections: Sequence[BookSection]) -> Markup:
    rows = [[tag("a", s.title, href=f"#{s.anchor}"), s.claim, verdict_badge(s.verdict), s.verdict_numbers]
            for s in sections]
    return join([table(["lesson", "claim", "verdict", "numbers"], rows, class_="data stats"),
                 paragraph("Verdict rule: the 95% interval of the paired difference that tests the claim, oriented so "
                           "that a positive effect means the claim holds, read against the lesson's margin m of "
                           "practical relevance — no_meaningful_difference when the whole interval lies inside ±m, "
                           "supported when it lies above 0 (and not inside ±m), not_supported when below 0, "
                           "inconclusive otherwise, and always inconclusive below 5 paired seeds or for a degenerate "
                           "interval [d, d]. Secondary checks need a Holm-adjusted p below 5% as well. A quick run "
                           "says smoke: it checks the machinery, not the claim.", "muted")])


def render_lesson_book(title: str, subtitle: str, sections: Sequence[BookSection],
                       environment: Sequence[tuple[str, Any]] = ()) -> str:
    """The HTML text of the book."""
    parts = [("overview", "Overview", section("overview", "Overview", _overview(sections)))]
    parts += [(s.anchor, s.anchor.removeprefix("lesson-"), _section(s)) for s in sections]
    rows = [("made", dt.datetime.now().astimezone().isoformat(timespec="seconds")), *environment]
    parts.append(("environment", "Environment", section("environment", "Environment", key_value_table(rows))))
    return page(title, subtitle, parts, extra_css=VERDICT_CSS)


def write_lesson_book(path: str | Path, title: str, subtitle: str, sections: Sequence[BookSection],
                      environment: Sequence[tuple[str, Any]] = ()) -> Path:
    """Write the book atomically to ``path``; returns it."""
    out = Path(path)
    atomic_write_text(out, render_lesson_book(title, subtitle, sections, environment))
    return out
