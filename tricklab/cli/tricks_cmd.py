"""``tricklab tricks [--json]`` — the catalogue: every trick by name, kind, formula, reference, and where the
lesson's wording differs. Read from the same registries that validate recipes, so it cannot drift."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from tricklab.cli import plain

# kind → module that fills its registry, in the order of the lesson.
CATALOGUE = {
    "scaling": "tricklab.tricks.scaling",
    "init": "tricklab.tricks.init",
    "norm": "tricklab.tricks.norm",
    "regularization": "tricklab.tricks.regularization",
    "early_stopping": "tricklab.tricks.early_stopping",
    "averaging": "tricklab.tricks.averaging",
    "optimizer": "tricklab.tricks.optimizers",
    "clip": "tricklab.tricks.clipping",
    "schedule": "tricklab.tricks.schedules",
    "lr_finder": "tricklab.tricks.lr_find",
    "model": "tricklab.models",
    "activation": "tricklab.tricks.activations",
    "augment": "tricklab.tricks.augment",
    "soft_targets": "tricklab.tricks.soft_targets",
    "accumulation": "tricklab.tricks.accumulation",
    "precision": "tricklab.tricks.precision",
}


def catalogue() -> dict[str, Any]:
    """Every catalogue entry as plain data, plus the floating-point facts the lesson's first section uses."""
    from tricklab.registry import ALL_REGISTRIES
    from tricklab.tricks.scaling import float_epsilons, lesson_float_example

    for module in CATALOGUE.values():
        importlib.import_module(module)
    entries = [entry.as_dict() for kind in CATALOGUE for entry in ALL_REGISTRIES[kind]]
    return {"tricks": entries, "floating_point": {"epsilon": float_epsilons(), "lesson_example": lesson_float_example()}}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tricks", help="list every trick: name, kind, formula, reference, the lesson's wording",
                       description=plain(__doc__))
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"tricks": [{name, kind, formula, reference, lesson, note, aliases}], '
                        '"floating_point": {...}} on the last line')
    p.add_argument("--kind", choices=list(CATALOGUE), help="only this kind")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    data = catalogue()
    if args.kind:
        data["tricks"] = [e for e in data["tricks"] if e["kind"] == args.kind]
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    console = Console()
    for kind in CATALOGUE:
        rows = [e for e in data["tricks"] if e["kind"] == kind]
        if not rows:
            continue
        table = Table(title=kind, show_lines=False, title_justify="left")
        for column in ("name", "formula", "reference", "lesson / note"):
            table.add_column(column, overflow="fold")
        for e in rows:
            name = e["name"] + (f" ({', '.join(e['aliases'])})" if e["aliases"] else "")
            words = " — ".join(w for w in (e["lesson"], e["note"]) if w)
            table.add_row(name, e["formula"], e["reference"], words)
        console.print(table)
    fp = data["floating_point"]
    eps = ", ".join(f"{k} {v:.3g}" for k, v in fp["epsilon"].items())
    console.print(f"[bold]floating point[/] machine epsilon: {eps}. Lesson example: {fp['lesson_example']}",
                  highlight=False)
    return 0
