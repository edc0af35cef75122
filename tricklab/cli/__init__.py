"""Command-line interface: ``tricklab train | doctor | study | report | lesson | tricks | lr-find``.

Each ``*_cmd`` module imports its heavy dependencies (torch, rich, pydantic) inside ``run()``, so that ``--help``
starts at once (``tests/test_startup.py``)."""

from typing import Any


def plain(text: str | None) -> str | None:
    """``text`` (a module docstring) as help text: without the backticks of code spans, which a terminal shows as
    they are."""
    return None if text is None else text.replace("``", "").replace("`", "")


def add_recipe_arguments(p: Any, example: str = "optimizer.lr=0.1") -> None:
    """The recipe a command runs: an optional YAML file and ``--set KEY=VALUE`` overrides (bare ``KEY=VALUE``
    words work the same: ``cli.main.bare_overrides``) — as ``train``, ``doctor`` and ``lr-find`` take it."""
    p.add_argument("recipe", nargs="?", help="a recipe YAML file (omit for the built-in default); KEY=VALUE "
                                             "arguments after it are overrides, as with --set")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a recipe field by its dotted path, e.g. --set {example} (repeatable)")
