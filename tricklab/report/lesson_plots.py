"""Figures of the lesson book: each arm's values over seeds, and per-layer profiles (the doctor's view).

Same conventions as ``plots``: the object-oriented matplotlib API on an Agg canvas (no global state), every
name drawn literally (``plain``), NaN/±Inf/None are gaps, base64 PNG text out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.ticker import MaxNLocator

from tricklab.report.plots import (
    _arm_colors,
    _figure,
    _label,
    _plain_ticks,
    _short,
    finish_rows,
    finite,
    plain,
    to_base64_png,
)


class ArmPoints(NamedTuple):
    """One arm in a strip plot: its per-seed values and the 95% interval of their mean (None: undefined)."""

    name: str
    values: Sequence[float]
    mean: float | None
    low: float | None
    high: float | None


def arm_strip(arms: Sequence[ArmPoints], title: str, xlabel: str) -> str | None:
    """One row per arm: every seed's value as a small dot, the mean as a large dot with its 95% t interval.
    None with no value at all."""
    if not any(len(a.values) for a in arms):
        return None
    n = len(arms)
    colors = _arm_colors(n)
    with _figure(min(12.0, max(2.0, 0.36 * n + 1.3))) as (fig, axes):
        ax = axes[0, 0]
        for i, (arm, color) in enumerate(zip(arms, colors)):
            xs = finite(list(arm.values))
            if xs.size:
                jitter = np.linspace(-0.12, 0.12, xs.size) if xs.size > 1 else np.zeros(1)
                ax.plot(xs, i + jitter, "o", color=color, alpha=0.45, markersize=4, zorder=2)
            low, high, mean = (finite([v])[0] for v in (arm.low, arm.high, arm.mean))
            if math.isfinite(low) and math.isfinite(high):
                ax.hlines(i, low, high, color=color, linewidth=2.4, zorder=3)
            if math.isfinite(mean):
                ax.plot([mean], [i], "D", color=color, markersize=7, markeredgecolor="black", zorder=4)
        return finish_rows(fig, ax, [a.name for a in arms], xlabel, title, crowded=16)


class ProfilePanel(NamedTuple):
    """One panel of a per-layer profile: a title, the y label, and per arm its values by layer (forward order)."""

    title: str
    ylabel: str
    lines: Mapping[str, Sequence[float | None]]
    log: bool = True


def layer_profiles(panels: Sequence[ProfilePanel], ncols: int = 2) -> str | None:
    """Per-layer values (x: weight layer in forward order, 1 = first), one line per arm, one panel each.

    A log axis shows values that vanish (1e-20) or explode (1e15) next to healthy ones; values <= 0 are gaps
    there. None when no panel has a value.
    """
    panels = [p for p in panels if any(np.any(np.isfinite(finite(list(v)))) for v in p.lines.values())]
    if not panels:
        return None
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    with _figure(3.3 * nrows + 0.3, ncols=ncols, nrows=nrows) as (fig, axes):
        flat = axes.ravel()
        for ax, panel in zip(flat, panels):
            colors = _arm_colors(len(panel.lines))
            for (arm, values), color in zip(panel.lines.items(), colors):
                ys = finite(list(values))
                if panel.log:
                    ys[ys <= 0] = np.nan
                if np.all(np.isnan(ys)):
                    continue
                xs = np.arange(1, ys.size + 1)
                ax.plot(xs, ys, color=color, marker="o" if ys.size <= 30 else None, markersize=3, linewidth=1.4,
                        label=_label(_short(arm, 30)))
            if panel.log:
                ax.set_yscale("log")
                _plain_ticks(ax)
            ax.set_title(plain(panel.title))
            ax.set_xlabel("weight layer (forward order)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # layers are whole numbers
            ax.set_ylabel(plain(panel.ylabel))
            ax.legend(fontsize=7, ncols=2 if len(panel.lines) > 6 else 1, loc="upper left",   # outside the data
                      bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
        for ax in flat[len(panels):]:
            ax.set_visible(False)
        return to_base64_png(fig)


def time_to_accuracy(arms: Sequence[tuple[str, Sequence[Sequence[Mapping[str, object]]]]], target: float | None,
                     metric: str = "val_accuracy") -> str | None:
    """``metric`` against optimizer steps (left) and against training wall seconds (right, the summed
    ``epoch_seconds``), one thin line per seed coloured by arm, a dashed line at ``target``: "faster" in both units
    a lesson checks it in. None when no history has the metric."""
    def points(history: Sequence[Mapping[str, object]]) -> tuple[list[float], list[float], list[float]]:
        steps, seconds, values, elapsed = [], [], [], 0.0
        for h in history:
            step, sec, value = h.get("step"), h.get("epoch_seconds"), h.get(metric)
            elapsed += float(sec) if isinstance(sec, int | float) and math.isfinite(sec) else math.nan
            if isinstance(step, int | float) and isinstance(value, int | float):
                steps.append(float(step))
                seconds.append(elapsed)
                values.append(float(value))
        return steps, seconds, values

    drawn = [(name, [points(h) for h in histories]) for name, histories in arms]
    if not any(values for _, runs in drawn for _, _, values in runs):
        return None
    colors = _arm_colors(len(drawn))
    with _figure(3.6, ncols=2) as (fig, axes):
        for ax, index, xlabel in ((axes[0, 0], 0, "optimizer steps"), (axes[0, 1], 1, "training seconds (wall)")):
            for (name, runs), color in zip(drawn, colors):
                for k, run in enumerate(runs):
                    xs, ys = finite(run[index]), finite(run[2])
                    if xs.size:
                        ax.plot(xs, ys, color=color, linewidth=1.0, alpha=0.6, marker="o", markersize=2,
                                label=_label(_short(name, 30)) if k == 0 else None)
            if target is not None:
                ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(plain(metric))
        axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
        return to_base64_png(fig)
