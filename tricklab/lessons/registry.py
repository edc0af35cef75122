"""The lessons by name, in the order of the German lesson's sections (``tricklab lesson NAME|all``).

``NAMES`` is the order; each name is a module of ``tricklab.lessons.catalog`` whose ``LESSON`` has that name.
Reading the names imports nothing (``tricklab lesson --help`` lists them without torch); the lessons themselves
are built on first use (``get_lesson``, ``select``, ``LESSONS``), and checked against ``NAMES`` then.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from tricklab.errors import InputError

if TYPE_CHECKING:
    from tricklab.lessons.lesson import Lesson

NAMES = ("scaling", "floats", "init", "batchnorm", "bn_placement", "layernorm", "weightnorm", "dropout",
         "dropout_averaging", "overfitting", "capacity", "averaging", "optimizers", "clipping", "large_lr", "lr_decay",
         "architectures", "gradients")
ALL = "all"


def lesson_names() -> list[str]:
    return list(NAMES)


@cache
def all_lessons() -> dict[str, Lesson]:
    """Every lesson by name, in ``NAMES`` order (built once: the catalog imports the measures, hence torch)."""
    from tricklab.lessons.catalog import (
        architectures,
        averaging,
        batchnorm,
        bn_placement,
        capacity,
        clipping,
        dropout,
        dropout_averaging,
        floats,
        gradients,
        init,
        large_lr,
        layernorm,
        lr_decay,
        optimizers,
        overfitting,
        scaling,
        weightnorm,
    )

    lessons = {m.LESSON.name: m.LESSON for m in (
        scaling, floats, init, batchnorm, bn_placement, layernorm, weightnorm, dropout, dropout_averaging,
        overfitting, capacity, averaging, optimizers, clipping, large_lr, lr_decay, architectures, gradients)}
    if tuple(lessons) != NAMES:
        raise RuntimeError(f"lessons.registry: NAMES {NAMES} differ from the catalog's lessons {tuple(lessons)}")
    return lessons


def get_lesson(name: str) -> Lesson:
    """The lesson called ``name``; an ``InputError`` naming the allowed names otherwise."""
    if name not in NAMES:
        raise InputError("lesson", f"unknown lesson {name!r}", allowed=[*NAMES, ALL])
    return all_lessons()[name]


def select(name: str) -> list[Lesson]:
    """``all`` → every lesson in order; a name → that lesson."""
    return list(all_lessons().values()) if name == ALL else [get_lesson(name)]


def __getattr__(name: str) -> Any:
    """``LESSONS``: name → ``Lesson``, built on first read (PEP 562)."""
    if name == "LESSONS":
        return all_lessons()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
