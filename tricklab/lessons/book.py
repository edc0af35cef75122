"""Lay out measured lessons for the lesson book (``report.lesson_book``): sections, tables and figures."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tricklab.lessons.outcome import SMOKE_NOTE, LessonResult
from tricklab.lessons.registry import lesson_names
from tricklab.lessons.tuning import grid_text, multipliers
from tricklab.lessons.verdicts import MIN_SEEDS, SMOKE
from tricklab.lessons.words import effect_texts, interval, interval_note, num, test_set
from tricklab.report import lesson_plots, plots
from tricklab.report.lesson_book import BookImage, BookSection, BookTable, write_lesson_book
from tricklab.study.stats import ALPHA

VERDICT_COLORS = {"supported": plots.BETTER, "not_supported": plots.WORSE, "inconclusive": plots.UNCLEAR,
                  "no_meaningful_difference": plots.UNCLEAR}


def verdict_numbers(r: LessonResult) -> str:
    o = r.primary.oriented
    c = r.primary.check
    effect, ci = effect_texts(o.effect, o.ci_low, o.ci_high)
    text = (f"effect {effect}, 95% CI {ci}, n = {o.n} paired seeds ({c.measure.label}; positive = the claim holds; "
            f"{interval_note(r.primary)})")
    if r.smoke:
        text += f" — smoke: {SMOKE_NOTE}"
    return text


def _recipe_text(spec: Any) -> list[tuple[str, str]]:
    """The parts of the recipe every arm shares, from the first arm's recipe minus what the arms vary."""
    recipe = spec.arms()[0].recipe
    varied = {k for arm in spec.arms() for k in arm.overrides}

    def shown(key: str, text: str) -> str:
        return "varies by arm" if any(v == key or v.startswith(key + ".") for v in varied) else text

    d, m, o, s = recipe.data, recipe.model, recipe.optimizer, recipe.schedule
    data = d.name if d.name != "npz" else f"{Path(d.path or '').stem} (derived from digits, written as .npz)"
    extra = []
    if d.train_subset:
        extra.append(f"{d.train_subset} training examples")
    rows = [
        ("data", f"{data}; scale {shown('data.scale', d.scale)}; batch {d.batch_size}"
                 + (f"; {', '.join(extra)}" if extra else "")),
        ("model", shown("model.name", m.name) + f", depth {shown('model.depth', str(m.depth))}, width "
                  f"{shown('model.width', str(m.width or 'default'))}, activation "
                  f"{shown('model.activation', m.activation)}, norm {shown('model.norm', m.norm)}, dropout "
                  f"{shown('model.dropout', f'{m.dropout:g}')}"),
        ("init", shown("init.scheme", recipe.init.scheme)),
        ("optimizer", shown("optimizer.name", o.name) + f", lr {shown('optimizer.lr', f'{o.lr:g}')}, weight decay "
                      f"{shown('optimizer.weight_decay', f'{o.weight_decay:g}')} ({o.decay})"),
        ("schedule", shown("schedule.name", s.name)),
        ("clipping", shown("clip.mode", recipe.clip.mode)),
    ]
    return rows


def setup_rows(r: LessonResult) -> list[tuple[str, str]]:
    v = r.lesson.variant(r.quick)
    arms = "; ".join(f"{arm.name}: " + ", ".join(f"{k}={val}" for k, val in arm.overrides.items())
                     for arm in r.spec.arms())
    reused = len(r.trials) - r.trained_now
    return [
        ("variant", f"{r.variant} — {v.seeds} seeds (0–{v.seeds - 1}), {v.epochs} epochs"
                    + (" — a smoke check; the verdict of record is the full variant" if r.quick else "")),
        *_recipe_text(r.spec),
        ("arms", arms),
        ("learning rate", _lr_text(r)),
        ("trials", f"{len(r.trials)} ({r.trained_now} trained now, {reused} reused from the store), "
                   f"{r.trials_failed} failed"),
        ("runtime", f"this run: {r.seconds:.0f} s wall, {r.cpu_seconds:.0f} s CPU ({r.trained_now} trials trained); "
                    f"all trials together took {r.trial_seconds:.0f} s of worker time when they were trained"),
        ("store", f"{r.store} — study {r.spec.name}"),
    ]


def _lr_text(r: LessonResult) -> str:
    """Which LR each arm's verdict trials ran at, and how it was chosen."""
    if r.tuned is None:
        return f"untuned — {r.lesson.untuned}"
    seeds = ", ".join(map(str, r.tuned[0].seeds)) if r.tuned else "—"
    arms = "; ".join(f"{t.arm}: {num(t.lr)} (own {num(t.shared_lr)}; validation accuracy "
                     + ", ".join(f"{num(lr)} → {num(score)}" for lr, score in t.scores) + ")" for t in r.tuned)
    return (f"per arm, chosen on the validation split of tuning seeds {seeds} (not the evaluation seeds) from the "
            f"arm's own LR × {grid_text(multipliers(r.quick))}; the check shared_lr judges the claim at the arms' own LRs — {arms}")


def _summary_cell(r: LessonResult, key: str, arm: str) -> str:
    s = r.summaries.get(key, {}).get(arm)
    if s is None or s.n == 0:
        return "—"
    spread = f" ± {num(s.std)}" if s.std is not None else ""
    ci = f" {interval(s.ci_low, s.ci_high)}" if s.ci_low is not None else ""
    return f"{num(s.mean)}{spread}{ci} (n={s.n})"


def arms_table(r: LessonResult) -> BookTable:
    measures = r.lesson.measures()
    rows = []
    for arm in r.arms:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r.statuses(arm).items()))
        rows.append([arm, num(r.lr(arm)), *(_summary_cell(r, m.key, arm) for m in measures), statuses])
    notes = "; ".join(f"{m.label}: {m.note}" for m in measures if m.note)
    return BookTable(["arm", "lr", *(m.label for m in measures), "trials"], rows,
                     caption="mean ± std [95% t interval of the mean] (n seeds with a value). Test set per trial: "
                             + ", ".join(f"{a} {test_set(r.test_examples(a)) or '—'}" for a in r.arms) + ". " + notes)


def checks_table(r: LessonResult) -> BookTable:
    rows = []
    for i, c in enumerate(r.checks):
        o = c.oriented
        effect, ci = effect_texts(o.effect, o.ci_low, o.ci_high)
        rows.append([("claim test: " if i == 0 else "") + c.check.question, ", ".join(c.check.treatment),
                     ", ".join(c.check.baseline), c.check.measure.label, f"{c.check.expects} (sign {o.sign:+d})",
                     f"{num(c.treatment_mean)} vs {num(c.baseline_mean)}", str(o.n), effect, ci,
                     f"±{num(o.margin)}", o.method, "—" if o.p_holm is None else f"{o.p_holm:.2g}",
                     test_set(c.test_examples) or "—", SMOKE if r.smoke else o.verdict])
    return BookTable(["check", "treatment", "baseline", "measure", "claim expects treatment", "means", "n",
                      "effect", "95% CI", "margin", "method", "p (Holm)", "test set", "verdict"], rows,
                     caption="Each side is the mean over its arms at the same seed; effect = sign × mean(treatment − "
                             "baseline), so positive means the claim holds. The first row decides the lesson; the "
                             "others' p-values are Holm-adjusted among themselves. Method t: Student-t interval; "
                             "permutation: the sign-flip permutation test inverted (0/1 and censored measures).")


def _bounded(x: float | None) -> float | None:
    """A number the forest plot can draw: an unbounded interval end (±inf) has no bar."""
    return x if x is not None and math.isfinite(x) else None


def _images(r: LessonResult) -> list[tuple[str, BookImage]]:
    out: list[tuple[str, BookImage]] = []
    by_measure: dict[str, list[plots.ForestRow]] = {}     # one panel per measure: one unit per axis
    for c in r.checks:
        by_measure.setdefault(c.check.measure.label, []).append(plots.ForestRow(
            c.check.name, _bounded(c.oriented.effect), _bounded(c.oriented.ci_low), _bounded(c.oriented.ci_high),
            plots.UNCLEAR if r.smoke else VERDICT_COLORS.get(c.verdict, plots.UNCLEAR)))
    png = plots.forest_panels([(f"effect on {label}", rows) for label, rows in by_measure.items()],
                              "checks: oriented effect with 95% CI (right of 0 = the claim holds)")
    if png:
        out.append(("Checks", BookImage(png, f"{r.lesson.name}: forest plot of the checks",
                                        "Green: supported, red: not supported, gray: inconclusive or no meaningful difference "
                                        "(see the checks table); a bar cut off at an end the method could not bound "
                                        "is left out.")))
    m = r.primary.check.measure
    points = []
    for arm in r.arms:
        s = r.summaries.get(m.key, {}).get(arm)
        points.append(lesson_plots.ArmPoints(arm, list(r.arm_values(m, arm).values()), s.mean if s else None,
                                             s.ci_low if s else None, s.ci_high if s else None))
    png = lesson_plots.arm_strip(points, f"{m.label} per arm", m.label)
    if png:
        out.append((f"{m.label} per arm", BookImage(png, f"{r.lesson.name}: {m.label} per arm and seed",
                                                     "Small dots: seeds; diamond: mean; bar: 95% t interval.")))
    if any(c.check.measure.method == "permutation" and c.check.measure.key.startswith(("steps_to", "seconds_to"))
           for c in r.checks):
        target = (r.lesson.target or {}).get("value")
        png = lesson_plots.time_to_accuracy([(arm, r.histories(arm)) for arm in r.arms],
                                            float(target) if isinstance(target, int | float) else None)
        if png:
            out.append(("Time to accuracy", BookImage(png, f"{r.lesson.name}: validation accuracy by steps and by "
                                                           "seconds", "One line per seed, measured at epoch ends; "
                                                           "dashed: the target of the speed checks.")))
    curves = plots.arm_curves([(arm, r.histories(arm)) for arm in r.arms])
    if curves:
        out.append(("Learning curves", BookImage(curves, f"{r.lesson.name}: learning curves per arm",
                                                 "Mean over seeds; band: min–max over seeds.")))
    if r.init:
        png = lesson_plots.layer_profiles(_init_panels(r))
        if png:
            out.append(("Mechanism at initialisation (one batch, before any training)",
                        BookImage(png, f"{r.lesson.name}: per-layer activation and gradient std at init",
                                  "Mean over seeds. A flat line keeps the signal in range; a line that falls or "
                                  "climbs by decades vanishes or explodes.")))
    if any(p is not None for p in r.training.values()):
        panels = [lesson_plots.ProfilePanel(title, label, {arm: list(getattr(p, attr)) for arm, p in
                                                           r.training.items() if p is not None})
                  for title, label, attr in (("gradient norm per layer", "‖∂L/∂W‖ (median over the run)", "grad_norm"),
                                             ("update ratio per layer", "‖Δw‖/‖w‖ per step (median)", "update_ratio"),
                                             ("activation std per layer", "std (median over the run)", "act_std"))]
        png = lesson_plots.layer_profiles(panels, ncols=3)
        if png:
            out.append(("Mechanism during training (the doctor's probes)",
                        BookImage(png, f"{r.lesson.name}: per-layer statistics during training",
                                  "Per layer: the median over the run's probed steps, then over the arm's seeds. "
                                  "An update ratio near 1e-3 is the usual healthy value.")))
    return out


def _init_panels(r: LessonResult) -> list[lesson_plots.ProfilePanel]:
    """Activation std and gradient std per layer; with two factors, one pair of panels per level of the first."""
    groups: dict[str, list[str]] = {}
    for arm in r.arms:
        head = arm.split(",")[0] if "," in arm else ""
        groups.setdefault(head, []).append(arm)
    panels = []
    for head, arms in groups.items():
        prefix = f"{head}: " if head else ""
        panels.append(lesson_plots.ProfilePanel(f"{prefix}activation std per layer", "std",
                                                {a.split(",")[-1]: r.init_mean(a, "act_std") for a in arms}))
        panels.append(lesson_plots.ProfilePanel(f"{prefix}gradient std per layer", "std of ∂L/∂W",
                                                {a.split(",")[-1]: r.init_mean(a, "grad_std") for a in arms}))
    return panels


CROSS_CHECK_FILE = "lessons_keras.json"
"""The Keras cross-check's output (``bench/lessons_keras.py --out``). ``write_book`` shows it where it finds it:
beside the book, else in the source checkout's ``docs/`` (``cross_check_path``)."""


def cross_check_path(book_path: str | os.PathLike[str]) -> Path | None:
    """The cross-check JSON for a book at ``book_path``: ``lessons_keras.json`` beside the book, else the source
    checkout's ``docs/lessons_keras.json``; None when neither exists."""
    for candidate in (Path(book_path).parent / CROSS_CHECK_FILE,
                      Path(__file__).resolve().parents[2] / "docs" / CROSS_CHECK_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_cross_check(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The cross-check JSON at ``path``; None when it cannot be read or is not one (the book goes on without)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("bench") != "lessons_keras" or not isinstance(data.get("lessons"), list):
        return None
    return data


def _cross_entry(cross_check: Mapping[str, Any] | None, lesson: str) -> Mapping[str, Any] | None:
    for entry in (cross_check or {}).get("lessons", []):
        if isinstance(entry, Mapping) and entry.get("lesson") == lesson and isinstance(entry.get("checks"), list):
            return entry
    return None


def _ends(side: Mapping[str, Any]) -> tuple[float, float]:
    """An interval as the JSON holds it: a missing end is one the method could not bound (±∞)."""
    low, high = side.get("ci_low"), side.get("ci_high")
    return (-math.inf if low is None else float(low)), (math.inf if high is None else float(high))


def position(side: Mapping[str, Any]) -> str:
    """One side's oriented effect and interval and where the interval lies in the verdict rule's terms
    (``verdicts.verdict``): relative to 0 and to the margin, and which of the rule's guards spoke."""
    n, margin = int(side.get("n") or 0), float(side.get("margin") or 0.0)
    low, high = _ends(side)
    effect, ci = effect_texts(side.get("effect"), low, high)
    if not (math.isfinite(low) and math.isfinite(high)):
        where = f"the method cannot bound the interval at n = {n}"
    elif n < MIN_SEEDS:
        where = f"n = {n} paired seeds, fewer than the rule's {MIN_SEEDS}"
    elif low == high:
        where = "a degenerate interval (no spread)"
    elif -margin <= low and high <= margin:
        where = f"the interval lies inside the margin ±{num(margin)}"
    else:
        where = ("the interval lies above 0" if low > 0 else "the interval lies below 0" if high < 0
                 else f"the interval includes 0 and reaches past the margin ±{num(margin)}")
        p_holm = side.get("p_holm")
        if isinstance(p_holm, int | float) and p_holm >= ALPHA and (low > 0 or high < 0):
            where += f", but its Holm-adjusted p = {p_holm:.2g} is not below {ALPHA:g}"
        pool = side.get("pool")
        if isinstance(pool, Mapping) and not pool.get("agree_in_sign", True):
            parts = ", ".join(f"{p.get('check')} {effect_texts(p.get('effect'), None, None)[0]}"
                              for p in pool.get("parts", []))
            where += f"; the pooled models' effects differ in sign ({parts}), so the pool is not judged"
    return f"{effect} {ci} ({where})"


def disagreement(row: Mapping[str, Any]) -> str:
    """How tricklab's and Keras's judgement of one check differ, from their numbers: each side's effect,
    interval and where it lies for the verdict rule, the difference of the effects, whether the intervals
    overlap. ``row``: a check of the cross-check JSON (``check``, ``measure_label``, ``tricklab``, ``keras``)."""
    t, k = row["tricklab"], row["keras"]
    text = (f"{row.get('check')} ({row.get('measure_label') or row.get('measure')}): tricklab {t.get('verdict')}, "
            f"{position(t)}; Keras {k.get('verdict')}, {position(k)}.")
    te, ke = t.get("effect"), k.get("effect")
    if isinstance(te, int | float) and isinstance(ke, int | float):
        text += f" Keras's effect is {effect_texts(ke - te, None, None)[0]} from tricklab's"
        (tl, th), (kl, kh) = _ends(t), _ends(k)
        low, high = max(tl, kl), min(th, kh)
        text += (f"; the two intervals overlap on {interval(low, high)}." if low <= high
                 else "; the two intervals do not overlap.")
    return text


def cross_check_table(cross_check: Mapping[str, Any], entry: Mapping[str, Any]) -> BookTable:
    """The lesson's checks judged on both frameworks, side by side, with how a differing verdict differs."""
    rows = []
    for c in entry["checks"]:
        cells = []
        for side in ("tricklab", "keras"):
            s = c.get(side, {})
            effect, ci = effect_texts(s.get("effect"), *_ends(s))
            cells += [effect, ci, str(s.get("verdict"))]
        agree = c.get("tricklab", {}).get("verdict") == c.get("keras", {}).get("verdict")
        rows.append([c.get("check"), *cells, "yes" if agree else "no"])
    differing = [disagreement(c) for c in entry["checks"]
                 if c.get("tricklab", {}).get("verdict") != c.get("keras", {}).get("verdict")]
    seeds = entry.get("seeds") or []
    caption = (f"The same checks judged, by the same statistics, on Keras {cross_check.get('keras')} "
               f"({cross_check.get('keras_backend')} backend) trainings of the same arms on the same splits and batch "
               f"order (bench/lessons_keras.py): the {entry.get('variant')} variant's arms"
               + (f" on {entry['dropout_datasets']} only" if entry.get("dropout_datasets") else "")
               + f" at {len(seeds)} seeds and {entry.get('epochs')} epochs, each arm at the learning rate tricklab's "
               f"tuning chose; tricklab's numbers are those of study {entry.get('study')}. ")
    caption += (" ".join(["Where the verdicts differ:", *differing]) if differing
                else "The verdicts agree on every check.")
    differences = cross_check.get("differences") or []
    if differences:
        caption += " Known design differences between the two runs (listed by the bench, not measured one by one): " \
                   + "; ".join(map(str, differences)) + "."
    return BookTable(["check", "tricklab effect", "95% CI", "verdict", "Keras effect", "95% CI", "verdict", "agree"],
                     rows, caption=caption)


def cross_check_notes(entry: Mapping[str, Any], r: LessonResult) -> list[str]:
    """A note where the verdicts differ, and where the cross-check compared another run than this section's."""
    notes = []
    differ = [c.get("check") for c in entry["checks"]
              if c.get("tricklab", {}).get("verdict") != c.get("keras", {}).get("verdict")]
    if differ:
        notes.append(f"Keras cross-check: the verdicts differ on {len(differ)} of {len(entry['checks'])} checks "
                     f"({', '.join(map(str, differ))}) — the table \"Keras cross-check\" says how.")
    if entry.get("study") != r.spec.name:
        notes.append(f"The Keras cross-check compared tricklab's study {entry.get('study')} ({entry.get('variant')} "
                     f"variant, {len(entry.get('seeds') or [])} seeds, {entry.get('epochs')} epochs), not this "
                     f"section's run ({r.spec.name}): its tricklab numbers are that study's.")
    return notes


def book_section(r: LessonResult, book_path: Path, cross_check: Mapping[str, Any] | None = None) -> BookSection:
    """The lesson's section; with ``cross_check`` (the Keras cross-check's JSON, ``load_cross_check``) holding
    this lesson, its table and notes too."""
    number = lesson_names().index(r.lesson.name) + 1 if r.lesson.name in lesson_names() else 0
    notes = []
    if r.quick:
        notes.append("Quick variant — smoke: few seeds and epochs check the machinery (training, measures, "
                     "statistics, this report), not the claim; no verdict is given. The verdict of record is the full "
                     f"variant's (tricklab lesson {r.lesson.name}).")
    if r.trials_failed:
        notes.append(f"{r.trials_failed} trial(s) failed (an error, not a training outcome) and are left out; "
                     "re-run the lesson to retry them.")
    links = []
    if r.study_report:
        links.append(("the study's own report (every trial, alarms, per-layer views)",
                      os.path.relpath(r.study_report, book_path.parent)))
    tables = [("Checks", checks_table(r)), ("Arms", arms_table(r))]
    entry = _cross_entry(cross_check, r.lesson.name)
    if cross_check is not None and entry is not None:
        tables.append(("Keras cross-check", cross_check_table(cross_check, entry)))
        notes += cross_check_notes(entry, r)
    return BookSection(
        anchor=f"lesson-{r.lesson.name}",
        title=f"{number}. {r.lesson.name}" if number else r.lesson.name,
        title_de=r.lesson.title_de, quote_de=r.lesson.quote_de, claim=r.lesson.claim,
        definition=r.lesson.definition, verdict=r.verdict, verdict_numbers=verdict_numbers(r),
        setup=setup_rows(r), explanation=list(r.explanation),
        tables=tables,
        images=_images(r), notes=notes, links=links)


def write_book(results: Sequence[LessonResult], path: str | Path,
               cross_check: str | os.PathLike[str] | None = None) -> Path:
    """Write the lesson book of ``results`` to ``path`` and set each result's ``report`` to it. ``cross_check``:
    the Keras cross-check's JSON (default: ``cross_check_path``), shown in the sections of the lessons it holds."""
    from tricklab.provenance import environment

    path = Path(path)
    quick = any(r.quick for r in results)
    variant = "quick variant (smoke check)" if quick else "full variant"
    total = sum(r.seconds for r in results)
    subtitle = (f"{len(results)} lesson(s) · {variant} · {total:.0f} s · claims of TrainingTricks.de.md tested "
                "with seeded studies and 95% intervals")
    found = cross_check if cross_check is not None else cross_check_path(path)
    checked = load_cross_check(found) if found is not None else None
    sections = [book_section(r, path, checked) for r in results]
    env = [(k, "—" if v is None else v) for k, v in environment().items()]
    write_lesson_book(path, "tricklab lesson book", subtitle, sections, env)
    for r in results:
        r.report = str(path)
    return path
