"""The tables of ``docs/LESSONS.md`` from a finished ``tricklab lesson all --json`` run, old verdicts beside new ones.

    tricklab lesson all --json --quiet --out OUT > OUT/all.jsonl
    python -m tricklab.lessons.markdown OUT/all.jsonl --old docs/LESSONS.md > OUT/tables.md

The input is the command's stdout (its last line is the JSON list) or a file holding just that list. ``--old``: an
earlier ``docs/LESSONS.md`` whose verdict table (rows ``| # | `name` | … | **verdict** | …``) gives the previous
verdicts; where a verdict changed, the table says why, from the numbers of the new run (each arm at its own LR vs
one shared LR, a pool whose models disagree, an interval inside the margin, the resampled split). The prose around
the tables stays a person's job; this writes only what the numbers decide. Reads JSON, imports no torch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tricklab.errors import InputError

_OLD_ROW = re.compile(r"^\|\s*\d+\s*\|\s*`(?P<name>[a-z_]+)`\s*\|(?:[^*]*?\|)?\s*\*\*(?P<verdict>[a-z_]+)\*\*\s*\|")
"""A verdict row of either table this module knows: ``| 3 | `batchnorm` | claim | **verdict** | …`` (until 2026-11) and
``| 4 | `batchnorm` | **verdict** | was | …`` (``verdict_table``)."""


def old_verdicts(text: str) -> dict[str, str]:
    """lesson → verdict from the verdict table of an earlier ``docs/LESSONS.md``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _OLD_ROW.match(line)
        if m:
            out.setdefault(m.group("name"), m.group("verdict"))
    return out


def read_results(text: str, source: str) -> list[dict[str, Any]]:
    """The lesson objects of a ``--json`` run: the last non-empty line that parses as a JSON list (or object)."""
    for line in reversed([ln for ln in text.splitlines() if ln.strip()]):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        items = data if isinstance(data, list) else [data]
        if items and all(isinstance(x, dict) and "lesson" in x and "verdict" in x for x in items):
            return items
    raise InputError("results", f"{source} holds no JSON line of lesson results",
                     allowed="the stdout of `tricklab lesson all --json` (its last line is a JSON list)")


def _num(x: Any, digits: int = 3) -> str:
    return "—" if not isinstance(x, int | float) or isinstance(x, bool) else f"{x:.{digits}g}"


def _signed(x: Any) -> str:
    return "—" if not isinstance(x, int | float) or isinstance(x, bool) else f"{x:+.3g}"


def _test_set(n: Any) -> str:
    """The test-set size per seed: one number, or the range over a lesson's datasets (``[359, 1000]``)."""
    if isinstance(n, list) and n:
        low, high = min(n), max(n)
        return f"{low:,}" if low == high else f"{low:,}–{high:,}"
    return f"{n:,}" if isinstance(n, int) else "—"


def _check(r: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((c for c in r.get("checks", []) if c.get("check") == name), None)


def why_changed(r: Mapping[str, Any], old: str) -> str:
    """Why the verdict of ``r`` differs from ``old``, from ``r``'s own numbers (first reason that applies)."""
    new = r["verdict"]
    if new == "smoke":
        return "a quick run is smoke: it checks the machinery and gives no verdict"
    primary = (r.get("checks") or [{}])[0]
    pool = primary.get("pool")
    if pool and not pool.get("agree_in_sign"):
        parts = ", ".join(f"{p['check']} {_signed(p['effect'])}" for p in pool.get("parts", []))
        return f"the pooled models disagree in sign ({parts}): each is judged alone, the pool is not"
    shared = _check(r, "shared_lr")
    if shared is not None and shared.get("verdict") == old:
        return (f"each arm at its own best LR; at one shared LR it stays {old} "
                f"({_signed(shared.get('effect'))} [{_num(shared.get('ci_low'))}, {_num(shared.get('ci_high'))}])")
    if new == "no_meaningful_difference":
        return f"the whole interval lies inside the margin ±{_num(r.get('margin'))}"
    if (r.get("n_seeds") or 0) < 5:
        return "fewer than 5 paired seeds"
    return ("the split is drawn per seed, so the test set's own sampling noise is in the interval; and the arms "
            "run at their tuned LRs")


def verdict_table(results: Sequence[Mapping[str, Any]], old: Mapping[str, str]) -> str:
    rows = ["| # | lesson | verdict | was | effect | 95% CI | margin | n | test set | why it changed |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        before = old.get(r["lesson"], "—")
        changed = before != "—" and before != r["verdict"]
        rows.append(f"| {i} | `{r['lesson']}` | **{r['verdict']}** | {before} | {_signed(r.get('effect'))} | "
                    f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}] | ±{_num(r.get('margin'))} | "
                    f"{r.get('n_seeds', '—')} | {_test_set(r.get('test_examples'))} | "
                    f"{why_changed(r, before) if changed else ''} |")
    return "\n".join(rows)


def lr_table(results: Sequence[Mapping[str, Any]]) -> str:
    rows = ["| lesson | learning rate per arm (own LR → chosen) |", "|---|---|"]
    for r in results:
        arms = r.get("arms", [])
        if arms and all(a.get("tuned") for a in arms):
            text = ", ".join(f"{a['name']} {_num(a.get('shared_lr'))}→{_num(a.get('lr'))}" for a in arms)
        else:
            text = f"untuned ({(r.get('tuning') or {}).get('untuned', '')})"
        rows.append(f"| `{r['lesson']}` | {text} |")
    return "\n".join(rows)


def runtime_table(results: Sequence[Mapping[str, Any]]) -> str:
    rows = ["| # | lesson | arms × seeds, epochs | trials trained | wall s | CPU s |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        rows.append(f"| {i} | `{r['lesson']}` | {len(r.get('arms', []))} × {r.get('seeds', '—')}, "
                    f"{r.get('epochs', '—')} | {r.get('trained_now', '—')} | {_num(r.get('seconds'), 4)} | "
                    f"{_num(r.get('cpu_seconds'), 4)} |")
    total_wall = sum(float(r.get("seconds") or 0) for r in results)
    total_cpu = sum(float(r.get("cpu_seconds") or 0) for r in results)
    rows.append(f"| | all | | {sum(int(r.get('trained_now') or 0) for r in results)} | {total_wall:.0f} | "
                f"{total_cpu:.0f} |")
    return "\n".join(rows)


def render(results: Sequence[Mapping[str, Any]], old: Mapping[str, str]) -> str:
    variant = {r.get("variant") for r in results}
    head = "quick variant (smoke: no verdicts)" if variant == {"quick"} else "full variant"
    return "\n\n".join([f"<!-- generated by python -m tricklab.lessons.markdown from {len(results)} lesson(s), "
                        f"{head} -->", "## Verdicts", verdict_table(results, old), "## Learning rates",
                        lr_table(results), "## Runtime", runtime_table(results)]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tricklab.lessons.markdown", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="the stdout of `tricklab lesson all --json` (or its last line)")
    parser.add_argument("--old", help="an earlier docs/LESSONS.md, for the verdicts beside the new ones")
    args = parser.parse_args(argv)
    try:
        results = read_results(_read(args.results, "results"), args.results)
        old = old_verdicts(_read(args.old, "--old")) if args.old else {}
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render(results, old))
    return 0


def _read(path: str, field: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(field, f"cannot read {path}: {err}", allowed="a readable UTF-8 text file") from None


if __name__ == "__main__":
    raise SystemExit(main())
