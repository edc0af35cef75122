"""Command-line interface: ``tricklab train | doctor | study | report | lesson | tricks``.

Each ``*_cmd`` module imports its heavy dependencies (torch, rich, pydantic) inside ``run()``, so that ``--help``
starts at once (``tests/test_startup.py``)."""


def plain(text: str | None) -> str | None:
    """``text`` (a module docstring) as help text: without the backticks of code spans, which a terminal shows as
    they are."""
    return None if text is None else text.replace("``", "").replace("`", "")
