"""The ``population`` executor: a study's trials that can share a model train together as one stacked model.

``PopulationExecutor.run`` groups the tasks by ``tricklab.population.support.population_key`` (data, architecture,
batch size, optimizer rule, device — everything a stacked model shares); trials differing only in seed,
init, learning rate and schedule, weight decay, momentum/betas, dropout, clipping threshold, early stopping or
epochs land in one group, trials with another architecture in another. Each group is cut into populations of
at most ``max_members`` (and into enough populations to keep every worker busy), and the populations run on
worker processes (``spawn``; cores/workers torch threads each, as the local executor's workers). Every member
is watched by its own doctor (per-layer probes computed per member, ``probes.jsonl`` and ``alarms.json`` in its
run directory) and reported to the driver the moment it finishes — through ``on_done``, exactly like a
sequential trial: the same result keys, metric series and alarms (only the store's ``executor`` column says
``population``).

Trained one by one, in the worker, with ``run_trial`` (the sequential path, correct first):

- recipes that set a key the engine does not honour (``population_unsupported``, an allow-list: user models,
  weight averaging and ensembles, weight normalisation, resnet/inception, any key added to the recipe since) and
  architectures ``StackedNet`` refuses;
- a trial that shares its group with no other (a population of one is an ordinary trial, with checkpoints);
- a trial whose run directory holds a checkpoint of an interrupted sequential attempt (it is resumed) or is
  locked by a process still training it (a worker left behind by a killed driver);
- the unreported members of a population whose training raised (the error is printed; the trials then
  succeed or fail on their own, as under the local executor).

Interruption: members write no checkpoints. If the driver is killed, members already reported are in the store
and the rest are trained again, from the start, by the next ``tricklab study`` (no duplicates: the driver alone
writes the store). A worker that dies fails exactly the members of its population not yet reported.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

from tricklab.study.executors import (
    DoneFn,
    Executor,
    StartFn,
    TrialOutcome,
    TrialTask,
    claim_run_dir,
    ignore_interrupts,
    run_trial,
    stop_worker,
)

MAX_MEMBERS = 64
"""Members per stacked model at most (bench/population.py: throughput per member is within 10% of its best from
K = 4 on with one thread, K = 16 with two, and no higher at 64; larger groups are split)."""


@dataclass
class _Unit:
    """What one worker trains at a time: a population (several tasks) or a single trial."""

    tasks: list[TrialTask]
    population: bool


def plan_units(tasks: Sequence[TrialTask], workers: int, max_members: int = MAX_MEMBERS) -> list[_Unit]:
    """Group ``tasks`` into populations (and single trials for what cannot be stacked), largest first."""
    from tricklab.population.support import population_key, population_unsupported
    from tricklab.recipe import recipe_from_dict

    groups: dict[str, list[TrialTask]] = {}
    singles: list[_Unit] = []
    for task in tasks:
        resumable = claim_run_dir(task)
        try:
            recipe = recipe_from_dict(task.recipe)
        except Exception:  # noqa: BLE001 - an invalid recipe fails in run_trial with its own message
            singles.append(_Unit([task], False))
            continue
        if resumable or population_unsupported(recipe) is not None:
            singles.append(_Unit([task], False))
            continue
        groups.setdefault(population_key(recipe), []).append(task)
    stacked = sum(len(g) for g in groups.values())
    target = max(1, min(max_members, math.ceil(stacked / max(1, workers))))
    units = []
    for group in groups.values():
        parts = math.ceil(len(group) / target)
        size = math.ceil(len(group) / parts)
        units += [_Unit(group[i:i + size], size > 1) for i in range(0, len(group), size)]   # one alone: sequential
    units.sort(key=lambda u: -len(u.tasks))
    return units + singles


class _DoctorObserver:
    """A member's doctor, as ``DoctorCallback`` runs it for a sequential trial (without repairs)."""

    evaluates_training_split = True

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.doctor: Any = None
        self.alarms: list[Any] = []
        self._pending: list[str] = []

    def on_start(self, num_params: int, num_examples: int) -> None:
        from tricklab.diagnose.doctor import Doctor
        from tricklab.diagnose.trainer_callback import PROBES_FILE

        self.doctor = Doctor(num_params=num_params, num_examples=num_examples)
        (self.run_dir / PROBES_FILE).unlink(missing_ok=True)

    def on_probe(self, probe: Any) -> None:
        from tricklab.diagnose.records import LayerStats, ProbeRecord

        record = ProbeRecord(step=probe.step, epoch=probe.epoch, loss=probe.loss, grad_norm=probe.grad_norm,
                             input_mean=probe.input_mean, input_std=probe.input_std,
                             input_absmax=probe.input_absmax, layers=[LayerStats(**d) for d in probe.layers],
                             clip_fired=None, lr=probe.lr)
        self._pending.append(json.dumps(record.to_dict(), allow_nan=True))
        self.alarms += self.doctor.observe(record)

    def on_epoch_end(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.alarms += self.doctor.end_epoch(epoch, step, metrics)
        self._flush()

    def on_end(self, status: str, step: int, diverged_step: int | None) -> None:
        if status == "diverged" and not any(a.kind == "nan_loss" for a in self.alarms):
            self.alarms += self.doctor.nonfinite_loss(diverged_step if diverged_step is not None else step)
        self._flush()

    def _flush(self) -> None:
        from tricklab.diagnose.trainer_callback import ALARMS_FILE, PROBES_FILE
        from tricklab.fsutil import atomic_write_text
        from tricklab.train.run import json_safe

        if self._pending:
            with open(self.run_dir / PROBES_FILE, "a", encoding="utf-8") as fh:
                fh.write("\n".join(self._pending) + "\n")
            self._pending.clear()
        atomic_write_text(self.run_dir / ALARMS_FILE,
                          json.dumps(json_safe([a.to_dict() for a in self.alarms]), indent=1))


def _outcome(task: TrialTask, result: Any, observer: _DoctorObserver) -> TrialOutcome:
    from tricklab.diagnose.run_doctor import merge_alarms
    from tricklab.train.rows import metric_rows

    merge_alarms(result, observer.alarms)
    return TrialOutcome(task.arm, task.seed, result.status, result.to_json(), metric_rows(result.history))


def train_unit(unit: _Unit, send: Any) -> None:
    """Train one unit, calling ``send(outcome)`` for every task as soon as it is known (never raises)."""
    if not unit.population:
        for task in unit.tasks:
            send(run_trial(task))
        return
    reported: set[int] = set()
    try:
        _train_population(unit.tasks, send, reported)
    except Exception as err:  # noqa: BLE001 - correct results first: the unreported members train on their own
        sys.stderr.write(f"tricklab: a population of {len(unit.tasks)} trials failed ({type(err).__name__}: {err}); "
                         f"training its {len(unit.tasks) - len(reported)} unreported trials one by one\n"
                         f"{traceback.format_exc(limit=6)}")
    for i, task in enumerate(unit.tasks):
        if i not in reported:
            send(run_trial(task))


def _train_population(tasks: list[TrialTask], send: Any, reported: set[int]) -> None:
    import torch

    from tricklab.diagnose.probes import DEFAULT_EVERY
    from tricklab.fsutil import LockBusy, exclusive_lock
    from tricklab.population.engine import PopulationMember, train_population
    from tricklab.recipe import recipe_from_dict
    from tricklab.train.run import LOCK_FILE

    torch.set_num_threads(max(1, tasks[0].threads))
    with ExitStack() as locks:
        members, index, observers = [], [], []
        for i, task in enumerate(tasks):
            run_dir = Path(task.run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            try:
                locks.enter_context(exclusive_lock(run_dir / LOCK_FILE, wait=False))
            except LockBusy:
                continue   # a process still trains it: run_trial (below, in train_unit) waits for it
            observer = _DoctorObserver(run_dir)
            members.append(PopulationMember(recipe_from_dict(task.recipe), run_dir, observer))
            index.append(i)
            observers.append(observer)
        if not members:
            return

        def done(j: int, result: Any) -> None:
            i = index[j]
            send(_outcome(tasks[i], result, observers[j]))
            reported.add(i)

        train_population(members, on_done=done, probe_every=DEFAULT_EVERY)


def _worker_loop(conn: Any, threads: int) -> None:
    """A population worker: receive a unit, send back each outcome, then ``None``; stop on ``None``."""
    import torch

    ignore_interrupts()
    torch.set_num_threads(threads)
    while True:
        unit = conn.recv()
        if unit is None:
            return
        train_unit(unit, conn.send)
        conn.send(None)


class _Worker:
    def __init__(self, ctx: Any, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_loop, args=(child, threads), daemon=True)
        self.process.start()
        child.close()
        self.unit: _Unit | None = None
        self.reported: set[tuple[str, int]] = set()

    def stop(self, now: bool = False) -> None:
        stop_worker(self.conn, self.process, now)


class PopulationExecutor(Executor):
    """Populations on worker processes (see the module docstring); ``workers`` defaults to the core count."""

    name = "population"

    def __init__(self, workers: int | None = None, *, max_members: int = MAX_MEMBERS) -> None:
        cores = os.cpu_count() or 1
        self.workers = max(1, workers or cores)
        self.threads = max(1, cores // self.workers)
        self.max_members = max(1, max_members)

    def run(self, tasks: Sequence[TrialTask], on_start: StartFn, on_done: DoneFn) -> None:
        tasks = [replace(t, threads=self.threads) for t in tasks]
        pending = plan_units(tasks, self.workers, self.max_members)
        if not pending:
            return
        ctx = get_context("spawn")
        workers = [_Worker(ctx, self.threads) for _ in range(min(self.workers, len(pending)))]
        try:
            while pending or any(w.unit is not None for w in workers):
                for w in workers:
                    if w.unit is None and pending:
                        w.unit, w.reported = pending.pop(0), set()
                        for task in w.unit.tasks:
                            on_start(task)
                        w.conn.send(w.unit)
                busy = [w for w in workers if w.unit is not None]
                ready = wait_any([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for i, w in enumerate(workers):
                    if w.unit is None or (w.conn not in ready and w.process.sentinel not in ready):
                        continue
                    self._drain(w, on_done)
                    if w.unit is not None and not w.process.is_alive():
                        for task in w.unit.tasks:
                            if (task.arm, task.seed) not in w.reported:
                                on_done(TrialOutcome(task.arm, task.seed, "failed",
                                                     error=f"worker process died (exit code {w.process.exitcode})"))
                        workers[i] = _Worker(ctx, self.threads)
        except BaseException:
            for w in workers:
                w.stop(now=True)
            raise
        for w in workers:
            w.stop()

    @staticmethod
    def _drain(w: _Worker, on_done: DoneFn) -> None:
        """Every message the worker has sent so far: outcomes, and ``None`` when its unit is done."""
        try:
            while w.unit is not None and w.conn.poll():
                message = w.conn.recv()
                if message is None:
                    w.unit = None
                    return
                w.reported.add((message.arm, message.seed))
                on_done(message)
        except (EOFError, OSError):
            w.process.join(timeout=5)
