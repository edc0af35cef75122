"""What every detector shares: the typed context it reads, the finding it returns, and persistence.

A detector is a small object with a ``kind`` (one of ``ALARM_KINDS``) and two entry points,
``observe(record, ctx)`` per probe record and ``end_epoch(metrics, ctx)`` per finished epoch, each returning a
``Finding`` while its condition holds (already persistent) or None. The ``Doctor`` turns findings into
deduplicated ``Alarm``s with words and advice (``advice.py``) and drops a finding whose cause is already
named (``Finding.explained_by``: e.g. a flat loss while the ReLUs are dead is the dead ReLUs' symptom).

``Context`` is the doctor's bounded memory: the last records, the last epochs and a few running summaries
(the loss and gradient norm at the first probe, the peak learning rate). Everything is plain Python floats, so the
whole state is JSON data (``state_dict``) and a resumed run continues with the same judgement.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from tricklab.diagnose.detectors.thresholds import Thresholds
from tricklab.diagnose.records import LayerStats, ProbeRecord


def finite(x: float | None) -> bool:
    """True for a real, finite number."""
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else math.nan


@dataclass
class EpochMetrics:
    """One finished epoch as the doctor sees it (missing metrics are None)."""

    epoch: int
    step: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    train_eval_loss: float | None = None      # the training split evaluated as the validation split is
    train_eval_accuracy: float | None = None  # (eval mode, the epoch's final weights); None when not measured
    val_loss_se: float | None = None          # standard error of the validation loss: std of the per-example
                                              # losses / √n (None when only the mean is known)
    val_examples: int | None = None           # size of the validation split (for the accuracy's standard error)

    @property
    def fit_loss(self) -> float | None:
        """The training loss to compare with the validation loss: measured like it where it was, else the
        running mean over the epoch's batches (train mode: dropout on, batch statistics, weights moving)."""
        return self.train_eval_loss if finite(self.train_eval_loss) else self.train_loss

    @property
    def fit_accuracy(self) -> float | None:
        """The training accuracy to compare with the validation accuracy (see ``fit_loss``)."""
        return self.train_eval_accuracy if finite(self.train_eval_accuracy) else self.train_accuracy

    @classmethod
    def from_metrics(cls, epoch: int, step: int, metrics: dict[str, float]) -> EpochMetrics:
        def get(key: str) -> float | None:
            value = metrics.get(key)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        return cls(epoch=epoch, step=step, train_loss=get("train_loss"), train_accuracy=get("train_accuracy"),
                   val_loss=get("val_loss"), val_accuracy=get("val_accuracy"), lr=get("lr"),
                   train_eval_loss=get("train_eval_loss"), train_eval_accuracy=get("train_eval_accuracy"),
                   val_loss_se=get("val_loss_se"),
                   val_examples=int(n) if (n := get("val_examples")) is not None and n >= 1 else None)


@dataclass
class Finding:
    """A detector's verdict on the current evidence, before words and advice are added.

    ``step``: where the condition was first seen (the start of its persistent run); ``criterion``: which rule
    fired (the advice names it: ``ratio``, ``signal``, ``nonfinite``, ``growth``, ``high``, ``low`` ...);
    ``group``: alarms of one kind and group are merged (the update ratio's ``high`` and ``low`` are two);
    ``explained_by``: alarm kinds that, once raised, explain this finding (it is then not raised);
    ``explainable=False`` for findings that are always raised (NaN/Inf).
    """

    kind: str
    step: int
    criterion: str
    layers: list[str] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)
    group: str = ""
    explained_by: tuple[str, ...] = ()
    explainable: bool = True


@dataclass
class Streak:
    """Persistence: how many consecutive observations a condition has held, and since which step."""

    count: int = 0
    since: int | None = None

    def update(self, holds: bool, step: int) -> int:
        if holds:
            if self.count == 0:
                self.since = step
            self.count += 1
        else:
            self.count, self.since = 0, None
        return self.count

    def start(self, default: int) -> int:
        """The step where the current run began (``default`` when the condition does not hold)."""
        return self.since if self.since is not None else default


class Context:
    """The doctor's bounded memory, read by every detector (see the module docstring)."""

    def __init__(self, thresholds: Thresholds, *, num_params: int | None = None, num_examples: int | None = None,
                 max_records: int = 64, max_epochs: int = 64, num_classes: int | None = None,
                 optimizer: str | None = None, loss: str | None = None, lr: float | None = None) -> None:
        self.thresholds = thresholds
        self.num_params = num_params
        self.num_examples = num_examples
        self.num_classes = num_classes          # of a classifier's targets (None: unknown)
        self.optimizer = optimizer              # ``learning_rate.optimizer_family`` of the optimizer in use
        self.loss = loss                        # "cross_entropy" when the loop is known to use it, else None
        self.records: deque[ProbeRecord] = deque(maxlen=max(max_records, 2 * thresholds.persist,
                                                            thresholds.plateau_window,
                                                            thresholds.oscillation_window + 1))
        self.epochs: deque[EpochMetrics] = deque(maxlen=max(max_epochs, thresholds.plateau_epochs + 1,
                                                            thresholds.overfit_epochs + 1))
        self.raised: set[str] = set()           # alarm kinds raised since the last reset (written by the doctor)
        self.unstable_step: int | None = None   # the last step an instability finding held (written by the doctor)
        self.start_loss = math.nan              # the first finite probe loss (see ``add_record``)
        self.start_grad_norm = math.nan         # and global gradient norm
        self.start_weight_norm = math.nan       # and the median weight layer's ‖W‖
        self.peak_lr: float | None = None       # the highest rate seen in the records and epochs so far
        self.configured_lr: float | None = lr   # the rate the loop was set to (a schedule's peak), when known

    # -- feeding ----------------------------------------------------------------------------------------
    def add_record(self, record: ProbeRecord) -> None:
        """Keep the record; the first finite loss and gradient norm become "the start" — the values before
        training changed much (a median of the first few would already contain a blow-up that a far too high
        learning rate causes within ten steps)."""
        self.records.append(record)
        if finite(record.loss) and not finite(self.start_loss):
            self.start_loss = float(record.loss)
        if finite(record.grad_norm) and not finite(self.start_grad_norm):
            self.start_grad_norm = float(record.grad_norm)
        if not finite(self.start_weight_norm) and (w := median_weight_norm(record)) is not None:
            self.start_weight_norm = w
        if finite(record.lr) and (self.peak_lr is None or record.lr > self.peak_lr):  # type: ignore[operator]
            self.peak_lr = float(record.lr)  # type: ignore[arg-type]

    def add_epoch(self, metrics: EpochMetrics) -> None:
        self.epochs.append(metrics)
        if finite(metrics.lr) and (self.peak_lr is None or metrics.lr > self.peak_lr):  # type: ignore[operator]
            self.peak_lr = float(metrics.lr)  # type: ignore[arg-type]

    # -- summaries ----------------------------------------------------------------------------------------
    @property
    def last_lr(self) -> float | None:
        for r in reversed(self.records):
            if finite(r.lr):
                return float(r.lr)  # type: ignore[arg-type]
        for e in reversed(self.epochs):
            if finite(e.lr):
                return float(e.lr)  # type: ignore[arg-type]
        return None

    def losses(self, n: int | None = None) -> list[float]:
        """Finite losses of the last ``n`` records (all kept records when None), oldest first."""
        recs = list(self.records)[-n:] if n else list(self.records)
        return [float(r.loss) for r in recs if finite(r.loss)]

    def loss_improvement(self, window: int | None = None) -> float | None:
        """Relative decrease of the median loss of the last ``window`` probes against the median of the
        ``window`` probes before them; positive = improving. Early in a run, when fewer than 2 × ``window``
        are kept, the recent probes are compared with the first one. None before two finite losses."""
        w = window or self.thresholds.persist
        losses = self.losses()
        n = len(losses)
        if n < 2:
            return None
        split = max(1, n - w)
        before, recent = median(losses[max(0, split - w):split]), median(losses[split:])
        if not finite(before) or before == 0:
            return None
        return (before - recent) / abs(before)

    def stalled(self) -> bool:
        """The AUTOTRAINER-style gate: True unless the loss is seen improving by ``moving_improvement``
        (a run too young to tell counts as stalled — persistence still guards against one-off readings)."""
        improvement = self.loss_improvement()
        return improvement is None or improvement < self.thresholds.moving_improvement

    def named_lr(self, lr: float | None) -> float | None:
        """The rate to name for ``lr``, a rate read at a step: the rate the loop was set to when known (what a
        user wrote — a schedule's warm-up reads ``lr`` / 25 at the start of a 1cycle run), else ``lr``."""
        configured = self.configured_lr
        return configured if finite(configured) and configured > 0 else lr  # type: ignore[operator]

    def lr_near_peak(self, lr: float | None, gate: float) -> bool:
        """True unless ``lr`` is below ``gate`` × the peak: the highest rate seen so far or, higher during a
        warm-up, the rate the loop was set to (``configured_lr``) — annealed or not yet warmed up."""
        peaks = [p for p in (self.peak_lr, self.configured_lr) if finite(p) and p]  # type: ignore[operator]
        if not finite(lr) or not peaks:
            return True
        return lr >= gate * max(peaks)  # type: ignore[operator,type-var]

    # -- persistence ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "records": [r.to_dict() for r in self.records],
            "epochs": [asdict(e) for e in self.epochs],
            "raised": sorted(self.raised),
            "start_loss": self.start_loss,
            "start_grad_norm": self.start_grad_norm,
            "start_weight_norm": self.start_weight_norm,
            "peak_lr": self.peak_lr,
            "configured_lr": self.configured_lr,
            "unstable_step": self.unstable_step,
            "num_params": self.num_params,
            "num_examples": self.num_examples,
            "num_classes": self.num_classes,
            "optimizer": self.optimizer,
            "loss": self.loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records.clear()
        self.records.extend(ProbeRecord.from_dict(r) for r in state.get("records", []))
        self.epochs.clear()
        self.epochs.extend(EpochMetrics(**e) for e in state.get("epochs", []))
        self.raised = set(state.get("raised", []))
        self.start_loss = float(state.get("start_loss", math.nan))
        self.start_grad_norm = float(state.get("start_grad_norm", math.nan))
        self.start_weight_norm = float(state.get("start_weight_norm", math.nan))
        self.peak_lr = state.get("peak_lr")
        self.configured_lr = state.get("configured_lr", self.configured_lr)
        self.unstable_step = state.get("unstable_step")
        self.num_params = state.get("num_params", self.num_params)
        self.num_examples = state.get("num_examples", self.num_examples)
        self.num_classes = state.get("num_classes", self.num_classes)
        self.optimizer = state.get("optimizer", self.optimizer)
        self.loss = state.get("loss", self.loss)

    @property
    def classes(self) -> int | None:
        """The number of classes: given, else the width of the model's output at the last probe (≥ 2)."""
        if self.num_classes:
            return self.num_classes
        dims = [r.output_dim for r in reversed(self.records) if r.output_dim]
        return dims[0] if dims and dims[0] >= 2 else None


class Detector:
    """Base class. Subclasses set ``kind`` (and ``explained_by``) and override what they need.

    State lives in ``Streak`` attributes (created in ``reset``), which ``state_dict`` saves generically.
    """

    kind: ClassVar[str] = ""
    explained_by: ClassVar[tuple[str, ...]] = ()

    def __init__(self, thresholds: Thresholds) -> None:
        self.t = thresholds
        self.reset()

    def reset(self) -> None:
        """Forget the persistence counters (subclasses create their ``Streak``s here)."""

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        return None

    def end_epoch(self, metrics: EpochMetrics, ctx: Context) -> Finding | None:
        return None

    def finding(self, step: int, criterion: str, layers: Sequence[LayerStats | str] = (),
                evidence: dict[str, float] | None = None, **kw: Any) -> Finding:
        names = [layer if isinstance(layer, str) else layer.name for layer in layers]
        kw.setdefault("explained_by", self.explained_by)
        return Finding(kind=self.kind, step=step, criterion=criterion, layers=names,
                       evidence={k: float(v) for k, v in (evidence or {}).items() if v is not None}, **kw)

    def state_dict(self) -> dict[str, Any]:
        return {name: asdict(v) for name, v in vars(self).items() if isinstance(v, Streak)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if isinstance(getattr(self, name, None), Streak):
                setattr(self, name, Streak(**value))


def median_weight_norm(record: ProbeRecord) -> float | None:
    """The median ‖W‖ over the record's weight layers (None without a finite one)."""
    norms = [float(layer.weight_norm) for layer in record.layers if finite(layer.weight_norm)]
    return median(norms) if norms else None


def weight_layers(record: ProbeRecord) -> list[LayerStats]:
    """The record's layers in forward order (``depth_index``)."""
    return sorted(record.layers, key=lambda layer: layer.depth_index)


def signal_std(layer: LayerStats) -> float | None:
    """The forward signal's spread after this layer: the activation's output std, else the layer's output std."""
    value = layer.act_std if layer.act_std is not None else layer.pre_std
    return float(value) if finite(value) else None
