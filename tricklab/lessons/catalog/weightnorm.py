"""Gewichtsnormierung — weight norm, which the lesson names beside batch norm as a normalisation technique."""

from __future__ import annotations

from tricklab.lessons.catalog.layernorm import alternative_lesson

LESSON = alternative_lesson(
    name="weightnorm", kind="weight", label="Weight normalisation",
    title_de="Batch-Normalisierung: Gewichtsnormierung",
    what="every weight vector re-parametrised as w = g·v/‖v‖, no layer inserted; Salimans & Kingma 2016")
