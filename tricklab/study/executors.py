"""Executors: how a study's trials get trained. One interface, several back ends.

``Executor.run(tasks, on_start, on_done)`` trains every ``TrialTask`` and hands each ``TrialOutcome`` back
to the driver as soon as it is known; the driver alone writes the store. A trial whose worker raises or dies
comes back ``failed`` with the error text; the study goes on. A diverged trial is a result, not a failure.

- ``local``: a process pool (``spawn``), one worker per core by default, each worker limited to
  cores/workers torch threads so that workers do not fight over cores.
- ``ray``: one Ray task per trial (``num_cpus=1``), connecting to ``address`` (spec), else ``RAY_ADDRESS``,
  else a local Ray started for the study.
- A batched executor that trains many trials as one population fits the same interface: it receives the
  whole task list and may train several tasks at once before reporting them.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tricklab.errors import InputError


@dataclass(frozen=True)
class TrialTask:
    """One (arm, seed) to train: its fully resolved recipe, that recipe's hash (``recipe.identity``) and its run
    directory, whose name ends in the hash."""

    arm: str
    seed: int
    recipe: dict[str, Any]
    run_dir: str
    trial_hash: str = ""
    threads: int = 1
    tensorboard: bool = False      # log live to RUN_DIR/tensorboard (not part of the trial's identity)


@dataclass
class TrialOutcome:
    arm: str
    seed: int
    status: str                    # completed | stopped_early | diverged | failed
    result: dict[str, Any] | None = None
    metrics: list[tuple[int, int | None, str, float | None]] = field(default_factory=list)
    error: str | None = None


def run_trial(task: TrialTask) -> TrialOutcome:
    """Train one trial (in whatever process the executor chose), with the doctor watching. Never raises:
    errors become ``failed``.

    A run directory left by an interrupted attempt of this very trial (the same recipe and data) is resumed, not
    restarted; one holding anything else is set aside (``claim_run_dir``) and the trial starts fresh.
    """
    try:
        import torch

        from tricklab.diagnose.run_doctor import merge_alarms
        from tricklab.diagnose.trainer_callback import DoctorCallback
        from tricklab.recipe import recipe_from_dict
        from tricklab.train import train
        from tricklab.train.rows import metric_rows

        torch.set_num_threads(max(1, task.threads))
        run_dir = Path(task.run_dir)
        resumable = claim_run_dir(task)
        doctor = DoctorCallback(run_dir=run_dir)  # per-layer statistics and alarms for every trial (<= 5% time)
        callbacks = [doctor]
        if task.tensorboard:
            from tricklab.integrations.tensorboard import TensorBoardCallback

            callbacks.append(TensorBoardCallback(doctor=doctor))
        if resumable:
            result = train(resume=run_dir, callbacks=callbacks)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            result = train(recipe_from_dict(task.recipe), run_dir=run_dir, callbacks=callbacks)
        merge_alarms(result, doctor.alarms)
        return TrialOutcome(task.arm, task.seed, result.status, result.to_json(), metric_rows(result.history))
    except Exception as err:  # noqa: BLE001 - a failed trial is recorded with its error, the study goes on
        return TrialOutcome(task.arm, task.seed, "failed", error=f"{type(err).__name__}: {err}\n"
                                                                 f"{traceback.format_exc(limit=8)}")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a recipe and a checkpoint: an attempt that can be continued."""
    from tricklab.train.checkpoint import CHECKPOINT_FILES
    from tricklab.train.run import RECIPE_FILE

    return (run_dir / RECIPE_FILE).is_file() and any((run_dir / n).is_file() for n in CHECKPOINT_FILES)


def claim_run_dir(task: TrialTask) -> bool:
    """Make ``task.run_dir`` the trial's own; True when it holds an attempt of this trial to resume.

    A directory that holds a recipe, a checkpoint or a result of another recipe (``identity_problems``: any key
    differs, or the data file changed since) is never reused: it is renamed ``NAME.mismatch-N`` (kept, never
    deleted) and the trial starts fresh in an empty directory of its own name."""
    from tricklab.train.run import RECIPE_FILE, RESULT_FILE, identity_problems

    run_dir = Path(task.run_dir)
    if not run_dir.is_dir() or not any((run_dir / n).exists() for n in (RECIPE_FILE, RESULT_FILE)):
        return False
    if not identity_problems(run_dir, task.recipe):
        return has_checkpoint(run_dir)
    n = 1
    while run_dir.with_name(f"{run_dir.name}.mismatch-{n}").exists():
        n += 1
    run_dir.rename(run_dir.with_name(f"{run_dir.name}.mismatch-{n}"))
    return False


StartFn = Callable[[TrialTask], None]
DoneFn = Callable[[TrialOutcome], None]


class Executor:
    """Base interface."""

    name = "base"

    def run(self, tasks: Sequence[TrialTask], on_start: StartFn, on_done: DoneFn) -> None:
        raise NotImplementedError


def ignore_interrupts() -> None:
    """In a worker process: leave Ctrl-C to the driver. A terminal sends SIGINT to the whole process group; the
    driver alone answers it (ends every worker, marks their trials, says how to resume), so no worker prints a
    traceback of its own."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_loop(conn: Any, threads: int, trial_fn: Callable[[TrialTask], TrialOutcome]) -> None:
    """A local worker: receive a task, send back its outcome, until told to stop (None)."""
    import torch

    ignore_interrupts()
    torch.set_num_threads(threads)
    while True:
        task = conn.recv()
        if task is None:
            return
        conn.send(trial_fn(task))


class _Worker:
    def __init__(self, ctx: Any, threads: int, trial_fn: Callable[[TrialTask], TrialOutcome]) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_loop, args=(child, threads, trial_fn), daemon=True)
        self.process.start()
        child.close()
        self.task: TrialTask | None = None

    def stop(self, now: bool = False) -> None:
        stop_worker(self.conn, self.process, now)


def stop_worker(conn: Any, process: Any, now: bool = False) -> None:
    """Ask a worker process to end (``None`` on its pipe), wait up to 5 s, then kill it; ``now`` (the driver was
    interrupted): kill it at once — its trial keeps its last checkpoint (written atomically) and resumes from it."""
    if not now:
        try:
            conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        process.join(timeout=5)
    if process.is_alive():
        process.kill()
    process.join(timeout=5)


class LocalExecutor(Executor):
    """Long-lived worker processes on this machine (``spawn``), one trial at a time each.

    Each worker is watched on its own: if one dies (killed, out of memory, a crash in native code), exactly
    the trial it was running is marked failed with its exit code, a fresh worker replaces it, and the others
    keep going.
    """

    name = "local"

    def __init__(self, workers: int | None = None, trial_fn: Callable[[TrialTask], TrialOutcome] = run_trial) -> None:
        cores = os.cpu_count() or 1
        self.workers = max(1, workers or cores)
        self.threads = max(1, cores // self.workers)
        self.trial_fn = trial_fn  # a module-level function (the spawned workers import it by name)

    def run(self, tasks: Sequence[TrialTask], on_start: StartFn, on_done: DoneFn) -> None:
        from multiprocessing.connection import wait as wait_any

        ctx = get_context("spawn")
        pending = [replace(t, threads=self.threads) for t in tasks]
        workers = [_Worker(ctx, self.threads, self.trial_fn) for _ in range(min(self.workers, len(pending)))]
        try:
            while pending or any(w.task is not None for w in workers):
                for w in workers:
                    if w.task is None and pending:
                        w.task = pending.pop(0)
                        on_start(w.task)
                        w.conn.send(w.task)
                busy = [w for w in workers if w.task is not None]
                ready = wait_any([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for i, w in enumerate(workers):
                    if w.task is None or (w.conn not in ready and w.process.sentinel not in ready):
                        continue
                    task, w.task = w.task, None
                    try:
                        outcome = w.conn.recv()
                    except (EOFError, OSError):
                        w.process.join(timeout=5)
                        outcome = TrialOutcome(task.arm, task.seed, "failed",
                                               error=f"worker process died (exit code {w.process.exitcode})")
                        workers[i] = _Worker(ctx, self.threads, self.trial_fn)
                    on_done(outcome)
        except BaseException:
            for w in workers:
                w.stop(now=True)
            raise
        for w in workers:
            w.stop()


SYSTEM_RETRIES = 3
"""How often Ray runs a trial again after losing the process or node it ran on (an exception raised by the trial
itself is a failed trial, never retried here: the study's ``max_retries`` decides on the next run)."""


class RayExecutor(Executor):
    """One Ray task per trial; results stream back to the driver as they finish. ``address``: an existing
    cluster (``ray start --head`` on one machine, ``ray start --address HEAD:PORT`` on the others); trials need
    the same tricklab, data path and run directory on every node (a shared file system)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.workers = workers

    def run(self, tasks: Sequence[TrialTask], on_start: StartFn, on_done: DoneFn) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--executor", "ray is not installed; pip install 'tricklab[ray]'",
                             allowed="local, ray") from None
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count(), include_dashboard=False, ignore_reinit_error=True,
                         log_to_driver=False)
        # A trial lost with its node or worker process (a system failure, not an error of the trial) is run again
        # elsewhere: it resumes from its last checkpoint (``claim_run_dir``) and is stored once, when it returns.
        remote = ray.remote(num_cpus=1, max_retries=SYSTEM_RETRIES, retry_exceptions=False)(run_trial)
        refs: dict[Any, TrialTask] = {}
        try:
            for task in tasks:
                on_start(task)
                refs[remote.remote(task)] = task
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    task = refs.pop(ref)
                    try:
                        on_done(ray.get(ref))
                    except Exception as err:  # noqa: BLE001 - a dead worker is a failed trial
                        on_done(TrialOutcome(task.arm, task.seed, "failed", error=f"{type(err).__name__}: {err}"))
        except BaseException:
            for ref in refs:   # interrupted: end the trials still running on the cluster
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()
