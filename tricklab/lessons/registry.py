"""The lessons by name, in the order of the German lesson's sections (``tricklab lesson NAME|all``)."""

from __future__ import annotations

from tricklab.errors import InputError
from tricklab.lessons.catalog import (
    architectures,
    batchnorm,
    clipping,
    dropout,
    gradients,
    init,
    lr_decay,
    optimizers,
    overfitting,
    scaling,
)
from tricklab.lessons.lesson import Lesson

LESSONS: dict[str, Lesson] = {m.LESSON.name: m.LESSON for m in (
    scaling, init, batchnorm, dropout, overfitting, optimizers, clipping, lr_decay, architectures, gradients)}
ALL = "all"


def lesson_names() -> list[str]:
    return list(LESSONS)


def get_lesson(name: str) -> Lesson:
    """The lesson called ``name``; an ``InputError`` naming the allowed names otherwise."""
    if name not in LESSONS:
        raise InputError("lesson", f"unknown lesson {name!r}", allowed=[*LESSONS, ALL])
    return LESSONS[name]


def select(name: str) -> list[Lesson]:
    """``all`` → every lesson in order; a name → that lesson."""
    return list(LESSONS.values()) if name == ALL else [get_lesson(name)]
