"""Where ``tricklab lesson`` keeps its files: ``OUT`` (default ``tricklab-lessons/``) holds the store
``lessons.sqlite``, the trial run directories ``runs/``, the derived datasets ``data/`` and the lesson book.

Plain constants, so that ``tricklab lesson --help`` can show them without importing the lessons."""

DEFAULT_OUT = "tricklab-lessons"
STORE_FILE = "lessons.sqlite"
