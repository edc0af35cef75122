"""The lesson book's time-to-accuracy figure (issue 16 item 5): validation accuracy by steps and by seconds."""

from __future__ import annotations

import base64
import math

from tests.test_lesson_pooling import _batchnorm
from tricklab.report.lesson_plots import time_to_accuracy


def _history(rate: float, seconds: float = 0.5):
    return [{"epoch": e, "step": 20 * e, "epoch_seconds": seconds, "val_accuracy": min(0.99, rate * e)}
            for e in range(1, 6)]


def test_time_to_accuracy_draws_both_units_and_nothing_without_a_metric():
    png = time_to_accuracy([("fast", [_history(0.3), _history(0.28)]), ("slow", [_history(0.15, 0.4)])], 0.9)
    assert png is not None and base64.b64decode(png).startswith(b"\x89PNG")
    gaps = [{"epoch": 1, "step": 20, "epoch_seconds": math.nan, "val_accuracy": 0.5}]
    assert time_to_accuracy([("a", [gaps])], None) is not None          # a NaN second is a gap, not an error
    assert time_to_accuracy([("a", [[{"epoch": 1, "step": 20}]]), ("b", [])], 0.9) is None


def test_a_lesson_with_a_speed_check_shows_the_figure_in_its_book_section(tmp_path):
    from tricklab.lessons.book import book_section

    section = book_section(_batchnorm(tmp_path, 0.05, 0.03), tmp_path / "book.html")
    assert "Time to accuracy" in [title for title, _ in section.images]
    assert any("learning rate" == key for key, _ in section.setup)


def test_the_checks_forest_plot_gives_each_measure_its_own_panel(tmp_path, monkeypatch):
    """Accuracy points and step counts never share an axis (issue 18 item 8): one panel per measure."""
    from tricklab.lessons import book
    from tricklab.report import plots

    drawn = []
    real = plots.forest_panels
    monkeypatch.setattr(plots, "forest_panels", lambda panels, title: drawn.append(panels) or real(panels, title))
    result = _batchnorm(tmp_path, 0.05, 0.03)
    section = book.book_section(result, tmp_path / "book.html")
    assert "Checks" in [title for title, _ in section.images]
    (panels,) = drawn
    by_label = {c.check.name: c.check.measure.label for c in result.checks}
    assert len(panels) == len(set(by_label.values())) >= 2             # the speed check's steps apart from accuracy
    for xlabel, rows in panels:
        assert {by_label[row.label] for row in rows} == {xlabel.removeprefix("effect on ")}
