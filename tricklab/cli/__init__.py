"""Command-line interface: ``tricklab train | doctor | study | report | lesson | tricks``.

Each ``*_cmd`` module imports its heavy dependencies (torch, rich, pydantic) inside ``run()``, so that ``--help``
starts at once (``tests/test_startup.py``)."""
