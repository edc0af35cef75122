"""The records a run leaves and the store keeps: alarms, metric rows, and the rows the store's reads return.

``Alarm`` is the one alarm record from the detector that raises it to the JSON the CLI prints: the doctor's
detectors make them (with evidence and advice), ``train.run.core_alarms`` makes the core's own (divergence,
capacity), ``RunResult.alarms`` carries them, and the store keeps their ``brief()`` — the ``{kind, layer, step,
message}`` shape of the CLI contract (DESIGN.md). It lives here, in the lowest layer, so that every layer above
(train, diagnose, study, report) can name it without importing one another.

The reads (``Store.runs``, ``Store.trials``, ...) return ``TypedDict`` rows: plain JSON-shaped dicts, as every
caller (the study runner, the report, the CLI) already reads them, now with their keys and types named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

MetricRow = tuple[int, int | None, str, float | None]
"""One point of a metric series: (optimizer step, epoch, metric name, value; None where it was not finite)."""


class AlarmRow(TypedDict):
    """An alarm as the CLI prints it and the store keeps it (``Alarm.brief()``)."""

    kind: str
    layer: str | None
    step: int | None
    message: str


@dataclass
class Alarm:
    """A named problem with its evidence and what to try, ranked.

    ``kind`` is one of ``tricklab.diagnose.records.ALARM_KINDS``; ``layer`` the first affected layer (None for
    run-level problems); ``step`` where it was first seen; ``message`` one or two sentences a person understands
    (which layer, since which step, the numbers); ``evidence`` the numbers behind it; ``advice`` tricks to try,
    best first.
    """

    kind: str
    step: int | None
    message: str
    layer: str | None = None
    layers: list[str] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def brief(self) -> AlarmRow:
        """The ``{kind, layer, step, message}`` shape of the CLI contract."""
        return {"kind": self.kind, "layer": self.layer, "step": self.step, "message": self.message}

    @classmethod
    def of(cls, alarm: Alarm | Mapping[str, Any]) -> Alarm:
        """``alarm`` itself, or the alarm a mapping describes (a brief row, or ``to_dict()``'s output read back from
        JSON); a mapping without ``kind`` or ``message`` is a ``KeyError``."""
        if isinstance(alarm, Alarm):
            return alarm
        known = {k: alarm[k] for k in ("layers", "evidence", "advice") if k in alarm}
        return cls(kind=alarm["kind"], step=alarm.get("step"), message=alarm["message"], layer=alarm.get("layer"),
                   **known)


class RunRow(TypedDict):
    """A row of ``runs`` (``Store.get_run``, ``Store.runs``); ``recipe`` and ``result`` are parsed JSON."""

    id: str
    name: str
    created: float
    finished: float | None
    status: str                     # running | completed | stopped_early | diverged | interrupted | abandoned
    recipe: dict[str, Any]
    result: dict[str, Any] | None   # RunResult.to_json()
    run_dir: str | None
    version: str | None
    git_rev: str | None
    study_id: str | None
    arm: str | None
    seed: int | None


class TrialRow(TypedDict):
    """A row of ``trials`` (``Store.trials``); ``result`` is the run's ``RunResult.to_json()``."""

    arm: str
    seed: int
    status: str                     # pending | running | completed | stopped_early | diverged | failed | interrupted
    attempts: int
    run_id: str | None
    executor: str | None
    error: str | None
    started: float | None
    finished: float | None
    result: dict[str, Any] | None
    trial_hash: str | None


class StudyRow(TypedDict):
    """A row of ``studies`` (``Store.study``); ``spec`` is the spec with its base recipe inlined."""

    id: str
    spec_hash: str
    spec: dict[str, Any]
    created: float
    version: str | None
    git_rev: str | None
