"""The lesson's claims as studies with verdicts: ``tricklab lesson NAME|all``.

Each lesson is one section of ``seed/TrainingTricks.de.md``: its claim, a seeded study that tests it, the paired
comparison that decides it (``supported`` / ``not_supported`` / ``inconclusive`` from the sign of the 95%
interval), the per-layer mechanism behind it, and an explanation written from the measured numbers.
"""

from tricklab.lessons.lesson import Check, Lesson, Measure, TrialView, Variant
from tricklab.lessons.outcome import CheckResult, LessonResult, evaluate_check
from tricklab.lessons.registry import ALL, LESSONS, get_lesson, lesson_names, select
from tricklab.lessons.run import DEFAULT_OUT, lesson_spec, run_lesson
from tricklab.lessons.verdict import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, VERDICTS, orient, verdict

__all__ = [
    "ALL",
    "DEFAULT_OUT",
    "INCONCLUSIVE",
    "LESSONS",
    "NOT_SUPPORTED",
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
