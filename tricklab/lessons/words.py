"""Sentences built from measured numbers. Nothing here knows a result in advance: every comparison word is
chosen by the sign or size of the number it describes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from tricklab.lessons.outcome import CheckResult, LessonResult
from tricklab.lessons.tuning import grid_text, multipliers
from tricklab.lessons.verdicts import MIN_SEEDS, NO_MEANINGFUL_DIFFERENCE, NOT_SUPPORTED, SUPPORTED, OrientedEffect
from tricklab.tricks.monitor import Monitor


def num(x: float | None, digits: int = 3) -> str:
    """A number for a sentence: 3 significant digits, "—" when undefined."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def signed(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+.{digits}g}"


def interval(low: float | None, high: float | None) -> str:
    """"[a, b]"; an unbounded end (a method that cannot bound it at this n) reads −∞ or +∞."""
    def end(x: float | None) -> str:
        return ("−∞" if x < 0 else "+∞") if x is not None and math.isinf(x) else num(x)

    return f"[{end(low)}, {end(high)}]"


def effect_texts(effect: float | None, low: float | None, high: float | None) -> tuple[str, str]:
    """``("+0.059", "[0.029, 0.089]")``: an effect and its interval with the same number of decimals, chosen from
    the interval's width (one significant digit of it, plus one), so a difference of 1e-17 between two equal
    arms reads +0.0000, not -2.22e-17. Without an interval: 3 significant digits."""
    if effect is None or low is None or high is None or not all(math.isfinite(x) for x in (effect, low, high)):
        return signed(effect), interval(low, high)
    width = high - low
    if width <= 0:
        return signed(effect), interval(low, high)
    decimals = max(0, 1 - math.floor(math.log10(width)))

    def fixed(x: float, sign: bool = False) -> str:
        x = round(x, decimals) + 0.0  # + 0.0: no "-0.000"
        return f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"

    return fixed(effect, sign=True), f"[{fixed(low)}, {fixed(high)}]"


def more_or_less(x: float, more: str = "higher", less: str = "lower", same: str = "the same as") -> str:
    """``more`` for x > 0, ``less`` for x < 0, ``same`` for 0."""
    return more if x > 0 else less if x < 0 else same


def ratio_words(a: float, b: float) -> str:
    """How a compares with b as a factor: "12× larger", "0.3× (smaller)", "about equal"."""
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return "not comparable"
    r = a / b
    if 0.8 <= r <= 1.25:
        return "about equal"
    return f"{num(r, 2)}× larger" if r > 1 else f"{num(1 / r, 2)}× smaller"


def arms_label(arms: Sequence[str]) -> str:
    return arms[0] if len(arms) == 1 else "the mean of " + ", ".join(arms)


def test_set(sizes: tuple[int, int] | None) -> str:
    """"test set 359 per seed" (or "359–360"); "" when unknown."""
    if sizes is None:
        return ""
    return f"test set {sizes[0]:,} per seed" if sizes[0] == sizes[1] else f"test set {sizes[0]:,}–{sizes[1]:,}"


def interval_note(c: CheckResult) -> str:
    """What stands next to an interval: the method, the margin, the test-set size, the Holm-adjusted p."""
    o = c.oriented
    method = "t interval" if o.method == "t" else "sign-flip permutation interval"
    parts = [method, f"margin ±{num(o.margin)}", test_set(c.test_examples)]
    if o.p_holm is not None:
        parts.append(f"Holm-adjusted p {o.p_holm:.2g}")
    return ", ".join(p for p in parts if p)


def verdict_sentence(result: LessonResult, check: CheckResult | None = None) -> str:
    """The verdict of a check in words, with the numbers the rule used. In a quick run it says that the numbers
    check the machinery, not the claim."""
    c = check or result.primary
    m = c.check.measure
    o = c.oriented
    sides = (f"{arms_label(c.check.treatment)}: {num(c.treatment_mean)} vs {arms_label(c.check.baseline)}: "
             f"{num(c.baseline_mean)} ({m.label}, mean over {o.n} paired seeds)")
    direction = ("the claim predicts the first to be higher" if c.check.expects == "higher"
                 else "the claim predicts the first to be lower, so the difference is negated")
    if o.effect is None or o.ci_low is None or o.ci_high is None:
        return f"{sides}. Too few paired seeds for an interval (n = {o.n}): inconclusive."
    effect, ci = effect_texts(o.effect, o.ci_low, o.ci_high)
    numbers = f"effect {effect}, 95% CI {ci} ({interval_note(c)}; {direction})"
    pool = pool_text(c)
    if result.smoke:
        return f"{sides}; {numbers}{pool} — smoke: a quick run checks the machinery, not the claim."
    if c.pool is not None and not c.pool.agree:
        return (f"{sides}; {numbers}{pool} — the pooled parts do not agree in sign, so they are not pooled: "
                "inconclusive (see each part's own verdict).")
    return f"{sides}; {numbers}{pool} — {verdict_reason(o)}."


def pool_text(c: CheckResult) -> str:
    """"; per part: mlp +0.012, cnn −0.004; heterogeneity mlp − cnn +0.016 [0.002, 0.030]" ("" for no pool)."""
    if c.pool is None:
        return ""
    parts = ", ".join(f"{name} {signed(e)}" for name, e in c.pool.parts)
    text = f"; per part: {parts} ({'the same sign' if c.pool.agree else 'signs differ'})"
    i = c.pool.interaction
    if i is not None and i.mean_diff is not None:
        effect, ci = effect_texts(i.mean_diff, i.ci_low, i.ci_high)
        text += f"; heterogeneity {c.pool.parts[0][0]} − {c.pool.parts[1][0]}: {effect}, 95% CI {ci}"
    return text


def verdict_reason(o: OrientedEffect) -> str:
    """Why the rule gave its verdict, in words."""
    if o.verdict == SUPPORTED:
        return "the whole interval lies above 0 and reaches past the margin: supported"
    if o.verdict == NOT_SUPPORTED:
        return "the whole interval lies below 0 and reaches past the margin, the opposite of the claim: not supported"
    if o.verdict == NO_MEANINGFUL_DIFFERENCE:
        return "the whole interval lies inside ±margin: no meaningful difference"
    if o.ci_low is None or o.ci_high is None or not (math.isfinite(o.ci_low) and math.isfinite(o.ci_high)):
        return f"the method cannot bound the interval at n = {o.n}: inconclusive"
    if o.n < MIN_SEEDS:
        return f"fewer than {MIN_SEEDS} paired seeds (n = {o.n}): inconclusive"
    if o.ci_low == o.ci_high:
        return "a degenerate interval (no spread over the seeds) decides nothing: inconclusive"
    if o.p_holm is not None and o.p_holm >= 0.05 and (o.ci_low > 0 or o.ci_high < 0):
        return "the interval excludes 0, but not after Holm's correction across this lesson's checks: inconclusive"
    return "the interval contains 0 and reaches past the margin: inconclusive at this budget"


def ranking(result: LessonResult, key: str, arms: Iterable[str] | None = None, digits: int = 3) -> str:
    """Arms ordered best first by the mean of measure ``key``: "a 0.97, b 0.95, ..."."""
    measure = next(m for m in result.lesson.measures() if m.key == key)
    pairs = [(a, result.mean(key, a)) for a in (arms if arms is not None else result.arms)]
    known = [(a, v) for a, v in pairs if v is not None]
    known.sort(key=lambda p: p[1], reverse=measure.higher_is_better)
    missing = [a for a, v in pairs if v is None]
    text = ", ".join(f"{a} {num(v, digits)}" for a, v in known)
    return text + (f"; no value: {', '.join(missing)}" if missing else "")


def budget(result: LessonResult) -> str:
    v = result.lesson.variant(result.quick)
    kind = ("quick variant (smoke: it checks the machinery, not the claim; the verdict of record is the full "
            "variant)"
            if result.quick else "full variant")
    return f"{kind}: {v.seeds} seeds × {len(result.arms)} arms, {v.epochs} epochs each"


def failed_arms(result: LessonResult) -> list[str]:
    """Sentences for arms where some trials diverged or failed (these numbers matter for reading the rest)."""
    out = []
    for arm in result.arms:
        counts = result.statuses(arm)
        bad = {k: v for k, v in counts.items() if k in ("diverged", "failed")}
        if bad:
            total = sum(counts.values())
            words = " and ".join(f"{v} of {total} {k}" for k, v in bad.items())
            out.append(f"{arm}: {words}.")
    return out


def reached(result: LessonResult, metric: str, value: float, arms: Iterable[str] | None = None) -> str:
    """Per arm, how many runs reached ``metric`` at some epoch (``Monitor.reached``: >= ``value`` for an accuracy,
    <= for a loss): "a 3/10, b 10/10"."""
    monitor = Monitor(metric)
    parts = []
    for arm in arms if arms is not None else result.arms:
        histories = result.histories(arm)
        hit = sum(any(isinstance(h.get(metric), int | float) and monitor.reached(h[metric], value) for h in hist)
                  for hist in histories)
        parts.append(f"{arm} {hit}/{len(histories)}")
    return ", ".join(parts)


def tuning_sentences(result: LessonResult) -> list[str]:
    """Which LR each arm was judged at and how it was chosen, and the claim's test at one shared LR."""
    if result.tuned is None:
        return [f"Every arm trains at the learning rate the lesson gives it, untuned: {result.lesson.untuned}."]
    seeds = result.tuned[0].seeds if result.tuned else ()
    chosen = ", ".join(f"{t.arm} {num(t.lr)}" + ("" if not t.changed else f" (own {num(t.shared_lr)})")
                       for t in result.tuned)
    out = [f"Each arm at its own best learning rate, chosen on the validation split of tuning seeds "
           f"{', '.join(map(str, seeds))} (never the evaluation seeds) from its own LR × {grid_text(multipliers(result.quick))}: "
           f"{chosen}."]
    try:
        shared = result.check("shared_lr")
    except KeyError:
        return out
    out.append("At one shared learning rate (each arm at the LR the lesson gives it) — "
               + verdict_sentence(result, shared))
    if not result.smoke and shared.verdict != result.primary.verdict:
        out.append(f"The verdict depends on the learning rate: {result.primary.verdict} with each arm at its best, "
                   f"{shared.verdict} at one shared LR.")
    return out
