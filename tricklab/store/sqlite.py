"""The store: one SQLite file (WAL mode) holding runs, their metric series and alarms.

Standard library ``sqlite3`` only. Every write is one short transaction, so a process killed at any moment
leaves the file consistent (SQLite's own guarantee); readers never block the writer (WAL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tricklab.errors import InputError

SCHEMA_VERSION = 1
DEFAULT_STORE = "tricklab.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created     REAL NOT NULL,
    finished    REAL,
    status      TEXT NOT NULL,
    recipe      TEXT NOT NULL,
    result      TEXT,
    run_dir     TEXT,
    version     TEXT,
    git_rev     TEXT,
    study_id    TEXT,
    arm         TEXT,
    seed        INTEGER
);
CREATE INDEX IF NOT EXISTS runs_study ON runs(study_id, arm, seed);
CREATE TABLE IF NOT EXISTS metrics (
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step    INTEGER NOT NULL,
    epoch   INTEGER,
    name    TEXT NOT NULL,
    value   REAL,
    PRIMARY KEY (run_id, name, step)
);
CREATE TABLE IF NOT EXISTS alarms (
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step    INTEGER,
    kind    TEXT NOT NULL,
    layer   TEXT,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_run ON alarms(run_id);
"""


class Store:
    """A tricklab store at ``path`` (created if missing). Use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_STORE) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError("--store", f"{self.path} is a directory; expected a SQLite file (e.g. {DEFAULT_STORE})")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InputError("--store", f"{self.path} was written by a newer tricklab (schema {version})")
            with self.transaction():
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise InputError("--store", f"{self.path} is not a readable tricklab store ({err}); "
                                        "it may be damaged or not a SQLite file") from None

    # -- plumbing -------------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- runs -----------------------------------------------------------------------------------------------
    def add_run(self, run_id: str, name: str, recipe: dict[str, Any], *, run_dir: str | None = None,
                version: str | None = None, git_rev: str | None = None, study_id: str | None = None,
                arm: str | None = None, seed: int | None = None, status: str = "running") -> None:
        """Record a run that starts (or restarts: the row is replaced, its old series dropped)."""
        with self.transaction() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            db.execute(
                "INSERT INTO runs (id, name, created, status, recipe, run_dir, version, git_rev, study_id, arm, seed)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, time.time(), status, json.dumps(recipe), run_dir, version, git_rev, study_id, arm,
                 seed),
            )

    def finish_run(self, run_id: str, status: str, result: dict[str, Any],
                   metrics: Iterable[tuple[int, int | None, str, float | None]] = (),
                   alarms: Iterable[dict[str, Any]] = ()) -> None:
        """Store a run's outcome with its metric series and alarms, in one transaction."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET status = ?, result = ?, finished = ? WHERE id = ?",
                       (status, json.dumps(result), time.time(), run_id))
            db.executemany("INSERT OR REPLACE INTO metrics (run_id, step, epoch, name, value) VALUES (?, ?, ?, ?, ?)",
                           [(run_id, s, e, n, v) for s, e, n, v in metrics])
            db.executemany("INSERT INTO alarms (run_id, step, kind, layer, message) VALUES (?, ?, ?, ?, ?)",
                           [(run_id, a.get("step"), a["kind"], a.get("layer"), a["message"]) for a in alarms])

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._row(row) if row else None

    def runs(self, study_id: str | None = None) -> list[dict[str, Any]]:
        if study_id is None:
            rows = self._db.execute("SELECT * FROM runs ORDER BY created").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM runs WHERE study_id = ? ORDER BY created", (study_id,)).fetchall()
        return [self._row(r) for r in rows]

    def metrics(self, run_id: str) -> dict[str, list[tuple[int, float | None]]]:
        """``{name: [(step, value), ...]}`` for one run, ordered by step."""
        series: dict[str, list[tuple[int, float | None]]] = {}
        for name, step, value in self._db.execute(
            "SELECT name, step, value FROM metrics WHERE run_id = ? ORDER BY name, step", (run_id,)
        ):
            series.setdefault(name, []).append((step, value))
        return series

    def alarms(self, run_id: str) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT step, kind, layer, message FROM alarms WHERE run_id = ? ORDER BY step",
                               (run_id,))
        return [dict(zip(("step", "kind", "layer", "message"), r)) for r in cur]

    def _row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        names = [d[1] for d in self._db.execute("PRAGMA table_info(runs)")]
        out = dict(zip(names, row))
        out["recipe"] = json.loads(out["recipe"])
        out["result"] = json.loads(out["result"]) if out["result"] else None
        return out
