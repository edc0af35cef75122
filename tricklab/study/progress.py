"""A live view of a study's trials on stderr: done / running / failed, and an ETA from the mean trial time."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StudyProgress:
    def __init__(self, total: int, already_done: int, *, enabled: bool = True) -> None:
        self.total, self.done, self.failed, self.running = total, already_done, 0, 0
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: Any = None
        self._start = time.perf_counter()
        self._first_done = already_done

    def __enter__(self) -> StudyProgress:
        if self.live:
            self._progress = Progress(TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                      TimeRemainingColumn(), console=self.console)
            self._progress.start()
            self._task = self._progress.add_task("study", total=self.total, completed=self.done, info=self._info())
        elif self.enabled:
            self.console.print(f"study: {self.total} trials, {self.done} already finished", highlight=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _info(self) -> str:
        return f"running {self.running}  failed {self.failed}"

    def started(self, arm: str, seed: int) -> None:
        self.running += 1
        self._update()

    def finished(self, arm: str, seed: int, status: str, value: float | None) -> None:
        self.running -= 1
        self.done += 1
        self.failed += status == "failed"
        if self._progress is None and self.enabled:
            elapsed = time.perf_counter() - self._start
            per = elapsed / max(self.done - self._first_done, 1)  # wall time per trial, parallelism included
            eta = per * (self.total - self.done)
            shown = "" if value is None else f" {value:.4f}"
            self.console.print(f"trial {self.done}/{self.total}  {arm}  seed {seed}: {status}{shown}  "
                               f"(running {self.running}, failed {self.failed}, eta {eta:.0f}s)", highlight=False,
                               soft_wrap=True)
        self._update()

    def _update(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, info=self._info())
