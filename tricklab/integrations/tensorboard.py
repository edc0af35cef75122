"""TensorBoard export of the doctor's per-layer statistics (optional extra: ``pip install 'tricklab[tensorboard]'``).

Three ways in, one layout of tags:

- ``TensorBoardCallback(logdir)`` — a tricklab Trainer callback, live: the training loss and learning rate
  every 10 steps, every epoch's metrics, and every probe record when a ``DoctorCallback`` makes them (without a
  ``logdir``: the run directory's ``tensorboard/``; ``tricklab train --tensorboard``, ``tricklab study
  --tensorboard``);
- ``TensorBoardWriter(logdir)`` — a plain ``on_record`` hook for ``tl.watch(model, ..., on_record=writer)``
  in a hand-written loop (call ``writer.epoch(...)`` yourself for epoch metrics);
- ``export_run(run_dir, logdir)`` / ``tricklab report RUN_DIR --tensorboard LOGDIR`` — after the fact, from a
  run directory's ``probes.jsonl``, ``metrics.json`` and ``alarms.json``.

Tags (x axis: optimizer step): ``train/loss_mean`` and ``train/lr_step`` (every 10 steps, any run);
``train/loss``, ``train/grad_norm``, ``train/lr``, ``train/clip_fired`` (the doctor's probe steps);
``layers/<stat>/<layer>`` for ``grad_norm``, ``weight_norm``, ``update_ratio`` (as log10),
``act_mean``, ``act_std``, ``frac_saturated``, ``frac_dead`` — one chart per statistic with every layer on it
(TensorBoard groups tags by their prefix); ``epoch/<metric>`` per epoch; alarms as text under ``alarms``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tricklab.diagnose.records import Alarm, ProbeRecord
from tricklab.errors import InputError
from tricklab.fsutil import file_within, require_directory_path
from tricklab.train.events import Callback, TrainState

LAYER_STATS = ("grad_norm", "weight_norm", "update_ratio", "act_mean", "act_std", "frac_saturated", "frac_dead")


def require_tensorboard() -> None:
    """Refuse ``--tensorboard`` before any work when the tensorboard package is missing (exit 2, the fix named)."""
    _summary_writer_class()


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError("--tensorboard", "TensorBoard logging needs the tensorboard package",
                         allowed="pip install 'tricklab[tensorboard]'") from None
    return SummaryWriter


def _summary_writer(logdir: str | os.PathLike[str]) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError("--tensorboard", "TensorBoard export needs the tensorboard package",
                         allowed="pip install 'tricklab[tensorboard]'") from None
    return SummaryWriter(log_dir=str(logdir))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoardWriter:
    """Writes probe records, epoch metrics and alarms to one TensorBoard log directory (see the module
    docstring for the tags). Callable: ``writer(record)`` is the ``on_record`` hook of ``tl.watch``."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = Path(logdir)
        self.writer = _summary_writer(self.logdir)

    def __call__(self, record: ProbeRecord) -> None:
        self.record(record)

    def record(self, record: ProbeRecord) -> None:
        w, step = self.writer, record.step
        for tag, value in (("train/loss", record.loss), ("train/grad_norm", record.grad_norm), ("train/lr", record.lr)):
            if _finite(value):
                w.add_scalar(tag, value, step)
        if record.clip_fired is not None:
            w.add_scalar("train/clip_fired", float(record.clip_fired), step)
        for layer in record.layers:
            for stat in LAYER_STATS:
                value = getattr(layer, stat)
                if stat == "update_ratio":  # spans decades: log10, as the doctor judges it (healthy ≈ −3)
                    value = math.log10(value) if _finite(value) and value > 0 else None
                if _finite(value):
                    w.add_scalar(f"layers/{stat}/{layer.name}", value, step)

    def epoch(self, step: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key not in ("epoch", "step") and _finite(value):
                self.writer.add_scalar(f"epoch/{key}", value, step)

    def alarms(self, alarms: list[Alarm] | list[dict[str, Any]]) -> None:
        for a in alarms:
            d = a if isinstance(a, dict) else a.to_dict()
            self.writer.add_text("alarms", f"**{d.get('kind')}** (step {d.get('step')}): {d.get('message')}",
                                 int(d.get("step") or 0))

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class TensorBoardCallback(Callback):
    """Live TensorBoard logging inside tricklab's Trainer: the training loss and learning rate every ``every``
    steps (averaged on the device, one host read per ``every`` steps), every epoch's metrics, and — with a
    ``DoctorCallback`` given or among the Trainer's callbacks — every probe record and the alarms.

    ``logdir`` None: ``RUN_DIR/tensorboard`` of the run the Trainer checkpoints into (what ``tricklab train
    --tensorboard`` and a study's trials use), so ``tensorboard --logdir runs`` shows one run per run directory and
    ``--logdir runs/STUDY`` a study's trials grouped by arm."""

    SUBDIR = "tensorboard"

    def __init__(self, logdir: str | os.PathLike[str] | None = None, doctor: Any = None, every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.logdir = logdir
        self.doctor = doctor
        self.every = every
        self.tb: TensorBoardWriter | None = None
        self._seen = 0
        self._loss_sum: Any = None
        self._count = 0

    def on_fit_begin(self, state: TrainState) -> None:
        from tricklab.diagnose.trainer_callback import DoctorCallback

        if self.doctor is None:
            self.doctor = next((cb for cb in state.trainer.callbacks if isinstance(cb, DoctorCallback)), None)
        logdir = self.logdir
        if logdir is None:
            run_dir = getattr(state.trainer, "checkpoint_dir", None)
            if run_dir is None:
                raise ValueError("TensorBoardCallback() logs into the run directory; this Trainer has none "
                                 "(no checkpoint_dir): give TensorBoardCallback(logdir)")
            logdir = Path(run_dir) / self.SUBDIR
        self.tb = TensorBoardWriter(logdir)

    def on_batch_end(self, state: TrainState) -> None:
        if self.tb is None:
            return
        if state.loss is not None:
            loss = state.loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._count += 1
            if self._count == self.every:
                self.tb.writer.add_scalar("train/loss_mean", float(self._loss_sum) / self._count, state.step)
                self.tb.writer.add_scalar("train/lr_step", state.lr, state.step)
                self._loss_sum, self._count = None, 0
        doctor = self.doctor.doctor if self.doctor is not None else None
        if doctor is None or not doctor.ctx.records:
            return
        last = doctor.ctx.records[-1]
        if last.step >= self._seen:
            self.tb.record(last)
            self._seen = last.step + 1

    def on_epoch_end(self, state: TrainState) -> None:
        if self.tb is not None:
            self.tb.epoch(state.step, state.epoch_metrics)
            self.tb.writer.flush()       # what TensorBoard shows is at most one epoch old

    def on_fit_end(self, state: TrainState) -> None:
        if self.tb is None:
            return
        if self.doctor is not None:
            self.tb.alarms(self.doctor.alarms)
        self.tb.close()


def _run_files(run: Path, notes: list[str]) -> dict[str, Path | None]:
    """The files of ``run`` the export reads, each None when absent or not the run's own (a link leading outside
    the run directory, a FIFO, a device): those are never opened, and ``notes`` says why they were left out."""
    files: dict[str, Path | None] = {}
    for name in ("probes.jsonl", "metrics.json", "alarms.json"):
        try:
            files[name] = file_within(run, name, name)
        except InputError as err:
            files[name] = None
            notes.append(f"{name} is left out: {err.problem}")
    return files


def _json_list(path: Path | None, notes: list[str]) -> list[Any]:
    """The JSON list in ``path``; empty (with a note) when the file is absent, damaged or holds something else."""
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        notes.append(f"{path.name} is left out: it could not be read ({type(err).__name__})")
        return []
    if not isinstance(data, list):
        notes.append(f"{path.name} is left out: it holds a {type(data).__name__}, not a list")
        return []
    return data


def export_run(run_dir: str | os.PathLike[str], logdir: str | os.PathLike[str] | None = None, *,
               notes: list[str] | None = None) -> Path:
    """Write a run directory's probe records, epoch metrics and alarms as TensorBoard events into ``logdir``
    (default: ``RUN_DIR/tensorboard``); returns the log directory.

    Only the run's own files are read (see ``_run_files``); what was left out is appended to ``notes``. ``logdir``
    must be a directory or a path where one can be made (``--tensorboard``); event files get new names, so
    nothing already there is overwritten."""
    run, notes = Path(run_dir), notes if notes is not None else []
    out = require_directory_path(logdir if logdir is not None else run / "tensorboard", "--tensorboard",
                                 what="a directory for TensorBoard event files")
    files = _run_files(run, notes)
    probes, metrics, alarms = files["probes.jsonl"], files["metrics.json"], files["alarms.json"]
    if probes is None and metrics is None:
        raise InputError("PATH", f"{run} has neither probes.jsonl nor metrics.json: not a run directory",
                         allowed="a run directory written by tricklab train or tricklab doctor")
    tb = TensorBoardWriter(out)
    try:
        if probes is not None:
            with open(probes, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        record = ProbeRecord.from_dict(json.loads(line))
                    except (ValueError, TypeError):
                        continue  # blank, or the partial last line of a killed run
                    tb.record(record)
        for epoch in _json_list(metrics, notes):
            if isinstance(epoch, dict):
                step = epoch.get("step", epoch.get("epoch"))
                tb.epoch(int(step) if _finite(step) else 0, epoch)
        tb.alarms([a for a in _json_list(alarms, notes) if isinstance(a, dict)])
    finally:
        tb.close()
    return out
