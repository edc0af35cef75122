"""The per-trial numbers the lessons compare. Each says exactly what it counts, including the awkward cases.

A diverged run is a result, not a missing value: leaving it out would compare an unstable arm only on the
seeds where it happened to survive (survivorship bias). So accuracy counts a diverged run at chance level
(1/classes: its weights are NaN, its predictions are no better than a guess), and steps-to-target counts it
as never reaching the target. A *failed* trial (an error, not a training outcome) has no value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tricklab.lessons.lesson import Measure, TrialView
from tricklab.train.rows import EVALS
from tricklab.tricks.monitor import Monitor


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _classes(result: Mapping[str, Any]) -> int | None:
    data = result.get("data")
    n = data.get("num_classes") if isinstance(data, Mapping) else None
    return int(n) if isinstance(n, int) and n > 0 else None


def _history(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    history = result.get("history")
    return [h for h in history if isinstance(h, Mapping)] if isinstance(history, list) else []


def _accuracy(trial: TrialView) -> float | None:
    r = trial.result
    if r is None or trial.status == "failed":
        return None
    if trial.status == "diverged":
        classes = _classes(r)
        return None if classes is None else 1.0 / classes
    return _num(r.get("test_accuracy"))


TEST_ACCURACY = Measure(
    "test_accuracy", "test accuracy", Monitor("test_accuracy").higher_is_better, _accuracy,
    note="a diverged run counts at chance level (1/classes); margin 0.01 (1 accuracy point)", margin=0.01)


def _planned_steps(result: Mapping[str, Any]) -> float | None:
    """The run's budget in optimizer steps: epochs planned × steps per epoch (from the epochs it ran)."""
    history = _history(result)
    recipe = result.get("recipe")
    planned = recipe.get("epochs") if isinstance(recipe, Mapping) else None
    if not history or not isinstance(planned, int):
        return None
    first = _num(history[0].get("step"))
    return None if first is None else first * planned


def evaluations(result: Mapping[str, Any], metric: str) -> list[Mapping[str, Any]] | None:
    """Every evaluation of ``metric`` the run recorded inside its epochs (``evals_per_epoch`` > 1: the history rows'
    ``evals``, each ``{"step", "seconds", "val_loss", "val_accuracy"}``, the epoch-end one included), in order;
    None when it recorded none of ``metric`` (evaluated at epoch ends only: read the history rows)."""
    found = [e for h in _history(result) for e in (h.get(EVALS) if isinstance(h.get(EVALS), list) else [])
             if isinstance(e, Mapping)]
    return found if any(metric in e for e in found) else None


def steps_to(metric: str, value: float) -> Measure:
    """Optimizer steps until ``metric`` (a validation accuracy) first reaches ``value`` (``Monitor.reached``: at or
    above it for an accuracy, at or below for a loss).

    Where the run validated several times per epoch (``evals_per_epoch`` > 1) the first of those evaluations at
    the target counts (``evaluations``: a resolution of 1/k epoch); otherwise the epoch ends, a resolution of one
    epoch. A run that never reaches it (or diverged) counts as its whole budget of steps — censored: the true
    number is at least that, so differences can only be under-, never over-stated.
    """
    monitor = Monitor(metric)

    def fn(trial: TrialView) -> float | None:
        r = trial.result
        if r is None or trial.status == "failed":
            return None
        budget = _planned_steps(r)
        if trial.status != "diverged":
            for h in evaluations(r, metric) or _history(r):
                v, step = _num(h.get(metric)), _num(h.get("step"))
                if step is not None and monitor.reached(v, value):
                    return step
        return budget

    reach = "≥" if monitor.higher_is_better else "≤"
    return Measure(f"steps_to_{metric}_{value:g}", f"steps to {metric} {reach} {value:g}", False, fn,
                   note="evaluated at epoch ends, or evals_per_epoch times per epoch where the recipe says so; never "
                        "reached (or diverged) = the whole budget of steps (censored: judged by the sign-flip "
                        "permutation test); margin 10% of the baseline's steps",
                   method="permutation", margin=0.10, relative_margin=True)


def seconds_to(metric: str, value: float) -> Measure:
    """Training seconds (the summed ``epoch_seconds`` of the run's history, wall clock) until the per-epoch
    ``metric`` first reaches ``value`` — "faster" in the unit a person waits in, next to ``steps_to``'s unit of work.

    Evaluated at epoch ends, like ``steps_to`` — or, where the run validated several times per epoch, at the first
    of those evaluations at the target, with its ``seconds``: wall seconds of training alone (the evaluations' own
    time left out). A run that never reaches it (or diverged) counts as its whole budget — the mean seconds of its
    epochs × the planned epochs — censored, so judged by the permutation test. Wall time depends on the machine's
    load while the trial ran: the paired design compares arms at the same seed, which on a shared machine ran at
    nearby times, but the book states the load."""
    monitor = Monitor(metric)

    def fn(trial: TrialView) -> float | None:
        r = trial.result
        if r is None or trial.status == "failed":
            return None
        history = _history(r)
        recipe = r.get("recipe")
        planned = recipe.get("epochs") if isinstance(recipe, Mapping) else None
        inside = evaluations(r, metric)
        if inside is not None and history:
            times = [_num(e.get("seconds")) for e in inside]
            if any(x is None for x in times):
                return None
            if trial.status != "diverged":
                for e, x in zip(inside, times, strict=True):
                    if monitor.reached(_num(e.get(metric)), value):
                        return x
            spent = float(times[-1] or 0.0)
            return spent / len(history) * planned if isinstance(planned, int) and planned > 0 else spent
        seconds = [_num(h.get("epoch_seconds")) for h in history]
        if not history or any(x is None for x in seconds):
            return None
        elapsed = 0.0
        if trial.status != "diverged":
            for h, x in zip(history, seconds, strict=True):
                elapsed += float(x or 0.0)
                if monitor.reached(_num(h.get(metric)), value):
                    return elapsed
        spent = sum(float(x or 0.0) for x in seconds)
        return spent / len(history) * planned if isinstance(planned, int) and planned > 0 else spent

    reach = "≥" if monitor.higher_is_better else "≤"
    return Measure(f"seconds_to_{metric}_{value:g}", f"training seconds to {metric} {reach} {value:g}", False, fn,
                   note="wall seconds of training, summed over epochs up to the first epoch end at the target (with "
                        "evals_per_epoch > 1: up to the first evaluation at it, evaluations' time left out); never "
                        "reached (or diverged) = the mean epoch's seconds × the planned epochs (censored: judged by "
                        "the sign-flip permutation test); margin 10% of the baseline's seconds",
                   method="permutation", margin=0.10, relative_margin=True)


def _diverged(trial: TrialView) -> float | None:
    if trial.result is None or trial.status == "failed":
        return None
    return 1.0 if trial.status == "diverged" else 0.0


DIVERGED = Measure("diverged", "diverged (share of runs)", False, _diverged,
                   note="1 when the loss became NaN/Inf, else 0; the mean over seeds is the divergence rate "
                        "(0/1: judged by the sign-flip permutation test); margin 0.1 (one run in ten)",
                   method="permutation", margin=0.10)


def _gap(trial: TrialView) -> float | None:
    """Train accuracy of the epoch whose weights were evaluated minus the test accuracy."""
    r = trial.result
    if r is None or trial.status in ("failed", "diverged"):
        return None
    history = _history(r)
    test = _num(r.get("test_accuracy"))
    if not history or test is None:
        return None
    recipe = r.get("recipe") if isinstance(r.get("recipe"), Mapping) else {}
    stopping = recipe.get("early_stopping") if isinstance(recipe.get("early_stopping"), Mapping) else {}
    epoch = len(history)
    best = r.get("best_epoch")
    if (stopping.get("patience") or 0) > 0 and isinstance(best, int) and 1 <= best <= len(history):
        epoch = best  # early stopping restored these weights
    train = _num(history[epoch - 1].get("train_accuracy"))
    return None if train is None else train - test


GAP = Measure(
    "train_test_gap", "train − test accuracy", False, _gap,
    note="train accuracy: the mean over the minibatches of the evaluated epoch, in training mode (dropout on), "
         "of the first member for an ensemble; diverged runs have none; margin 0.01", margin=0.01)


def _eval_gap(trial: TrialView) -> float | None:
    """The run's ``train_accuracy`` (the training split evaluated after training, in eval mode, by the model whose
    test accuracy is reported) minus its ``test_accuracy``; None without both."""
    r = trial.result
    if r is None or trial.status in ("failed", "diverged"):
        return None
    train, test = _num(r.get("train_accuracy")), _num(r.get("test_accuracy"))
    return None if train is None or test is None else train - test


EVAL_GAP = Measure(
    "train_test_gap_eval", "train − test accuracy (eval mode)", False, _eval_gap,
    note="train accuracy: the whole training split evaluated after training in eval mode (dropout off, batch-norm "
         "running statistics), by the model whose test accuracy is reported — the restored best weights under early "
         "stopping, the averaged probabilities of all members for an ensemble; diverged runs have none; margin 0.01",
    margin=0.01)


def _train_loss(trial: TrialView) -> float | None:
    r = trial.result
    if r is None or trial.status in ("failed", "diverged"):
        return None
    history = _history(r)
    return _num(history[-1].get("train_loss")) if history else None


FINAL_TRAIN_LOSS = Measure("final_train_loss", "final training loss", Monitor("train_loss").higher_is_better,
                           _train_loss,
                           note="the mean over the last epoch's minibatches; diverged runs have none; margin 10% of "
                                "the baseline's loss", margin=0.10, relative_margin=True)


def _attenuation(trial: TrialView) -> float | None:
    return None if trial.init is None else trial.init.attenuation()


GRADIENT_DECADES = Measure(
    "gradient_decades", "decades of gradient change, output → first layer, at init", False, _attenuation,
    note="|log10(std ∂L/∂W of the last weight layer / std ∂L/∂W of the first)| at initialisation, one batch: "
         "0 = the gradient keeps its size through the depth; 3 = it shrinks (or grows) 1000×; margin 0.5 decades "
         "(a factor of about 3)", margin=0.5)
