"""The mechanism behind a claim, per layer: the doctor's view at initialisation and during training.

``init_profile``: build a trial's model exactly as the trial does (same recipe, same seed, same init — LSUV
included), run one forward and backward pass on the first ``PROBE_BATCH`` training examples in training mode,
and read per weight layer (forward order) with the doctor's ``Probe``: the standard deviation of the layer's
activation (the output of the activation that follows it; for the logits layer, its raw output) and of the
gradient ∂L/∂W of its weights. This is Glorot & Bengio's (2010, "Understanding the difficulty of training deep
feedforward neural networks") measurement: if the activation std shrinks or grows layer after layer the signal
vanishes or explodes forward; if the gradient std changes by decades from the last layer to the first, it
vanishes or explodes backward. No training: milliseconds per model.

``training_profile``: from the probes the doctor recorded in each trial's run directory (``probes.jsonl``), the
median over the run of each layer's gradient norm, activation std and update ratio ‖Δw‖/‖w‖, then the median
over the arm's seeds. Trials trained without the doctor simply have none.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.diagnose.probes import Probe
from tricklab.recipe import Recipe

PROBE_BATCH = 256


@dataclass(frozen=True)
class InitProfile:
    """Per weight layer in forward order, at initialisation, on one batch."""

    layers: tuple[str, ...]
    act_std: tuple[float, ...]        # std of the activation after the layer (logits layer: its output)
    grad_std: tuple[float, ...]       # std of ∂L/∂W
    frac_saturated: tuple[float | None, ...]
    frac_dead: tuple[float | None, ...]
    loss: float

    def attenuation(self) -> float | None:
        """|log10(grad std of the last weight layer / grad std of the first)|: decades the gradient changes on
        its way back from the output to the input (None if either is zero or not finite)."""
        if len(self.grad_std) < 2:
            return None
        first, last = self.grad_std[0], self.grad_std[-1]
        if not (math.isfinite(first) and math.isfinite(last)) or first <= 0 or last <= 0:
            return None
        return abs(math.log10(last / first))

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "act_std": list(self.act_std), "grad_std": list(self.grad_std),
                "frac_saturated": list(self.frac_saturated), "frac_dead": list(self.frac_dead), "loss": self.loss}


class _Data:
    """Scaled splits per distinct data configuration (each loaded once per lesson)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def get(self, recipe: Recipe) -> Any:
        from tricklab.train.run import prepare_data

        key = recipe.data.model_dump_json()
        if key not in self._cache:
            self._cache[key] = prepare_data(recipe, "cpu")
        return self._cache[key]


def init_profile(recipe: Recipe, seed: int, data: _Data | None = None) -> InitProfile:
    """The per-layer profile at initialisation of ``recipe``'s model built with ``seed`` (see module docs)."""
    from tricklab.train.run import build_recipe_model

    splits = (data or _Data()).get(recipe)
    model = build_recipe_model(recipe, splits, seed)
    model.train()
    x, y = splits.x_train[:PROBE_BATCH], splits.y_train[:PROBE_BATCH]
    probe = Probe(model, every=1)
    try:
        probe.begin(0, x)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        probe.after_backward(snapshot=False)
        grad_std = {}
        for name, module, _ in probe.layers:
            grad = getattr(module, "weight", None)
            grad = None if grad is None else grad.grad
            grad_std[name] = float(grad.std(correction=0)) if grad is not None and grad.numel() else math.nan
        record = probe.after_step(loss)
    finally:
        probe.close()
    assert record is not None  # every=1: step 0 is a probe step
    layers = sorted(record.layers, key=lambda s: s.depth_index)
    return InitProfile(
        layers=tuple(s.name for s in layers),
        act_std=tuple(float(s.act_std if s.act_std is not None else s.pre_std) for s in layers),
        grad_std=tuple(grad_std.get(s.name, math.nan) for s in layers),
        frac_saturated=tuple(s.frac_saturated for s in layers),
        frac_dead=tuple(s.frac_dead for s in layers),
        loss=float(record.loss),
    )


def init_profiles(recipes: Mapping[str, Recipe], seeds: Iterable[int]) -> dict[str, dict[int, InitProfile]]:
    """``init_profile`` of every arm (name → recipe) and seed, in this process, on one torch thread."""
    data = _Data()
    seeds = list(seeds)
    threads = torch.get_num_threads()
    # One thread: these are single small batches, for which torch's intra-op threads only add synchronisation;
    # measured 1.5 s with 1 thread vs 6.8 s with 2 for the architectures lesson's 9 profiles (2-core CPU under
    # load from other jobs).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            return {arm: {seed: init_profile(recipe, seed, data) for seed in seeds}
                    for arm, recipe in recipes.items()}
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class TrainingProfile:
    """Per layer (forward order): medians over the run's probes, then over the arm's seeds; ``runs``: how many
    trials had probes."""

    layers: tuple[str, ...]
    grad_norm: tuple[float, ...]
    act_std: tuple[float, ...]
    update_ratio: tuple[float, ...]
    global_grad_norm: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "grad_norm": list(self.grad_norm), "act_std": list(self.act_std),
                "update_ratio": list(self.update_ratio), "global_grad_norm": self.global_grad_norm,
                "runs": self.runs}


def _median(values: Iterable[float]) -> float:
    kept = [v for v in values if isinstance(v, float | int) and math.isfinite(v)]
    return float(statistics.median(kept)) if kept else math.nan


def training_profile(run_dirs: Iterable[str | Path]) -> TrainingProfile | None:
    """The doctor's per-layer view of an arm from its trials' run directories (None when none has probes)."""
    from tricklab.errors import InputError
    from tricklab.report.run_files import read_run_dir

    per_run = []
    for run_dir in run_dirs:
        try:
            series = read_run_dir(Path(run_dir)).probes
        except InputError:
            continue
        if series is None or not series.layers:
            continue
        per_run.append((series.layers, {s: [_median(row) for row in series.stats[s]]
                                        for s in ("grad_norm", "act_std", "update_ratio")},
                        _median(series.grad_norm)))
    if not per_run:
        return None
    layers = per_run[0][0]
    same = [run for run in per_run if run[0] == layers]   # seeds of one arm share the architecture

    def across(stat: str) -> tuple[float, ...]:
        return tuple(_median(run[1][stat][i] for run in same) for i in range(len(layers)))

    return TrainingProfile(tuple(layers), across("grad_norm"), across("act_std"), across("update_ratio"),
                           _median(run[2] for run in same), len(same))
