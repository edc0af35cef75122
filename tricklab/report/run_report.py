"""The report of one run directory: one self-contained HTML file a person can read offline.

Sections: summary, learning curves, the doctor's per-layer views (gradient norm, activation statistics à la
fastai's ``ActivationStats`` "colorful dimension", update ratio), alarms (timeline on the loss and a table),
the resolved recipe, the environment. A section whose data the run did not record says so instead of failing.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.fsutil import atomic_write_text
from tricklab.report import plots
from tricklab.report.html import (
    Markup,
    bullet_list,
    image,
    join,
    key_value_table,
    not_recorded,
    note,
    page,
    paragraph,
    preformatted,
    section,
    status_badge,
    subsection,
    table,
)
from tricklab.report.outputs import claim_output
from tricklab.report.run_files import ProbeSeries, RunFiles, as_float, as_step, read_run_dir

REPORT_FILE = "report.html"
HEATMAP_CAPTION = ("Rows: weight layers in forward order (first on top); columns: probe steps. "
                   "Gray: not recorded or NaN; black: exactly 0; red: infinite.")


def _num(value: Any, spec: str = ".4f") -> str:
    f = as_float(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return "—"
    return format(f, spec) if math.isfinite(f) else str(value)


def _int(value: Any) -> str:
    f = as_float(value)
    return f"{int(f):,}" if math.isfinite(f) else "—"


def _data_summary(data: Any) -> str:
    if not isinstance(data, dict) or not data:
        return "—"
    parts = [str(data.get("name", "?"))]
    sizes = [f"{data[k]} {k}" for k in ("train", "val", "test") if data.get(k) is not None]
    if sizes:
        parts.append(" / ".join(sizes))
    if data.get("input_shape") is not None:
        parts.append(f"input shape {tuple(data['input_shape'])}")
    if data.get("num_classes") is not None:
        parts.append(f"{data['num_classes']} classes")
    classes = data.get("classes")
    if isinstance(classes, list) and classes:
        shown = ", ".join(str(c) for c in classes[:20]) + (", …" if len(classes) > 20 else "")
        parts.append(f"classes: {shown}")
    return "; ".join(parts)


def _summary(run: RunFiles) -> Markup:
    r = run.result or {}
    last = run.history[-1] if run.history else {}
    recipe = r.get("recipe") if isinstance(r.get("recipe"), dict) else {}
    status = r.get("status") if run.result else "unknown (no result.json)"
    stop = f" — {r['stop_reason']}" if r.get("stop_reason") else ""
    if r.get("diverged_step") is not None:
        stop += f" (diverged at step {r['diverged_step']})"
    wall = as_float(r.get("wall_seconds"))
    rows: list[tuple[Any, Any]] = [
        ("status", join([status_badge(status), stop])),
        ("run name", recipe.get("name", "—")),
        ("test accuracy", _num(r.get("test_accuracy"))),
        ("test loss", _num(r.get("test_loss"))),
        ("validation accuracy / loss", f"{_num(r.get('val_accuracy', last.get('val_accuracy')))} / "
                                       f"{_num(r.get('val_loss', last.get('val_loss')))}"),
        ("best epoch", r.get("best_epoch", "—") if run.result else "—"),
        ("epochs / steps", f"{r.get('epochs', len(run.history))} / {r.get('steps', last.get('step', '—'))}"),
        ("wall time", f"{wall:.1f} s" if math.isfinite(wall) else "—"),
        ("parameters", _int(r.get("num_params"))),
        ("data", _data_summary(r.get("data"))),
        ("device", r.get("device", "—")),
        ("run id", run.run_id),
        ("run directory", str(run.path)),
    ]
    return key_value_table(rows)


def _learning_curves(run: RunFiles) -> Markup:
    png = plots.learning_curves(run.history)
    if png is None:
        return not_recorded("Per-epoch metrics", "metrics.json holds no epoch yet")
    return image(png, "learning curves: loss, accuracy, learning rate and gradient norm per epoch")


def probe_views(probes: ProbeSeries | None) -> tuple[Markup, Markup, Markup]:
    """The bodies of the per-layer sections (gradient norms, activation statistics, update ratios) of any run's
    probes; each says "not recorded" when the run has no probes. The study report shows them for one trial."""
    if probes is None:
        why = "the run was not watched by the doctor (no probes.jsonl); run it with `tricklab doctor`"
        return (not_recorded("Per-layer gradient norms", why), not_recorded("Per-layer activation statistics", why),
                not_recorded("Per-layer update ratios", why))
    steps, layers = [int(s) for s in probes.steps], probes.layers
    grad_png = plots.layer_heatmap(steps, layers, probes.stats["grad_norm"], "gradient norm ‖∇w‖₂ per layer",
                                   "log10 ‖∇w‖₂")
    grads = (join([image(grad_png, "heatmap of gradient norm per layer and step"), paragraph(HEATMAP_CAPTION,
              "muted")]) if grad_png else not_recorded("Per-layer gradient norms", "probes hold no gradient norm"))

    act, pre = probes.stats["act_std"], probes.stats["pre_std"]
    no_act = np.all(np.isnan(act), axis=1)
    std = np.where(no_act[:, None], pre, act)
    std_layers = [f"{name} (pre-act.)" if no_act[i] else name for i, name in enumerate(layers)]
    parts: list[Any] = []
    std_png = plots.layer_heatmap(steps, std_layers, std, "standard deviation of activations per layer",
                                  "log10 std")
    if std_png:
        parts += [image(std_png, "heatmap of activation standard deviation per layer and step"),
                  paragraph("The “colorful dimension” view (fastai ActivationStats), from summary statistics: "
                            "the std of each layer's activations after its nonlinearity; layers marked (pre-act.) "
                            "have none (e.g. the logits), their output's std is shown. A healthy network keeps "
                            "similar colours down the rows; a fade towards the bottom is vanishing signal. "
                            + HEATMAP_CAPTION, "muted")]
    for stat, title, meaning in (
            ("frac_dead", "fraction of dead units per layer",
             "share of units (channels) never positive on the probe batch — ReLU family only"),
            ("frac_saturated", "fraction of saturated activations per layer",
             "share of activations with |tanh| > 0.97 or sigmoid within 0.03 of 0 or 1")):
        if probes.recorded(stat):
            png = plots.layer_heatmap(steps, layers, probes.stats[stat], title, "fraction", log=False)
            if png:
                parts += [subsection(title), image(png, f"heatmap of {title}"),
                          paragraph(f"{meaning.capitalize()}. 0 = light, 1 = dark; gray: not recorded.", "muted")]
        else:
            parts.append(not_recorded(title.capitalize(), "no layer of this run has that activation family"))
    acts = join(parts) if std_png else join([not_recorded("Activation statistics"), *parts])

    ratio_png = plots.update_ratio_lines(steps, layers, probes.stats["update_ratio"])
    ratios = (join([image(ratio_png, "update ratio per layer over steps, log scale"),
                    paragraph("‖Δw‖/‖w‖ of each optimizer step. Around 1e-3 (the green band spans a decade either "
                              "side) is the usual healthy range: far below, the layer hardly learns; far above, "
                              "updates are too large for the weights.", "muted")])
              if ratio_png else not_recorded("Per-layer update ratios", "the probes did not see an optimizer step"))
    return grads, acts, ratios


def _alarms(run: RunFiles) -> Markup:
    marks = [(i + 1, step, str(a.get("kind"))) for i, a in enumerate(run.alarms)
             if (step := as_step(a.get("step"))) is not None]
    probe_steps, probe_loss = ([], []) if run.probes is None else (run.probes.steps, run.probes.loss)
    png = plots.alarm_timeline(run.history, probe_steps, probe_loss, marks)
    timeline = image(png, "loss over steps with alarms marked") if png else Markup("")
    if not run.alarms:
        return join([timeline, paragraph("No alarm was raised.", "muted")])
    rows = []
    for i, a in enumerate(run.alarms):
        layers = a.get("layers") if isinstance(a.get("layers"), list) else []
        layer = a.get("layer")
        layer_text = ", ".join(str(x) for x in ([layer] if layer else []) + [x for x in layers if x != layer])
        advice = a.get("advice") if isinstance(a.get("advice"), list) else []
        evidence = a.get("evidence") if isinstance(a.get("evidence"), dict) else {}
        evidence_text = ", ".join(f"{k} = {_num(v, '.4g')}" for k, v in evidence.items())
        step = as_step(a.get("step"))
        rows.append([i + 1, a.get("kind", "—"), layer_text or "—", "run" if step is None else step,
                     join([a.get("message", ""), paragraph(f"evidence: {evidence_text}", "muted")
                           if evidence_text else ""]),
                     bullet_list(advice, "advice") if advice else "—"])
    return join([timeline, table(["#", "kind", "layer", "step", "message", "advice (best first)"], rows)])


def _recipe(run: RunFiles) -> Markup:
    if run.recipe_text is None:
        return not_recorded("Recipe", "no recipe.yaml and no recipe in result.json")
    return preformatted(run.recipe_text)


def _environment(run: RunFiles) -> Markup:
    from tricklab.provenance import environment

    env = environment()
    finished = ("—" if run.last_written is None
                else dt.datetime.fromtimestamp(run.last_written).astimezone().isoformat(timespec="seconds"))
    rows: list[tuple[Any, Any]] = [
        ("report made", dt.datetime.now().astimezone().isoformat(timespec="seconds")),
        ("run last written", finished),
        *((k, "—" if v is None else v) for k, v in env.items()),
    ]
    return join([paragraph("The software and machine that made this report (the run's own device is in the "
                           "summary).", "muted"), key_value_table(rows)])


def _lr_find(run: RunFiles) -> Markup:
    """The range test an ``optimizer.lr: auto`` run ran before training: loss against η, the η it chose."""
    data = run.lr_find or {}
    lrs, losses, raw = (data.get(k) for k in ("lrs", "losses", "raw_losses"))
    chosen = as_float(data.get("suggestion"))
    if not (isinstance(lrs, list) and isinstance(losses, list) and isinstance(raw, list) and lrs
            and len(lrs) == len(losses) == len(raw) and chosen is not None and chosen > 0):
        return not_recorded("The learning-rate range test", "lr_find.json is damaged")
    from tricklab.tricks.lr_find import LRFindResult

    def numbers(values: list[Any]) -> list[float]:   # a null (NaN/Inf in the file) stays a gap in the curve
        return [float("nan") if as_float(v) is None else float(as_float(v)) for v in values]

    curve = LRFindResult(numbers(lrs), numbers(losses), numbers(raw), chosen, bool(data.get("diverged")))
    if not all(math.isfinite(v) and v > 0 for v in curve.lrs):
        return not_recorded("The learning-rate range test", "lr_find.json holds a learning rate that is not a "
                                                            "positive number")
    import base64

    png = base64.b64encode(curve.png()).decode("ascii")
    return join([paragraph(f"optimizer.lr: auto — before training, the range test (Smith 2017) raised η from "
                           f"{curve.lrs[0]:.3g} to {curve.lrs[-1]:.3g} over {len(curve.lrs)} batches; the run trained "
                           f"with the suggestion η = {chosen:.3g} (where the smoothed loss falls fastest).", "muted"),
                 image(png, f"training loss against the learning rate; suggestion {chosen:.3g}")])


def build_run_report(run_dir: Path) -> str:
    """The HTML text of the report of one run directory (raises ``InputError`` when it is not one)."""
    run = read_run_dir(Path(run_dir))
    grads, acts, ratios = probe_views(run.probes)
    summary_parts: list[Any] = [note(n) for n in run.notes] + [_summary(run)]
    sections = [
        ("summary", "Summary", section("summary", "Summary", *summary_parts)),
        ("curves", "Learning curves", section("curves", "Learning curves", _learning_curves(run))),
        *([("lr-find", "LR range test", section("lr-find", "Learning-rate range test", _lr_find(run)))]
          if run.lr_find is not None else []),
        ("gradients", "Gradients", section("gradients", "Gradient norm per layer", grads)),
        ("activations", "Activations", section("activations", "Activation statistics per layer", acts)),
        ("updates", "Update ratios", section("updates", "Update ratio per layer", ratios)),
        ("alarms", f"Alarms ({len(run.alarms)})", section("alarms", "Alarms", _alarms(run))),
        ("recipe", "Recipe", section("recipe", "Resolved recipe", _recipe(run))),
        ("environment", "Environment", section("environment", "Environment", _environment(run))),
    ]
    recipe = (run.result or {}).get("recipe")
    name = recipe.get("name") if isinstance(recipe, dict) and recipe.get("name") else run.run_id
    status = (run.result or {}).get("status", "no result yet")
    return page(f"tricklab run report — {name}", f"run {run.run_id} · {status}", sections)


def write_run_report(run_dir: Path, out: Path | None = None, *, force: bool = False) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``) atomically; return its path.

    ``out`` may replace an earlier tricklab report only — not a result, a recipe or any other file — unless
    ``force`` (``outputs.claim_output``); that is checked before the run directory is read."""
    target = claim_output(out if out is not None else Path(run_dir) / REPORT_FILE, "--out", "html", force=force)
    atomic_write_text(target, build_run_report(Path(run_dir)))
    return target
