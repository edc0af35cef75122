"""Benchmark: does the doctor name the problem a run really has — and nothing on a healthy run?

    python bench/doctor_corpus.py [--quick] [--every 5] [--overhead 6]

Builds a corpus of short training runs over three datasets (mnist1d, digits, synthetic) and four
architectures (mlp, cnn, resnet, inception), each healthy or with ONE injected problem:

- ``vanishing``: N(0, 1) init in a deep (20-layer) sigmoid net without normalisation; also deep ReLU nets
  initialised N(0, 1/n_in) (``init.scheme=gaussian``), whose forward signal dies;
- ``exploding``: plain SGD at a learning rate far too high (``optimizer.lr=50``);
- ``dead_units``: the bias in front of the ReLUs of the first half of the hidden layers set to −10 after init
  (the norm layer's shift where there is one, else the weight layer's bias);
- ``unscaled``: ``data.scale=none`` and every input multiplied by 1000;
- ``overfitting``: a tiny training subset (``data.train_subset``) for a large model, many epochs;
- ``lr_too_low``: AdamW at 1e-6 or SGD at 1e-5.

Each run trains with the doctor attached (``tricklab.diagnose.trainer_callback.DoctorCallback``, probing every
``--every`` steps). Scoring: an alarm *detects* the injected problem when its kind is among the problem's
accepted kinds; an alarm is *explained* when it is a known consequence of the injected problem (dead ReLUs
after a learning rate of 50, say); anything else is a false positive — on a healthy run every alarm is, except
``overfitting`` when the run really ends with training accuracy 10 points above validation accuracy (the
capacity warning is advice in ``DoctorCallback.info`` since issue 15, never an alarm).
Per problem P: recall = detected runs of P / runs of P; precision = detected runs of P / (detected runs of
P + other runs carrying an unexplained alarm of one of P's kinds). The last line of stdout is a JSON object
with ``precision`` and ``recall`` (minimum over problems), the per-problem table, the healthy runs' false
alarms, the time ratio against unprobed runs (``--overhead N`` healthy runs, at ``--every`` and at the probe's
default period; median; whole runs of a few seconds, so on a shared machine the spread is wide —
``bench/probe_overhead.py`` measures the probe's cost per step precisely) and ``repair_success`` (minimum over
problems).

Repair: every problem setup is trained again under ``doctor_train(repair=True)`` (the injection at the first
attempt only: a rebuilt run starts from a fresh initialisation) and compared with its *healthy twin* — the same
run without the problem (``twin_of``: the recipe's defaults for what made the problem, a typical learning rate
for SGD, standardised inputs, no injection; for overfitting, whose small subset is the setup itself, the
textbook treatment: early stopping with patience 3). A repair succeeds when its final test accuracy is within 2
points of the twin's or above; the time ratio is the repaired run (all attempts) over the twin's run.
Runs use one torch thread and flush denormal floats to zero (see ``main``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tricklab.diagnose.probes import DEFAULT_EVERY  # noqa: E402
from tricklab.diagnose.run_doctor import doctor_train  # noqa: E402
from tricklab.diagnose.trainer_callback import DoctorCallback  # noqa: E402
from tricklab.train import train  # noqa: E402
from tricklab.train.events import Callback, TrainState  # noqa: E402


@dataclass(frozen=True)
class Problem:
    """An injected problem: the alarm kinds that name it, and those that are its known consequences."""

    name: str
    detects: frozenset[str]
    explained: frozenset[str] = frozenset()


GRADIENT_SYMPTOMS = frozenset({"plateau", "update_ratio"})
PROBLEMS: dict[str, Problem] = {p.name: p for p in (
    Problem("healthy", frozenset()),
    # the deep sigmoid nets' N(0, 1) init saturates them; the deep ReLU nets' N(0, 1/n_in) init shrinks the
    # signal layer by layer — named at step 0 as a vanishing initialisation since issue 15
    Problem("vanishing", frozenset({"vanishing_gradients", "saturation", "vanishing_init"}),
            GRADIENT_SYMPTOMS | {"dead_units", "exploding_init"}),
    # a learning rate of 50 (SGD) or 1 (Adam): named as its cause since issue 15, lr_too_high
    Problem("exploding", frozenset({"exploding_gradients", "nan_loss", "loss_spike", "update_ratio", "oscillation",
                                    "lr_too_high"}),
            frozenset({"dead_units", "saturation", "plateau", "vanishing_gradients"})),
    Problem("dead_units", frozenset({"dead_units"}), GRADIENT_SYMPTOMS | {"vanishing_gradients", "vanishing_init"}),
    Problem("unscaled", frozenset({"unscaled_inputs"}),
            frozenset({"saturation", "dead_units", "exploding_gradients", "vanishing_gradients", "update_ratio",
                       "loss_spike", "nan_loss", "oscillation", "plateau", "exploding_init", "lr_too_high"})),
    Problem("overfitting", frozenset({"overfitting"})),
    Problem("lr_too_low", frozenset({"plateau", "update_ratio", "lr_too_low"})),
)}


@dataclass(frozen=True)
class Setup:
    """One corpus run: a recipe (dotted overrides), an optional injection, and the problem it has."""

    name: str
    problem: str
    data: str
    arch: str
    overrides: tuple[str, ...]
    inject: str | None = None
    quick: bool = False
    twin: tuple[str, ...] = ()       # the healthy twin: the same run without the injected problem


# What makes each problem, undone in its healthy twin (``twin_of``): recipe keys back to the defaults (batch
# norm, He init, ReLU, AdamW 0.003), standardised inputs, no injection.
TWIN_DROPS = {
    "vanishing": ("model.norm", "init.scheme", "model.activation"),
    "exploding": ("optimizer.lr",),
    "lr_too_low": ("optimizer.lr",),
}
TYPICAL_LR = {"sgd": "0.1", "momentum": "0.05"}  # the twin's rate for these (the recipe's 0.003 suits Adam)


def twin_of(problem: str, overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The healthy twin's overrides. Overfitting has no twin on more data — the small subset is the setup —
    so its twin is the textbook treatment of it: early stopping (patience 3, best weights restored)."""
    drops = TWIN_DROPS.get(problem, ())
    out = tuple(o for o in overrides if o.split("=", 1)[0] not in drops)
    if problem in ("lr_too_low", "exploding"):
        name = next((o.split("=", 1)[1] for o in overrides if o.startswith("optimizer.name=")), None)
        if name in TYPICAL_LR:
            out += (f"optimizer.lr={TYPICAL_LR[name]}",)
    if problem == "unscaled":
        out = tuple(o for o in out if o != "data.scale=none") + ("data.scale=standard",)
    if problem == "overfitting":
        out += ("early_stopping.patience=3",)
    return out


RAW1000 = "raw1000:"  # marks a data file written at run time: the dataset's inputs × 1000 (``raw_times_1000``)
DATA = {  # the three datasets, ~1,300–3,600 training examples each
    "digits": ("data.name=digits",),                                   # 1,797 8×8 images, 10 classes
    "mnist1d": ("data.name=mnist1d",),                                 # 5,000 signals of length 40, 10 classes
    "synthetic": ("data.name=synthetic", "data.variant=teacher", "data.size=5000"),  # 20 features, 10 classes
}


def corpus() -> list[Setup]:
    """The setups (~100); ``quick`` marks about a third of them (every problem, every dataset)."""
    out: list[Setup] = []

    def add(problem: str, data: str, arch: str, *ov: str, inject: str | None = None, tag: str = "") -> None:
        name = f"{problem}/{data}/{arch}{'/' + tag if tag else ''}"
        quick = len([s for s in out if s.problem == problem]) % 3 == 0
        base = (RAW1000 + data,) if inject == "times1000" else DATA[data]   # ×1000 lives in the data file
        overrides = (*base, *ov)
        out.append(Setup(name, problem, data, arch, overrides, None if inject == "times1000" else inject, quick,
                         twin_of(problem, overrides)))

    datasets = ("digits", "mnist1d", "synthetic")
    for data in datasets:  # healthy: the defaults (batch norm, He init, AdamW 0.003, one-cycle), short
        add("healthy", data, "cnn", "model.name=cnn", "epochs=4")
        add("healthy", data, "mlp", "model.name=mlp", "model.width=64", "epochs=4")
        add("healthy", data, "resnet", "model.name=resnet", "model.depth=20", "epochs=4", tag="d20")
        add("healthy", data, "inception", "model.name=inception", "model.depth=3", "epochs=4")
        add("healthy", data, "mlp", "model.name=mlp", "model.width=64", "model.activation=tanh", "init.scheme=lecun",
            "model.norm=none", "epochs=4", tag="tanh")
        add("healthy", data, "cnn", "model.name=cnn", "model.norm=none", "epochs=4", tag="nonorm")
    for data in datasets:
        add("healthy", data, "mlp", "model.name=mlp", "model.width=64", "model.activation=sigmoid",
            "init.scheme=glorot", "epochs=4", tag="sigmoid")
    add("healthy", "mnist1d", "cnn", "model.name=cnn", "optimizer.name=momentum", "optimizer.lr=0.05",
        "schedule.name=cosine", "epochs=6", tag="momentum-cosine")
    add("healthy", "digits", "mlp", "model.name=mlp", "model.width=128", "model.dropout=0.3",
        "model.activation=leaky_relu", "epochs=4", tag="dropout-leaky")
    add("healthy", "synthetic", "resnet", "model.name=resnet", "model.depth=8", "model.norm=none",
        "model.activation=gelu", "epochs=4", tag="nonorm-gelu")
    add("healthy", "mnist1d", "inception", "model.name=inception", "model.depth=3", "schedule.name=constant",
        "optimizer.lr=0.001", "epochs=4", tag="constant-lr")
    for data in datasets:
        deep = ("model.depth=10", "model.norm=none", "init.scheme=normal", "model.activation=sigmoid", "epochs=8")
        add("vanishing", data, "mlp", "model.name=mlp", "model.width=64", *deep, tag="sigmoid")
        add("vanishing", data, "cnn", "model.name=cnn", "model.width=16", *deep, tag="sigmoid")
        add("vanishing", data, "inception", "model.name=inception", "model.width=64", "model.depth=6",
            *deep[1:], tag="sigmoid")  # 16 channels per branch: fan-in large enough for N(0, 1) to saturate
        add("vanishing", data, "mlp", "model.name=mlp", "model.width=64", "model.depth=20", "model.norm=none",
            "init.scheme=gaussian", "epochs=8", tag="relu-gaussian")
    for data in datasets:
        for arch in ("mlp", "cnn", "resnet", "inception"):
            extra = ("model.width=64",) if arch == "mlp" else ()
            add("exploding", data, arch, f"model.name={arch}", *extra, "optimizer.name=sgd", "optimizer.lr=50",
                "epochs=3")
        add("exploding", data, "cnn", "model.name=cnn", "optimizer.name=adam", "optimizer.decay=l2",
            "optimizer.lr=1", "epochs=3", tag="adam")
    for data in datasets:
        add("dead_units", data, "mlp", "model.name=mlp", "model.width=64", "model.norm=none", "epochs=3",
            inject="kill_relus")
        add("dead_units", data, "cnn", "model.name=cnn", "epochs=3", inject="kill_relus")
        add("dead_units", data, "resnet", "model.name=resnet", "model.depth=8", "epochs=3", inject="kill_relus")
        add("dead_units", data, "inception", "model.name=inception", "model.depth=3", "epochs=3", inject="kill_relus")
    for data in datasets:
        add("unscaled", data, "mlp", "model.name=mlp", "model.width=64", "data.scale=none", "epochs=3",
            inject="times1000")
        add("unscaled", data, "cnn", "model.name=cnn", "data.scale=none", "epochs=3", inject="times1000")
        add("unscaled", data, "inception", "model.name=inception", "model.depth=3", "data.scale=none", "epochs=3",
            inject="times1000")
        add("unscaled", data, "mlp", "model.name=mlp", "model.width=64", "model.activation=tanh", "model.norm=none",
            "init.scheme=lecun", "data.scale=none", "epochs=3", inject="times1000", tag="tanh")
    for data in datasets:
        add("overfitting", data, "mlp", "model.name=mlp", "model.width=512", "data.train_subset=60", "epochs=20")
        add("overfitting", data, "cnn", "model.name=cnn", "model.width=64", "data.train_subset=60", "epochs=20")
        add("overfitting", data, "resnet", "model.name=resnet", "model.width=64", "model.depth=8",
            "data.train_subset=60", "epochs=20")
        add("overfitting", data, "inception", "model.name=inception", "model.width=64", "model.depth=3",
            "data.train_subset=60", "epochs=20")
    for data in datasets:
        add("lr_too_low", data, "cnn", "model.name=cnn", "optimizer.lr=1e-6", "epochs=3")
        add("lr_too_low", data, "mlp", "model.name=mlp", "model.width=64", "optimizer.name=sgd", "optimizer.lr=1e-5",
            "epochs=3")
        add("lr_too_low", data, "inception", "model.name=inception", "model.depth=3", "optimizer.lr=1e-6", "epochs=3")
        add("lr_too_low", data, "resnet", "model.name=resnet", "model.depth=8", "optimizer.name=momentum",
            "optimizer.lr=1e-6", "schedule.name=constant", "epochs=3")
    return out


# -- injections -------------------------------------------------------------------------------------------
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def relu_feeders(model: nn.Module) -> list[nn.Module]:
    """The module whose output feeds each ReLU (its norm if there is one, else the weight layer), in order."""
    feeders: list[nn.Module] = []
    weight = norm = None
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            source = norm if norm is not None else weight
            if source is not None and getattr(source, "bias", None) is not None and source not in feeders:
                feeders.append(source)
            weight = norm = None
        elif isinstance(module, NORMS):
            norm = module
        elif isinstance(module, WEIGHTS):
            weight, norm = module, None
    return feeders


class Inject(Callback):
    """Injects ``kill_relus`` when fitting begins: bias −10 in front of the ReLUs of the first half of the
    hidden layers. Once per setup: it models a bad initial state, so a run the doctor rebuilds from a changed
    recipe starts from a fresh initialisation (an in-run repair rolls back to the injected state)."""

    def __init__(self, what: str) -> None:
        if what != "kill_relus":
            raise ValueError(f"unknown injection {what!r}")
        self.what = what
        self.fired = False

    def on_fit_begin(self, state: TrainState) -> None:
        if self.fired:
            return
        self.fired = True
        with torch.no_grad():
            feeders = relu_feeders(state.model)
            for module in feeders[:max(1, len(feeders) // 2)]:
                module.bias.fill_(-10.0)


def raw_times_1000(data: str, workdir: str) -> Path:
    """An .npz of ``data``'s inputs × 1000 (train+validation as ``x``, test as ``x_test``): the unscaled-inputs
    problem lives in the data, so ``data.scale=standard`` — the doctor's repair — really fixes it."""
    import numpy as np

    from tricklab.data import load_data

    path = Path(workdir) / f"{data}-times1000.npz"
    if not path.exists():
        keys = dict(o.split("=", 1) for o in DATA[data])
        sp = load_data(keys.pop("data.name"), **{k.split(".", 1)[1]: (int(v) if v.isdigit() else v)
                                                 for k, v in keys.items()})
        x = torch.cat([sp.x_train, sp.x_val]).numpy() * 1000.0
        y = torch.cat([sp.y_train, sp.y_val]).numpy()
        np.savez(path, x=x, y=y, x_test=sp.x_test.numpy() * 1000.0, y_test=sp.y_test.numpy())
    return path


def resolve(overrides: tuple[str, ...], workdir: str) -> list[str]:
    """Overrides with the ``raw1000:`` marker replaced by the data file's keys."""
    out: list[str] = []
    for o in overrides:
        if o.startswith(RAW1000):
            out += ["data.name=npz", f"data.path={raw_times_1000(o[len(RAW1000):], workdir)}"]
        else:
            out.append(o)
    return out


# -- running and scoring -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    setup: Setup
    kinds: list[str]
    alarms: list[dict[str, Any]]
    seconds: float
    status: str
    num_params: int
    num_examples: int
    detected: bool = False
    unexplained: list[str] = field(default_factory=list)
    repair: Repair | None = None
    final_gap: float = 0.0           # training − validation accuracy at the last epoch


@dataclass
class Repair:
    """The same setup trained with ``repair=True``, against its healthy twin."""

    accuracy: float | None
    twin_accuracy: float | None
    seconds: float
    twin_seconds: float
    actions: list[str]
    attempts: int

    @property
    def success(self) -> bool:
        """Final test accuracy within 2 points of the healthy twin's (or above it)."""
        return self.accuracy is not None and self.twin_accuracy is not None and \
            self.accuracy >= self.twin_accuracy - REPAIR_TOLERANCE


REPAIR_TOLERANCE = 0.02
OVERFIT_GAP = 0.1   # AUTOTRAINER's train/test accuracy gap: a run that ends with it does overfit, injected or not
_twins: dict[tuple[str, ...], tuple[float | None, float]] = {}


def run_twin(setup: Setup, workdir: str) -> tuple[float | None, float]:
    """(test accuracy, seconds) of the healthy twin, trained once per distinct twin, without the doctor."""
    if setup.twin not in _twins:
        start = time.perf_counter()
        result = train(overrides=resolve(setup.twin, workdir), runs_root=workdir, store=None)
        _twins[setup.twin] = (result.test_accuracy, time.perf_counter() - start)
    return _twins[setup.twin]


def run_repair(setup: Setup, every: int, workdir: str) -> Repair:
    """The setup under ``doctor_train(repair=True)`` (the injection, if any, at the first attempt only)."""
    callbacks: list[Callback] = [Inject(setup.inject)] if setup.inject else []
    start = time.perf_counter()
    out = doctor_train(overrides=resolve(setup.overrides, workdir), repair=True, every=every, runs_root=workdir,
                       callbacks=callbacks)
    seconds = time.perf_counter() - start
    twin_accuracy, twin_seconds = run_twin(setup, workdir)
    return Repair(out.result.test_accuracy, twin_accuracy, seconds, twin_seconds,
                  [r["action"] for r in out.repairs], out.attempts)


def run_setup(setup: Setup, every: int, workdir: str, doctor: bool = True) -> Outcome:
    callbacks: list[Callback] = [Inject(setup.inject)] if setup.inject else []
    cb = DoctorCallback(every=every) if doctor else None
    if cb is not None:
        callbacks.append(cb)
    start = time.perf_counter()
    result = train(overrides=resolve(setup.overrides, workdir), runs_root=workdir, store=None, callbacks=callbacks)
    seconds = time.perf_counter() - start
    alarms = [a.brief() | {"evidence": a.evidence} for a in (cb.alarms if cb else [])]
    kinds = list(dict.fromkeys(a["kind"] for a in alarms))
    n_examples = int(result.data.get("train", result.data.get("n_train", 0)) or 0)
    out = Outcome(setup, kinds, alarms, seconds, result.status, result.num_params, n_examples)
    last = result.history[-1] if result.history else {}
    if isinstance(last.get("train_accuracy"), float) and isinstance(last.get("val_accuracy"), float):
        out.final_gap = last["train_accuracy"] - last["val_accuracy"]
    score(out)
    return out


def score(o: Outcome) -> None:
    problem = PROBLEMS[o.setup.problem]
    allowed = set(problem.detects | problem.explained)
    if o.num_examples and o.num_params > 10 * o.num_examples:
        allowed.add("too_many_parameters")  # justified on any setup
    if o.final_gap >= OVERFIT_GAP:
        allowed.add("overfitting")          # measured: the run ends with the gap that defines overfitting
    o.detected = bool(set(o.kinds) & problem.detects)
    o.unexplained = [k for k in o.kinds if k not in allowed]


def table(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name, problem in PROBLEMS.items():
        mine = [o for o in outcomes if o.setup.problem == name]
        if name == "healthy":
            clean = [o for o in mine if not o.unexplained]
            rows[name] = {"runs": len(mine), "clean": len(clean),
                          "false_alarm_rate": round(1 - len(clean) / len(mine), 3) if mine else None,
                          "false_alarms": sorted({k for o in mine for k in o.unexplained})}
            continue
        tp = sum(o.detected for o in mine)
        fp_runs = [o for o in outcomes if o.setup.problem != name and set(o.unexplained) & problem.detects]
        rows[name] = {
            "runs": len(mine), "detected": tp,
            "recall": round(tp / len(mine), 3) if mine else None,
            "precision": round(tp / (tp + len(fp_runs)), 3) if tp + len(fp_runs) else None,
            "false_positive_runs": [o.setup.name for o in fp_runs],
            "named_by": dict(sorted(_count(k for o in mine for k in o.kinds if k in problem.detects).items())),
        }
        repaired = [o.repair for o in mine if o.repair is not None]
        if repaired:
            ratios = [r.seconds / r.twin_seconds for r in repaired if r.twin_seconds > 0]
            rows[name].update(
                repair_success=round(sum(r.success for r in repaired) / len(repaired), 3),
                repair_failed=[o.setup.name for o in mine if o.repair is not None and not o.repair.success],
                repair_time_ratio={"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                                   "max": round(max(ratios), 2)} if ratios else None)
    return rows


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def overhead(setups: list[Setup], periods: list[int], workdir: str) -> dict[str, Any]:
    """Wall time of a run with the doctor / the same run without it, per probe period (median, min–max)."""
    ratios: dict[int, list[float]] = {p: [] for p in periods}
    for s in setups:
        for p in periods:
            bare = run_setup(s, p, workdir, doctor=False).seconds
            ratios[p].append(run_setup(s, p, workdir, doctor=True).seconds / bare)
    return {str(p): {"runs": len(r), "median": round(statistics.median(r), 3), "min": round(min(r), 3),
                     "max": round(max(r), 3)} for p, r in ratios.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about a third of the corpus (~2 minutes)")
    ap.add_argument("--every", type=int, default=5, help="probe period in steps (runs here are ~20 steps/epoch)")
    ap.add_argument("--overhead", type=int, default=4, help="healthy runs timed with and without the doctor")
    ap.add_argument("--only", default="", help="run only setups whose name contains this text")
    ap.add_argument("--verbose", action="store_true", help="print every alarm message")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared machine)")
    ap.add_argument("--no-repair", dest="repair", action="store_false",
                    help="skip the repair column (each problem setup trained again with repair, plus its twin)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Saturated sigmoid nets and inputs × 1000 produce denormal floats, which x86 CPUs compute up to ~100×
    # slower; flushing them to zero changes nothing the doctor judges and keeps the corpus within minutes.
    torch.set_flush_denormal(True)
    setups = [s for s in corpus() if (s.quick or not args.quick) and args.only in s.name]
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="doctor-corpus-") as workdir:
        for s in setups:
            o = run_setup(s, args.every, workdir)
            outcomes.append(o)
            mark = "ok " if (o.detected or s.problem == "healthy") and not o.unexplained else "BAD"
            print(f"{mark} {s.name:42s} {o.seconds:5.1f}s {o.status:10s} alarms={o.kinds}"
                  + (f" unexplained={o.unexplained}" if o.unexplained else ""), flush=True)
            if args.verbose:
                for a in o.alarms:
                    print(f"      [{a['kind']} @ {a['step']}] {a['message']}")
            if args.repair and s.problem != "healthy":
                r = o.repair = run_repair(s, args.every, workdir)
                print(f"    repair {'ok ' if r.success else 'BAD'} accuracy {_pct(r.accuracy)} vs twin "
                      f"{_pct(r.twin_accuracy)}; {r.seconds:.1f}s vs {r.twin_seconds:.1f}s; {r.attempts} attempt(s); "
                      f"{r.actions}", flush=True)
        periods = sorted({args.every, DEFAULT_EVERY})
        healthy = [s for s in setups if s.problem == "healthy"][: args.overhead]
        timing = overhead(healthy, periods, workdir) if healthy else None   # --only may select no healthy setup
    rows = table(outcomes)
    wall = time.perf_counter() - started
    problems = [k for k in rows if k != "healthy" and rows[k]["runs"]]
    print()
    print(f"{'problem':12s} {'runs':>4s} {'detected':>8s} {'recall':>6s} {'precision':>9s} {'repaired':>8s} "
          f"{'time ratio (median [min–max])':>30s}  named by")
    for k in problems:
        r = rows[k]
        t = r.get("repair_time_ratio")
        times = f"{t['median']} [{t['min']}–{t['max']}]" if t else "-"
        repaired = f"{r['repair_success']:.2f}" if "repair_success" in r else "-"
        print(f"{k:12s} {r['runs']:4d} {r['detected']:8d} {r['recall']:6.2f} {r['precision'] or 0:9.2f} "
              f"{repaired:>8s} {times:>30s}  {r['named_by']}")
    h = rows["healthy"]
    print(f"{'healthy':12s} {h['runs']:4d} clean {h['clean']}/{h['runs']}  false alarms: {h['false_alarms'] or 'none'}")
    datasets = sorted({s.data for s in setups})
    archs = sorted({s.arch for s in setups})
    print(f"{len(setups)} runs over {datasets} × {archs}; {wall:.0f} s wall; probe every {args.every} steps; "
          f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s), torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    for period, t in (timing or {}).items():
        print(f"time with the doctor / without, probing every {period} steps: median {t['median']} "
              f"[{t['min']}–{t['max']}] over {t['runs']} healthy runs (whole runs: data, training, checkpoints)")
    precision = min(((rows[k]["precision"] if rows[k]["precision"] is not None else 0.0) for k in problems),
                    default=None)
    recall = min((rows[k]["recall"] for k in problems), default=None)
    repair_success = min((rows[k]["repair_success"] for k in problems if "repair_success" in rows[k]), default=None)
    print(f"repair success = final test accuracy within {REPAIR_TOLERANCE * 100:.0f} points of the healthy twin "
          f"(or above); time ratio = repaired run (all attempts) / twin")
    print(json.dumps({"precision": precision, "recall": recall, "repair_success": repair_success,
                      "runs": len(setups), "wall_seconds": round(wall, 1),
                      "healthy_false_alarm_rate": h["false_alarm_rate"], "every": args.every, "problems": rows,
                      "time_ratio": timing}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
