"""The report's figures, drawn with matplotlib and returned as base64 PNG text for ``data:`` URIs.

Figures are built with the object-oriented API (``matplotlib.figure.Figure`` on an Agg canvas): no GUI
backend is needed, no global pyplot state is touched (a notebook user's backend stays as it was) and no figure
is left registered anywhere once its PNG is written. Names from a run go through ``plain`` (dollar signs
escaped), so a layer named ``$x$`` is drawn as written, not as mathtext. Every series goes through ``finite``:
NaN, ±Inf and JSON null become gaps in lines; in heatmaps they get their own colours (gray: not recorded/NaN,
black: exactly 0, red: +Inf).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

DPI = 100
WIDTH = 10.0                      # inches; 1000 px at DPI, fits the page's 1120 px column
HEALTHY_UPDATE_RATIO = 1e-3       # ‖Δw‖/‖w‖ per step; the usual rule of thumb (Karpathy, CS231n)
HEALTHY_BAND = (1e-4, 1e-2)       # one decade either side: outside it a layer learns too slowly or too fast
MISSING, ZERO, INFINITE = "#d0d7de", "#000000", "#d1242f"
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
       "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False}


@contextmanager
def _figure(height: float, ncols: int = 1, nrows: int = 1) -> Iterator[tuple[Figure, Any]]:
    """A constrained-layout figure with our style, its axes; cleared once the block ends."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        try:
            yield fig, axes
        finally:
            fig.clear()


def to_base64_png(fig: Figure) -> str:
    """Render ``fig`` to PNG and return it as base64 text."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def finite(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """A float array where NaN, ±Inf, None and anything unreadable are NaN (a gap in a line)."""
    out = np.array([_float(v) for v in np.asarray(values, dtype=object).ravel()], dtype=float)
    out[~np.isfinite(out)] = np.nan
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plain(text: str) -> str:
    """``text`` drawn literally: ``$`` escaped so matplotlib does not read it as mathtext."""
    return str(text).replace("$", r"\$")


def _label(text: str) -> str:
    """A legend label drawn literally that matplotlib will not drop (it hides labels starting with "_")."""
    return plain(" " + text if text.startswith("_") else text)


def _positive(values: np.ndarray) -> np.ndarray:
    out = finite(values)
    out[out <= 0] = np.nan
    return out


def _use_log(ax: Any, *series: np.ndarray) -> None:
    """Log y axis when every recorded value is positive and they span more than a decade."""
    vals = np.concatenate([finite(s) for s in series]) if series else np.array([])
    vals = vals[~np.isnan(vals)]
    if vals.size and vals.min() > 0 and vals.max() / vals.min() > 10:
        ax.set_yscale("log")
        _plain_ticks(ax)


def _plain_ticks(ax: Any) -> None:
    """Log-axis tick labels as plain numbers (``0.2``, ``1e-05``) instead of mathtext powers (also faster).

    On an axis spanning less than ~1.5 decades the 2× and 5× minor ticks are labelled too, so it never shows a
    single number.
    """
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if _label_minor(ax, v) else ""))


def _label_minor(ax: Any, value: float) -> bool:
    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi / lo < 30 and value > 0):
        return False
    leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
    return leading in (2, 5)


def _empty(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not recorded", ha="center", va="center", transform=ax.transAxes, color="#656d76")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def learning_curves(history: Sequence[dict[str, Any]]) -> str | None:
    """Loss, accuracy, learning rate and gradient norm per epoch (2×2 panels); None with no epochs."""
    if not history:
        return None
    epochs = finite([h.get("epoch", i + 1) for i, h in enumerate(history)])
    marker = "o" if len(history) <= 30 else None
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "validation")], "loss"),
        ("accuracy", [("train_accuracy", "train"), ("val_accuracy", "validation")], "accuracy"),
        ("learning rate (end of epoch)", [("lr", "lr")], "lr"),
        ("gradient norm (before clipping)", [("grad_norm_mean", "mean over steps"), ("grad_norm_max", "max")],
         "‖g‖₂"),
    ]
    with _figure(6.0, ncols=2, nrows=2) as (fig, axes):
        for ax, (title, keys, ylabel) in zip(axes.ravel(), panels):
            ax.set_title(title)
            drawn = []
            for key, label in keys:
                ys = finite([h.get(key) for h in history])
                if not np.all(np.isnan(ys)):
                    ax.plot(epochs, ys, marker=marker, markersize=3, label=label)
                    drawn.append(ys)
            if not drawn:
                _empty(ax, title)
                continue
            _use_log(ax, *drawn)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            if len(drawn) > 1:
                _legend_below(ax, len(drawn))
        return to_base64_png(fig)


def _legend_below(ax: Any, entries: int) -> None:
    """The legend under the axes, outside the data (a legend placed "best" still covers curves that fill the
    panel, such as a loss falling from corner to corner)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncols=min(entries, 4), frameon=False,
              borderaxespad=0)


def _log10_cells(values: np.ndarray) -> tuple[np.ma.MaskedArray, float, float, str]:
    """log10 of ``values`` with sentinels: 0 below the colour range, +Inf above it, the rest masked."""
    values = np.asarray(values, dtype=float)
    out = np.full(values.shape, np.nan)
    pos = np.isfinite(values) & (values > 0)
    out[pos] = np.log10(values[pos])
    lo, hi = (float(out[pos].min()), float(out[pos].max())) if pos.any() else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    zero, inf = values == 0, values == np.inf
    out[zero] = lo - 1.0
    out[inf] = hi + 1.0
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    return np.ma.masked_invalid(out), lo, hi, extend[(bool(zero.any()), bool(inf.any()))]


def _layer_axis(ax: Any, steps: Sequence[int], layers: Sequence[str]) -> None:
    """Columns are probe records in time order (labelled by step); rows are layers, first layer on top."""
    n = len(layers)
    every = max(1, math.ceil(n / 40))
    ax.set_yticks(range(0, n, every))
    ax.set_yticklabels([plain(layers[i]) for i in range(0, n, every)], fontsize=8 if n <= 20 else 6)
    ax.set_ylim(n - 0.5, -0.5)
    m = len(steps)
    ticks = sorted({int(round(t)) for t in np.linspace(0, m - 1, min(m, 8))})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(steps[t]) for t in ticks])
    ax.set_xlim(-0.5, m - 0.5)
    ax.set_xlabel("step")
    ax.grid(False)


def layer_heatmap(steps: Sequence[int], layers: Sequence[str], values: np.ndarray, title: str,
                  colorbar_label: str, log: bool = True) -> str | None:
    """A layers × probe steps heatmap; ``log``: log10 colour scale, else a 0–1 scale (fractions).

    None when no cell holds a value. Gray: not recorded or NaN; black: exactly 0; red: +Inf.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0 or np.all(np.isnan(values)):
        return None
    cmap = matplotlib.colormaps["viridis" if log else "magma_r"].with_extremes(bad=MISSING, under=ZERO,
                                                                               over=INFINITE)
    if log:
        cells, lo, hi, extend = _log10_cells(values)
    else:
        cells, lo, hi, extend = np.ma.masked_invalid(np.clip(values, 0.0, 1.0)), 0.0, 1.0, "neither"
    height = min(12.0, max(2.6, 0.28 * len(layers) + 1.6))
    with _figure(height) as (fig, axes):
        ax = axes[0, 0]
        im = ax.imshow(cells, aspect="auto", interpolation="nearest", cmap=cmap, vmin=lo, vmax=hi)
        _layer_axis(ax, steps, layers)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label=colorbar_label, extend=extend, pad=0.01)
        return to_base64_png(fig)


def update_ratio_lines(steps: Sequence[int], layers: Sequence[str], ratios: np.ndarray) -> str | None:
    """‖Δw‖/‖w‖ per layer over steps on a log axis, with the healthy band around 1e-3; None if none recorded."""
    ratios = np.asarray(ratios, dtype=float)
    if ratios.size == 0 or np.all(np.isnan(_positive(ratios.ravel()))):
        return None
    x = finite(steps)
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(layers), 1)))
    with _figure(4.2) as (fig, axes):
        ax = axes[0, 0]
        ax.axhspan(*HEALTHY_BAND, color="#2da44e", alpha=0.12, label="healthy band (1e-4 … 1e-2)")
        ax.axhline(HEALTHY_UPDATE_RATIO, color="#2da44e", linestyle="--", linewidth=1, label="1e-3")
        for i, name in enumerate(layers):
            ys = _positive(ratios[i])
            if not np.all(np.isnan(ys)):
                ax.plot(x, ys, color=colors[i], linewidth=1.2, marker="." if len(x) <= 60 else None,
                        label=_label(name) if len(layers) <= 12 else None)
        ax.set_yscale("log")
        _plain_ticks(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("‖Δw‖ / ‖w‖ per step")
        ax.set_title("update ratio per layer (log scale)")
        if len(layers) <= 12:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            sm = ScalarMappable(norm=Normalize(0, len(layers) - 1), cmap=matplotlib.colormaps["viridis"])
            fig.colorbar(sm, ax=ax, label="layer (0 = first in the forward pass)", pad=0.01)
        return to_base64_png(fig)


_ALARM_COLORS = ["#d1242f", "#bf8700", "#8250df", "#0969da", "#1a7f37", "#cf222e", "#953800", "#6e7781"]


def alarm_timeline(history: Sequence[dict[str, Any]], probe_steps: Sequence[int], probe_loss: Sequence[float],
                   alarms: Sequence[tuple[int, int, str]]) -> str | None:
    """The loss over steps with each alarm marked where it was raised.

    ``alarms``: ``(number, step, kind)`` — the number matches the alarm table's ``#`` column. Probe losses are
    drawn when the doctor recorded them, the per-epoch train/validation losses at each epoch's last step.
    """
    px, py = finite(probe_steps), finite(probe_loss)
    ex = finite([h.get("step") for h in history])
    train, val = finite([h.get("train_loss") for h in history]), finite([h.get("val_loss") for h in history])
    if all(np.all(np.isnan(s)) for s in (py, train, val)) and not alarms:
        return None
    with _figure(4.2) as (fig, axes):
        ax = axes[0, 0]
        drawn = []
        if not np.all(np.isnan(py)):
            ax.plot(px, py, color="#57606a", linewidth=1, label="loss (probe batches)")
            drawn.append(py)
        for ys, label, color in ((train, "train loss (epoch mean)", "#0969da"),
                                 (val, "validation loss", "#bf3989")):
            if not np.all(np.isnan(ys)):
                ax.plot(ex, ys, marker="o", markersize=4, color=color, label=label)
                drawn.append(ys)
        _use_log(ax, *drawn)
        kinds = list(dict.fromkeys(kind for _, _, kind in alarms))
        color_of = {k: _ALARM_COLORS[i % len(_ALARM_COLORS)] for i, k in enumerate(kinds)}
        for number, step, kind in alarms:
            ax.axvline(step, color=color_of[kind], linestyle=":", linewidth=1.5,
                       label=_label(f"alarm: {kind}") if kind in kinds else None)
            if kind in kinds:
                kinds.remove(kind)  # one legend entry per kind
            ax.annotate(str(number), xy=(step, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8, color=color_of[kind],
                        annotation_clip=False)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("loss and alarms (dotted lines: where each alarm was raised; numbers as in the table)", pad=14)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        return to_base64_png(fig)


# -- study figures: arms compared over seeds --------------------------------------------------------------------

ARM_CURVE_PANELS = (("val_accuracy", "validation accuracy"), ("val_loss", "validation loss"),
                    ("train_loss", "training loss (epoch mean)"))
MAX_LEGEND_ARMS = 40              # beyond this a legend would be taller than the figure
BETTER, WORSE, UNCLEAR = "#1a7f37", "#cf222e", "#57606a"


def finish_rows(fig: Figure, ax: Any, labels: Sequence[str], xlabel: str, title: str, crowded: int) -> str:
    """Label a plot of one row per item (top to bottom, smaller type beyond ``crowded`` rows) and encode it."""
    _label_rows(ax, labels, xlabel, title, crowded)
    return to_base64_png(fig)


def _label_rows(ax: Any, labels: Sequence[str], xlabel: str, title: str, crowded: int) -> None:
    n = len(labels)
    ax.set_yticks(range(n))
    ax.set_yticklabels([_short(label) for label in labels], fontsize=9 if n <= crowded else 7)
    ax.set_ylim(n - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(plain(xlabel))
    ax.set_title(plain(title))


def _short(text: str, limit: int = 60) -> str:
    """A name cut to ``limit`` characters (arm names of large grids get long), drawn literally."""
    text = str(text)
    return plain(text if len(text) <= limit else text[:limit - 1] + "…")


def _arm_colors(n: int) -> list[Any]:
    """Distinct colours for up to 20 arms (tab10/tab20), a viridis ramp beyond."""
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return list(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.95, n)))


def over_seeds(histories: Sequence[Sequence[dict[str, Any]]], key: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, min, max) of ``key`` per epoch over several runs' histories (one per seed).

    Epochs are matched by their ``epoch`` number; a run that stopped early or diverged simply has fewer finite
    values, so later epochs average over the seeds that reached them. Non-finite values are left out.
    """
    values: dict[int, list[float]] = {}
    for history in histories:
        for i, h in enumerate(history):
            epoch, v = _float(h.get("epoch", i + 1)), _float(h.get(key))
            if math.isfinite(epoch) and math.isfinite(v):
                values.setdefault(int(epoch), []).append(v)
    epochs = np.array(sorted(values), dtype=float)
    cols = [np.array(values[int(e)]) for e in epochs]
    return (epochs, np.array([c.mean() for c in cols]), np.array([c.min() for c in cols]),
            np.array([c.max() for c in cols]))


def arm_curves(arms: Sequence[tuple[str, Sequence[Sequence[dict[str, Any]]]]]) -> str | None:
    """Validation accuracy, validation loss and training loss per epoch, one colour per arm: the line is the
    mean over the arm's seeds, the band spans the lowest to the highest seed (min–max). None with no epoch."""
    if not any(history for _, histories in arms for history in histories):
        return None
    colors = _arm_colors(len(arms))
    handles: dict[str, Any] = {}
    with _figure(3.9, ncols=3) as (fig, axes):
        for ax, (key, title) in zip(axes[0], ARM_CURVE_PANELS):
            ax.set_title(title)
            drawn = []
            for (name, histories), color in zip(arms, colors):
                epochs, mean, low, high = over_seeds(histories, key)
                if epochs.size == 0:
                    continue
                (line,) = ax.plot(epochs, mean, color=color, linewidth=1.5, marker="o" if epochs.size <= 30 else None,
                                  markersize=3)
                ax.fill_between(epochs, low, high, color=color, alpha=0.15, linewidth=0)
                handles.setdefault(name, line)
                drawn += [low, high]
            if not drawn:
                _empty(ax, title)
                continue
            if key != "val_accuracy":
                _use_log(ax, *drawn)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
        if 0 < len(handles) <= MAX_LEGEND_ARMS:
            names = [name for name, _ in arms if name in handles]
            fig.legend([handles[n] for n in names], [_label(_short(n)) for n in names], loc="outside lower center",
                       ncols=min(3, len(names)), frameon=False)
        return to_base64_png(fig)


class ForestRow(NamedTuple):
    """One row of a forest plot: a label, the point estimate and its interval (None: not defined), a colour."""

    label: str
    estimate: float | None
    low: float | None
    high: float | None
    color: str = UNCLEAR


def forest_plot(rows: Sequence[ForestRow], title: str, xlabel: str) -> str | None:
    """Point estimates with their intervals, one row each, and a dashed vertical line at 0 (no difference).

    A row whose interval crosses the line shows no detectable difference. A row without an estimate says so in
    place of a point. None with no rows.
    """
    if not rows:
        return None
    with _figure(min(30.0, max(2.2, 0.38 * len(rows) + 1.4))) as (fig, axes):
        _forest_rows(axes[0, 0], rows)
        return finish_rows(fig, axes[0, 0], [r.label for r in rows], xlabel, title, crowded=20)


def forest_panels(panels: Sequence[tuple[str, Sequence[ForestRow]]], title: str) -> str | None:
    """``forest_plot`` with one panel per unit: ``panels`` are (x label, rows), so accuracy points and step
    counts never share an axis. None when no panel has rows."""
    panels = [(xlabel, rows) for xlabel, rows in panels if rows]
    if not panels:
        return None
    heights = [max(1.0, 0.38 * len(rows) + 0.9) for _, rows in panels]
    with _figure(min(30.0, sum(heights) + 0.6), nrows=len(panels)) as (fig, axes):
        for i, (xlabel, rows) in enumerate(panels):
            _forest_rows(axes[i, 0], rows)
            _label_rows(axes[i, 0], [r.label for r in rows], xlabel, title if i == 0 else "", crowded=20)
        return to_base64_png(fig)


def _forest_rows(ax: Any, rows: Sequence[ForestRow]) -> None:
    ax.axvline(0.0, color="#57606a", linewidth=1, linestyle="--", zorder=1)
    for i, row in enumerate(rows):
        est, low, high = _float(row.estimate), _float(row.low), _float(row.high)
        if math.isfinite(low) and math.isfinite(high):
            ax.hlines(i, low, high, color=row.color, linewidth=2.2, zorder=2)
            ax.vlines([low, high], i - 0.15, i + 0.15, color=row.color, linewidth=1.5, zorder=2)
        if math.isfinite(est):
            ax.plot([est], [i], "o", color=row.color, markersize=6, zorder=3)
        else:
            ax.text(0.0, i, "  no paired seeds", va="center", ha="left", fontsize=8, color=UNCLEAR)
