"""Progress for people: a rich bar (epoch, loss, accuracy, LR, ETA) on a terminal, one line per epoch
elsewhere (CI logs, pipes). Always on stderr, so ``--json`` keeps stdout clean. Reads the loss from the
device only every ``every`` steps."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tricklab.train.events import Callback, TrainState


class ProgressReporter(Callback):
    """Shows training progress on stderr; ``label`` prefixes every line (e.g. the run name)."""

    def __init__(self, label: str = "", every: int = 25, console: Console | None = None) -> None:
        self.label = label
        self.every = max(1, every)
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._loss = float("nan")
        self._started = 0.0

    def on_fit_begin(self, state: TrainState) -> None:
        self._started = time.perf_counter()
        total = state.trainer.epochs * state.steps_per_epoch
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._describe(state, state.epoch + 1), total=total,
                                                 completed=state.step, info="")

    def _describe(self, state: TrainState, epoch: int) -> str:
        return f"{self.label} epoch {epoch}/{state.trainer.epochs}".strip()

    def on_batch_end(self, state: TrainState) -> None:
        if self._progress is None or self._task is None:
            return
        if state.step % self.every == 0 and state.loss is not None:
            self._loss = float(state.loss)
            self._progress.update(self._task, completed=state.step, description=self._describe(state, state.epoch),
                                  info=f"loss {self._loss:.4f}  lr {state.lr:.2e}")

    def on_epoch_end(self, state: TrainState) -> None:
        m = state.epoch_metrics
        text = (f"epoch {m['epoch']}/{state.trainer.epochs}  loss {m['train_loss']:.4f}  "
                f"acc {m['train_accuracy']:.4f}")
        if "val_accuracy" in m:
            text += f"  val_loss {m['val_loss']:.4f}  val_acc {m['val_accuracy']:.4f}"
        text += f"  lr {m['lr']:.2e}"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=state.step, info=text.split("  ", 1)[1])
        else:
            elapsed = time.perf_counter() - self._started
            done = m["epoch"] / state.trainer.epochs
            eta = elapsed / max(done, 1e-9) * (1 - done) if done else float("nan")
            self.console.print(f"{self.label} {text}  {elapsed:.1f}s  eta {eta:.0f}s".strip(), highlight=False,
                               soft_wrap=True)

    def on_fit_end(self, state: TrainState) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
