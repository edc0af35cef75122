"""The lesson's claims as studies with verdicts: ``tricklab lesson NAME|all``.

Each lesson is one section of ``seed/TrainingTricks.de.md``: its claim, a seeded study that tests it, the paired
comparison that decides it (``supported`` / ``not_supported`` / ``no_meaningful_difference`` / ``inconclusive``
from where the 95% interval lies relative to 0 and to the lesson's margin of practical relevance; ``smoke`` for a
quick run), the per-layer mechanism behind it, and an explanation written from the measured numbers.

The public names are read lazily (``tricklab.lazy``): ``tricklab.lessons.registry`` (the names, for
``tricklab lesson --help``) imports no torch. ``verdict`` is the verdict rule's function; its module is
``tricklab.lessons.verdicts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tricklab.lazy import lazy_exports

if TYPE_CHECKING:
    from tricklab.lessons.lesson import Check, Lesson, Measure, TrialView, Variant
    from tricklab.lessons.outcome import CheckResult, LessonResult, evaluate_check
    from tricklab.lessons.paths import DEFAULT_OUT
    from tricklab.lessons.registry import ALL, LESSONS, get_lesson, lesson_names, select
    from tricklab.lessons.run import lesson_spec, run_lesson
    from tricklab.lessons.verdicts import (
        INCONCLUSIVE,
        NO_MEANINGFUL_DIFFERENCE,
        NOT_SUPPORTED,
        SMOKE,
        SUPPORTED,
        VERDICTS,
        orient,
        verdict,
    )

__all__ = [
    "ALL",
    "DEFAULT_OUT",
    "INCONCLUSIVE",
    "LESSONS",
    "NOT_SUPPORTED",
    "NO_MEANINGFUL_DIFFERENCE",
    "SMOKE",
    "SUPPORTED",
    "VERDICTS",
    "Check",
    "CheckResult",
    "Lesson",
    "LessonResult",
    "Measure",
    "TrialView",
    "Variant",
    "evaluate_check",
    "get_lesson",
    "lesson_names",
    "lesson_spec",
    "orient",
    "run_lesson",
    "select",
    "verdict",
]

_WHERE = {
    "lesson": ("Check", "Lesson", "Measure", "TrialView", "Variant"),
    "outcome": ("CheckResult", "LessonResult", "evaluate_check"),
    "paths": ("DEFAULT_OUT",),
    "registry": ("ALL", "LESSONS", "get_lesson", "lesson_names", "select"),
    "run": ("lesson_spec", "run_lesson"),
    "verdicts": ("INCONCLUSIVE", "NOT_SUPPORTED", "NO_MEANINGFUL_DIFFERENCE", "SMOKE", "SUPPORTED", "VERDICTS", "orient",
                 "verdict"),
}

__getattr__, __dir__ = lazy_exports(__name__, {
    name: f"tricklab.lessons.{module}:{name}" for module, names in _WHERE.items() for name in names
})
