"""Assemble one self-contained HTML page, escaping every piece of text by default.

Safe by construction: every helper escapes what it is given with ``html.escape`` unless it is already
``Markup`` (markup built by these helpers). Run names, recipe values, layer names, class names and alarm
messages are user-controlled, so nothing reaches the page unescaped by accident. The page carries a
Content-Security-Policy that forbids scripts and every network request (images are ``data:`` URIs, the CSS is
inline), so it also works offline and from an e-mail attachment.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

from tricklab.report.outputs import GENERATOR_META

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
"""No scripts, no fetches, no fonts from elsewhere: a report only shows what it carries."""

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #1f2328; background: #fff; line-height: 1.45; }
header { background: #24292f; color: #fff; padding: 14px 28px; }
header h1 { margin: 0; font-size: 1.35em; font-weight: 600; overflow-wrap: anywhere; }
header p { margin: 4px 0 0; color: #c9d1d9; font-size: 0.9em; }
nav { padding: 8px 28px; background: #f6f8fa; border-bottom: 1px solid #d0d7de; font-size: 0.9em; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
main { max-width: 1120px; padding: 8px 28px 40px; }
header, nav, main { overflow-wrap: break-word; }   /* a long path or hash wraps instead of widening the page */
@media (max-width: 600px) {
  header, nav { padding-left: 12px; padding-right: 12px; }
  main { padding: 4px 12px 28px; }
  table { font-size: 0.82em; }
  th, td { padding: 3px 5px; }
}
section { margin-top: 26px; }
h2 { font-size: 1.15em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 1em; margin-bottom: 4px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 6px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td { overflow-wrap: break-word; }
table.data { width: 100%; }
table.kv th { width: 11em; }
.scroll { overflow-x: auto; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; border: 1px solid #eaeef2; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 10px 12px; font-size: 0.85em;
      overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
.muted { color: #656d76; }
.missing { color: #656d76; font-style: italic; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: 6px 10px; margin: 6px 0; font-size: 0.9em; }
.status { font-weight: 600; padding: 1px 8px; border-radius: 10px; }
.status-completed { background: #dafbe1; color: #116329; }
.status-stopped_early { background: #fff8c5; color: #7d4e00; }
.status-diverged { background: #ffebe9; color: #a40e26; }
.status-unknown { background: #eaeef2; color: #424a53; }
.status-failed { background: #ffebe9; color: #82071e; }
.status-pending, .status-running { background: #ddf4ff; color: #0a3069; }
.baseline { font-weight: 600; }
.nowrap { white-space: nowrap; }
table.stats { font-size: 0.82em; }
table.stats th, table.stats td { padding: 4px 6px; }
table.stats td:last-child { min-width: 11em; }
ul.advice { margin: 0; padding-left: 1.2em; }
code { font-size: 0.92em; background: #f6f8fa; border-radius: 3px; padding: 0 3px; }
"""


class Markup(str):
    """Text that is already safe HTML (built by this module); it is not escaped again."""


def esc(value: Any) -> Markup:
    """``value`` as text, HTML-escaped (quotes included, so it is safe inside attributes too)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any]) -> Markup:
    """Concatenate markup and (escaped) text."""
    return Markup("".join(esc(p) for p in parts))


def tag(name: str, content: Any = "", **attrs: Any) -> Markup:
    """``<name attrs>content</name>`` with the content and every attribute value escaped.

    Attribute names come from this package's code, never from a run; ``class_`` writes ``class``.
    """
    attr_text = "".join(f' {k.rstrip("_")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return Markup(f"<{name}{attr_text}>{esc(content)}</{name}>")


_CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def prose(text: Any) -> Markup:
    """Escaped text in which a `command` between backticks (as messages quote commands and keys) is set as code."""
    if isinstance(text, Markup):
        return text
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", esc(text)))


def paragraph(text: Any, class_: str | None = None) -> Markup:
    return tag("p", prose(text), class_=class_)


def not_recorded(what: str, why: str = "") -> Markup:
    """The placeholder of a section whose data the run did not record."""
    return paragraph(f"{what}: not recorded{' — ' + why if why else ''}.", class_="missing")


def note(text: Any) -> Markup:
    return tag("div", prose(text), class_="note")


def preformatted(text: Any) -> Markup:
    return tag("pre", text)


def bullet_list(items: Sequence[Any], class_: str | None = None) -> Markup:
    return tag("ul", join(tag("li", item) for item in items), class_=class_)


def key_value_table(rows: Sequence[tuple[Any, Any]]) -> Markup:
    """A two-column table: a header cell and a value cell per row."""
    rows_markup = join(tag("tr", join([tag("th", k), tag("td", v)])) for k, v in rows)
    return tag("div", tag("table", rows_markup, class_="kv"), class_="scroll")


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], class_: str = "data") -> Markup:
    """A full-width table with a header row (``class_="data stats"``: the compact style of statistics tables)."""
    head = tag("tr", join(tag("th", h) for h in headers))
    body = join(tag("tr", join(tag("td", cell) for cell in row)) for row in rows)
    return tag("div", tag("table", join([tag("thead", head), tag("tbody", body)]), class_=class_), class_="scroll")


def image(png_base64: str, alt: str) -> Markup:
    """An embedded PNG (``data:`` URI: the page needs no other file and no network)."""
    if not png_base64.isascii() or any(c not in _BASE64 for c in png_base64):
        raise ValueError("image() takes base64 text only")
    return Markup(f'<img src="data:image/png;base64,{png_base64}" alt="{esc(alt)}">')


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def status_badge(status: Any) -> Markup:
    known = {"completed", "stopped_early", "diverged", "failed", "pending", "running"}
    css = f"status status-{status if status in known else 'unknown'}"
    return tag("span", status if status is not None else "unknown", class_=css)


def section(anchor: str, title: str, *parts: Any) -> Markup:
    """A titled section; ``anchor`` is the id the navigation links to."""
    return tag("section", join([tag("h2", title), *parts]), id=anchor)


def subsection(title: str, *parts: Any) -> Markup:
    return join([tag("h3", title), *parts])


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, Markup]], extra_css: str = "") -> str:
    """The whole document: ``sections`` are ``(anchor, nav label, section markup)``; ``extra_css`` (a constant of
    the calling report module, never user text) is appended to the shared style sheet. The generator ``<meta>``
    marks the page as tricklab's own, so a later report may replace it (``outputs.claim_output``)."""
    nav = join(tag("a", label, href=f"#{anchor}") for anchor, label, _ in sections)
    body = join([
        tag("header", join([tag("h1", title), paragraph(subtitle)])),
        tag("nav", nav),
        tag("main", join(markup for _, _, markup in sections)),
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CSP)}\">\n{GENERATOR_META}\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}{extra_css}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
