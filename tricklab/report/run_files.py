"""Read one run directory for a report, tolerantly: what is missing or damaged becomes a note, not a crash.

A run directory (``tricklab train``) holds ``recipe.yaml``, ``metrics.json`` (one dict per epoch),
``result.json`` (``RunResult.to_json()``) and, when the doctor watched the run, ``probes.jsonl`` (one
``ProbeRecord.to_dict()`` per line) and ``alarms.json`` (a list of ``Alarm.to_dict()``). A run that is still
going (or was killed) has no ``result.json`` yet; a run without the doctor has no probes. Only a directory with
neither ``result.json`` nor ``metrics.json`` is not a run and is refused with an ``InputError``.

Only what belongs to the run is read: a file that is a link leading outside the run directory, a FIFO or a device
is left out with a note (``fsutil.file_within``) — its content never reaches a report that may be shared.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.errors import InputError
from tricklab.fsutil import file_within

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.json"
RECIPE_FILE = "recipe.yaml"
PROBES_FILE = "probes.jsonl"
ALARMS_FILE = "alarms.json"
LR_FIND_FILE = "lr_find.json"   # tricklab.train.lr_search.LR_FIND_JSON (this module reads runs without torch)

LAYER_STATS = ("pre_mean", "pre_std", "act_mean", "act_std", "frac_saturated", "frac_dead", "grad_norm",
               "weight_norm", "update_ratio")
"""The per-layer numbers of ``LayerStats`` that the report draws (layers × probe steps each)."""


def as_float(value: Any) -> float:
    """A number as a float; None, text and anything unreadable become NaN (so plots show a gap)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def as_step(value: Any) -> int | None:
    """An optimizer step as an int, or None when there is none (run-level alarms)."""
    f = as_float(value)
    return int(f) if math.isfinite(f) else None


@dataclass
class ProbeSeries:
    """The doctor's probes as arrays: one column per probe record, one row per layer in forward order.

    Columns keep the order the records were written in (time order: after a repair's rollback a step can repeat).

    ``stats[name]`` is a ``(len(layers), len(steps))`` float array for each name of ``LAYER_STATS``; a value
    the probe did not record (None, a layer absent at that step) is NaN.
    """

    steps: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    layers: list[str]
    stats: dict[str, np.ndarray]

    def recorded(self, stat: str) -> bool:
        """Whether the probes hold at least one value of ``stat`` (±Inf counts: it is evidence, not a gap)."""
        return bool(np.any(~np.isnan(self.stats[stat])))


@dataclass
class RunFiles:
    """Everything a run report needs, read from one run directory; ``notes`` says what could not be read."""

    path: Path
    result: dict[str, Any] | None
    history: list[dict[str, Any]]
    recipe_text: str | None
    probes: ProbeSeries | None
    alarms: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    last_written: float | None = None
    """When the run last wrote ``result.json`` or ``metrics.json`` (seconds since the epoch), if it did."""
    lr_find: dict[str, Any] | None = None
    """``lr_find.json`` of a run with ``optimizer.lr: auto`` (the range test it ran first), if any."""

    @property
    def run_id(self) -> str:
        return str((self.result or {}).get("run_id") or self.path.name)


def run_file(run_dir: Path, name: str, notes: list[str]) -> Path | None:
    """``run_dir/name`` when it is a regular file of the run; None when it is absent or must not be read (a link
    leading outside the run directory, a FIFO, a device, a directory), which ``notes`` then says."""
    try:
        return file_within(run_dir, name, name)
    except InputError as err:
        notes.append(f"{name} is left out: {err.problem}.")
        return None


def _read_text(path: Path | None, notes: list[str], left_out: str = "it is left out") -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        notes.append(f"{path.name} could not be read ({type(err).__name__}: {err}); {left_out}.")
        return None


def _read_json(path: Path | None, want: type, notes: list[str]) -> Any:
    text = _read_text(path, notes)
    if path is None or text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        notes.append(f"{path.name} could not be read ({type(err).__name__}: {err}); it is left out.")
        return None
    if not isinstance(data, want):
        notes.append(f"{path.name} holds a {type(data).__name__}, not a {want.__name__}; it is left out.")
        return None
    return data


def _read_probe_lines(path: Path | None, notes: list[str]) -> list[dict[str, Any]]:
    text = _read_text(path, notes, "probes are left out")
    if path is None or text is None:
        return []
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1  # typically the last line of a run killed while writing it
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        notes.append(f"{path.name}: {bad} line(s) were not a probe record and were skipped.")
    return records


def probe_series(records: list[dict[str, Any]]) -> ProbeSeries | None:
    """Arrange probe records (``ProbeRecord.to_dict()``) in time order and their layers in forward order."""
    records = [r for r in records if as_step(r.get("step")) is not None]
    if not records:
        return None
    order: dict[str, tuple[float, int]] = {}
    for r in records:
        for layer in r.get("layers") or []:
            if not isinstance(layer, dict) or "name" not in layer:
                continue
            name = str(layer["name"])
            depth = as_float(layer.get("depth_index"))
            key = (depth if math.isfinite(depth) else math.inf, len(order))
            order[name] = min(order.get(name, key), key)
    layers = sorted(order, key=order.__getitem__)
    row = {name: i for i, name in enumerate(layers)}
    stats = {s: np.full((len(layers), len(records)), np.nan) for s in LAYER_STATS}
    for j, r in enumerate(records):
        for layer in r.get("layers") or []:
            if isinstance(layer, dict) and "name" in layer:
                i = row[str(layer["name"])]
                for s in LAYER_STATS:
                    stats[s][i, j] = as_float(layer.get(s))

    def column(key: str) -> np.ndarray:
        return np.array([as_float(r.get(key)) for r in records])

    return ProbeSeries(steps=np.array([as_step(r["step"]) for r in records]), loss=column("loss"),
                       grad_norm=column("grad_norm"), lr=column("lr"), layers=layers, stats=stats)


def _merge_alarms(doctor: list[Any], brief: list[Any]) -> list[dict[str, Any]]:
    """The doctor's full alarms, plus the core's brief ones (result.json) it does not already hold."""
    merged: list[dict[str, Any]] = []
    seen: set[tuple[str, str, int | None]] = set()
    for alarm in [*doctor, *brief]:
        if not isinstance(alarm, dict):
            continue
        key = (str(alarm.get("kind")), str(alarm.get("layer")), as_step(alarm.get("step")))
        if key not in seen:
            seen.add(key)
            merged.append(alarm)
    return merged


def read_run_dir(path: Path) -> RunFiles:
    """Read a run directory; raise ``InputError("PATH", ...)`` when it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError("PATH", f"{path} does not exist; give a run directory (runs/NAME-DATE-ID)")
    if not path.is_dir():
        raise InputError("PATH", f"{path} is not a directory; give a run directory (runs/NAME-DATE-ID)")
    notes: list[str] = []
    files = {name: run_file(path, name, notes) for name in (RESULT_FILE, METRICS_FILE, RECIPE_FILE, PROBES_FILE,
                                                             ALARMS_FILE)}
    result = _read_json(files[RESULT_FILE], dict, notes)
    metrics = _read_json(files[METRICS_FILE], list, notes)
    if result is None and metrics is None:
        detail = f" ({' '.join(notes)})" if notes else ""
        raise InputError("PATH", f"{path} is not a tricklab run directory or is damaged: it has no readable "
                                 f"{RESULT_FILE} and no readable {METRICS_FILE}{detail}")
    if result is None:
        notes.append(f"{RESULT_FILE} is missing: the run may still be going or was interrupted; "
                     "the summary shows what metrics.json holds.")
    history = metrics if metrics is not None else (result or {}).get("history") or []
    history = [h for h in history if isinstance(h, dict)]
    recipe_text = _read_text(files[RECIPE_FILE], notes)
    if recipe_text is None and isinstance((result or {}).get("recipe"), dict):
        import yaml

        recipe_text = yaml.safe_dump(result["recipe"], sort_keys=False)
    probes = probe_series(_read_probe_lines(files[PROBES_FILE], notes))
    doctor_alarms = _read_json(files[ALARMS_FILE], list, notes) or []
    brief_alarms = (result or {}).get("alarms") or []
    alarms = _merge_alarms(doctor_alarms, brief_alarms if isinstance(brief_alarms, list) else [])
    written = next((f for f in (files[RESULT_FILE], files[METRICS_FILE]) if f is not None), None)
    lr_find = _read_json(run_file(path, LR_FIND_FILE, notes), dict, notes)
    return RunFiles(path=path, result=result, history=history, recipe_text=recipe_text, probes=probes,
                    alarms=alarms, notes=notes, last_written=None if written is None else written.stat().st_mtime,
                    lr_find=lr_find)
