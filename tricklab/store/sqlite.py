"""The store: one SQLite file (WAL mode) holding runs, their metric series and alarms.

Standard library ``sqlite3`` only. Every write is one short transaction, so a process killed at any moment
leaves the file consistent (SQLite's own guarantee); readers never block the writer (WAL).

Every SQLite error leaves a ``Store`` method as an error that names the file: a damaged file is an
``InputError("--store")`` (never a silently shorter answer), a full disk an ``OSError(ENOSPC)`` with the file as
its filename (the transaction is rolled back, so nothing is half-written), another operational failure (locked
for longer than the busy timeout, an I/O error) a ``StoreError``.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from tricklab.errors import InputError, TricklabError
from tricklab.fsutil import require_writable_file_path
from tricklab.store.records import Alarm, AlarmRow, MetricRow, RunRow, StudyRow, TrialRow

SCHEMA_VERSION = 2
"""1: the first stores; 2: ``trials.trial_hash`` (the hash of the trial's resolved recipe, ``recipe.identity``)."""
DEFAULT_STORE = "tricklab.sqlite"
APPLICATION_ID = 0x54524B4C
"""``PRAGMA application_id`` of a tricklab store ("TRKL"): SQLite's own field for "which program's file is this"
(sqlite.org/pragma.html#pragma_application_id), so that a database of another program is recognised — and never
written — before tricklab touches it."""
_TABLES = {"runs", "metrics", "alarms", "studies", "trials"}

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
CREATE TABLE IF NOT EXISTS studies (
    id          TEXT PRIMARY KEY,
    spec_hash   TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created     REAL NOT NULL,
    version     TEXT,
    git_rev     TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    study_id    TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    arm         TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_id      TEXT,
    executor    TEXT,
    error       TEXT,
    started     REAL,
    finished    REAL,
    result      TEXT,
    trial_hash  TEXT,
    PRIMARY KEY (study_id, arm, seed)
);
"""

FINISHED = ("completed", "stopped_early", "diverged")
"""Trial states that are results: a re-run never trains them again (a diverged trial is a result too)."""

_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_FULL = ("SQLITE_FULL",)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


class StoreError(TricklabError):
    """A store could not be read or written for a reason that is neither damage nor a full disk (e.g. it stayed
    locked by another process for longer than the busy timeout)."""


def _kind(err: sqlite3.Error) -> str:
    """``damaged``, ``full`` or ``other`` (error names on Python >= 3.11, the message text before)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err).lower()
    if name.startswith(_DAMAGED) or "malformed" in text or "not a database" in text:
        return "damaged"
    if name.startswith(_FULL) or "database or disk is full" in text:
        return "full"
    return "other"


def named_error(path: Path, err: sqlite3.Error) -> Exception:
    """The error a person reads for a SQLite failure on the store at ``path``."""
    kind = _kind(err)
    if kind == "damaged":
        return InputError("--store", f"{path} is damaged ({err}); no result is read from a damaged store. Restore it "
                                     "from a copy, or recover what is readable with `sqlite3 FILE .recover`",
                          allowed="an intact tricklab store, or a new file name for a new store")
    if kind == "full":
        return OSError(errno.ENOSPC, f"No space left on device (SQLite: {err}); the transaction was rolled back",
                       str(path))
    return StoreError(f"store {path}: {err}")


_F = TypeVar("_F", bound=Callable[..., Any])


def _names_the_file(method: _F) -> _F:
    """Turn any SQLite error raised inside ``method`` into ``named_error`` (see the module doc)."""
    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as err:
            if _kind(err) == "other" and not isinstance(err, sqlite3.OperationalError):
                raise  # a misuse of sqlite3 (closed connection, constraint): a bug, shown as one
            raise named_error(self.path, err) from None
    return wrapper  # type: ignore[return-value]


def check_store_file(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` as a store without writing anything — not even creating it: a special file or an impossible
    path, a database of another program, a newer schema. (A ``Store`` checks the same when it opens.)"""
    p = require_writable_file_path(path, "--store", what=f"a SQLite file path (e.g. {DEFAULT_STORE})")
    if not p.exists() or p.stat().st_size == 0:
        return
    try:
        db = sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            _refuse_foreign(db, p)
        finally:
            db.close()
    except sqlite3.Error as err:
        raise InputError("--store", f"{p} is not a readable tricklab store ({err}); it may be damaged or not a "
                                    "SQLite file") from None


def _refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """An ``InputError`` for a non-empty database that is not a tricklab store, or one of a newer tricklab.

    A store is recognised by its ``application_id``; one made before it was set (id 0) by holding tricklab's
    tables and no other."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    ours = app_id == APPLICATION_ID or (app_id == 0 and (not tables or ("runs" in tables and tables <= _TABLES)))
    if not ours:
        shown = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
        raise InputError("--store", f"{path} is a SQLite database of another program (application_id {app_id}, "
                                    f"tables: {shown or 'none'}); tricklab never writes into it",
                         allowed="a tricklab store, or a new file name for a new store")
    if version > SCHEMA_VERSION:
        raise InputError("--store", f"{path} was written by a newer tricklab (schema {version}, this one reads up "
                                    f"to {SCHEMA_VERSION})", allowed="upgrade tricklab")


class Store:
    """A tricklab store at ``path`` (created if missing). Use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_STORE) -> None:
        self.path = require_writable_file_path(path, "--store", what=f"a SQLite file path (e.g. {DEFAULT_STORE})")
        self.read_only = self.path.exists() and not _writable(self.path)
        try:
            if not self.read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            self._db.execute("PRAGMA busy_timeout = 30000")
            _refuse_foreign(self._db, self.path)   # before anything is written: no table, no journal-mode change
            if self.read_only:
                return
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self.transaction():
                for statement in _SCHEMA.split(";"):  # idempotent: IF NOT EXISTS
                    if statement.strip():
                        self._db.execute(statement)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(trials)")}
                if "trial_hash" not in columns:   # a schema-1 store
                    self._db.execute("ALTER TABLE trials ADD COLUMN trial_hash TEXT")
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as err:
            if _kind(err) == "full":
                raise named_error(self.path, err) from None
            raise InputError("--store", f"{self.path} is not a readable tricklab store ({err}); "
                                        "it may be damaged or not a SQLite file") from None

    def _connect(self) -> sqlite3.Connection:
        """A connection; read-only (``mode=ro``, or ``immutable`` where not even SQLite's shared-memory file can be
        made beside it) when the file or its directory cannot be written."""
        if not self.read_only:
            return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        uri = self.path.absolute().as_uri()
        wal_ready = all(Path(f"{self.path}{x}").exists() for x in ("-wal", "-shm"))
        mode = "mode=ro" if _writable(self.path.parent) or wal_ready else "immutable=1"
        return sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30.0, isolation_level=None)

    # -- plumbing -------------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself after some errors (a full disk)
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_names_the_file
    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    @_names_the_file
    def check(self) -> None:
        """Refuse a damaged file before reading results from it (``PRAGMA quick_check``: every page and row is
        read once; damage in a part a query would not touch would otherwise go unnoticed)."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise named_error(self.path, sqlite3.DatabaseError(f"database disk image is malformed: {problems[0]}"))

    # -- runs -----------------------------------------------------------------------------------------------
    @_names_the_file
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

    @_names_the_file
    def finish_run(self, run_id: str, status: str, result: dict[str, Any], metrics: Iterable[MetricRow] = (),
                   alarms: Iterable[Alarm | Mapping[str, Any]] = ()) -> None:
        """Store a run's outcome with its metric series and alarms (``Alarm``s, or their ``brief()`` rows read
        back from JSON), in one transaction."""
        with self.transaction() as db:
            self._finish_run(db, run_id, status, result, metrics, alarms)

    @_names_the_file
    def interrupt_run(self, run_id: str) -> None:
        """Mark a running run ``interrupted`` (stopped by a signal; its directory holds the last checkpoint)."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET status = 'interrupted', finished = ? WHERE id = ? AND status = 'running'",
                       (time.time(), run_id))

    @_names_the_file
    def abandon_run(self, run_id: str, reason: str) -> None:
        """Mark a finished run ``abandoned``: an attempt the doctor replaced by a rebuilt recipe (``reason``)."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET status = 'abandoned', result = json_set(COALESCE(result, '{}'), "
                       "'$.status', 'abandoned', '$.abandoned', ?) WHERE id = ?", (reason, run_id))

    @staticmethod
    def _finish_run(db: sqlite3.Connection, run_id: str, status: str, result: dict[str, Any],
                    metrics: Iterable[MetricRow], alarms: Iterable[Alarm | Mapping[str, Any]]) -> None:
        db.execute("UPDATE runs SET status = ?, result = ?, finished = ? WHERE id = ?",
                   (status, json.dumps(result), time.time(), run_id))
        db.execute("DELETE FROM alarms WHERE run_id = ?", (run_id,))
        db.executemany("INSERT OR REPLACE INTO metrics (run_id, step, epoch, name, value) VALUES (?, ?, ?, ?, ?)",
                       [(run_id, s, e, n, v) for s, e, n, v in metrics])
        db.executemany("INSERT INTO alarms (run_id, step, kind, layer, message) VALUES (?, ?, ?, ?, ?)",
                       [(run_id, a.step, a.kind, a.layer, a.message) for a in map(Alarm.of, alarms)])

    # -- studies and trials ---------------------------------------------------------------------------------
    @_names_the_file
    def ensure_study(self, study_id: str, spec_hash: str, spec: dict[str, Any], trials: Iterable[tuple[str, int]],
                     *, version: str | None = None, git_rev: str | None = None) -> None:
        """Register a study and its trials (pending) — or check that the stored one is the same study."""
        with self.transaction() as db:
            row = db.execute("SELECT spec_hash FROM studies WHERE id = ?", (study_id,)).fetchone()
            if row is not None and row[0] != spec_hash:
                raise InputError("study", f"{self.path} already holds a study named {study_id!r} with a different "
                                          "spec (factors, seeds or base changed); give it another name or use "
                                          "another --store")
            if row is None:
                db.execute("INSERT INTO studies (id, spec_hash, spec, created, version, git_rev) VALUES (?,?,?,?,?,?)",
                           (study_id, spec_hash, json.dumps(spec), time.time(), version, git_rev))
            db.executemany("INSERT OR IGNORE INTO trials (study_id, arm, seed, status) VALUES (?, ?, ?, 'pending')",
                           [(study_id, arm, seed) for arm, seed in trials])

    @_names_the_file
    def trials(self, study_id: str) -> list[TrialRow]:
        names = ("arm", "seed", "status", "attempts", "run_id", "executor", "error", "started", "finished", "result",
                 "trial_hash")
        cur = self._db.execute(f"SELECT {', '.join(names)} FROM trials WHERE study_id = ? ORDER BY seed, arm",
                               (study_id,))
        out = []
        for row in cur:
            d = dict(zip(names, row))
            d["result"] = json.loads(d["result"]) if d["result"] else None
            out.append(cast(TrialRow, d))
        return out

    @_names_the_file
    def start_trial(self, study_id: str, arm: str, seed: int, executor: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE trials SET status = 'running', attempts = attempts + 1, executor = ?, started = ?,"
                       " error = NULL WHERE study_id = ? AND arm = ? AND seed = ?",
                       (executor, time.time(), study_id, arm, seed))

    @_names_the_file
    def finish_trial(self, study_id: str, arm: str, seed: int, *, status: str, run_id: str | None = None,
                     run_name: str = "", recipe: dict[str, Any] | None = None, run_dir: str | None = None,
                     result: dict[str, Any] | None = None,
                     metrics: Iterable[MetricRow] = (), alarms: Iterable[Alarm | Mapping[str, Any]] = (),
                     error: str | None = None,
                     version: str | None = None, git_rev: str | None = None, trial_hash: str | None = None) -> None:
        """A trial's outcome, its run, metric series and alarms — all in one transaction, so a driver killed at
        any moment leaves either the whole trial or none of it."""
        with self.transaction() as db:
            if run_id is not None and result is not None:
                db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
                db.execute("INSERT INTO runs (id, name, created, status, recipe, run_dir, version, git_rev, study_id,"
                           " arm, seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (run_id, run_name, time.time(), status, json.dumps(recipe or {}), run_dir, version,
                            git_rev, study_id, arm, seed))
                self._finish_run(db, run_id, status, result, metrics, alarms)
            db.execute("UPDATE trials SET status = ?, run_id = ?, error = ?, finished = ?, result = ?,"
                       " trial_hash = COALESCE(?, trial_hash) WHERE study_id = ? AND arm = ? AND seed = ?",
                       (status, run_id, error, time.time(), json.dumps(result) if result is not None else None,
                        trial_hash, study_id, arm, seed))

    @_names_the_file
    def reset_trials(self, study_id: str) -> int:
        """Make every trial of the study pending again, with no attempt, outcome or run (its run rows, metrics and
        alarms deleted), in one transaction: ``tricklab study --rerun``. Returns how many trials were reset."""
        with self.transaction() as db:
            db.execute("DELETE FROM runs WHERE study_id = ?", (study_id,))
            return db.execute("UPDATE trials SET status = 'pending', attempts = 0, run_id = NULL, executor = NULL,"
                              " error = NULL, started = NULL, finished = NULL, result = NULL WHERE study_id = ?",
                              (study_id,)).rowcount

    @_names_the_file
    def interrupt_trials(self, study_id: str) -> int:
        """Mark the study's running trials ``interrupted`` (the driver was stopped by a signal); returns how many.
        An interrupted trial is not a result: the next run of the study trains it again (from its checkpoint)."""
        with self.transaction() as db:
            return db.execute("UPDATE trials SET status = 'interrupted', finished = ? WHERE study_id = ? AND"
                              " status = 'running'", (time.time(), study_id)).rowcount

    @_names_the_file
    def study(self, study_id: str) -> StudyRow | None:
        row = self._db.execute("SELECT id, spec_hash, spec, created, version, git_rev FROM studies WHERE id = ?",
                               (study_id,)).fetchone()
        if row is None:
            return None
        return cast(StudyRow, dict(zip(("id", "spec_hash", "spec", "created", "version", "git_rev"),
                                       row[:2] + (json.loads(row[2]),) + row[3:])))

    @_names_the_file
    def studies(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM studies ORDER BY created")]

    @_names_the_file
    def get_run(self, run_id: str) -> RunRow | None:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._row(row) if row else None

    @_names_the_file
    def runs(self, study_id: str | None = None) -> list[RunRow]:
        if study_id is None:
            rows = self._db.execute("SELECT * FROM runs ORDER BY created").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM runs WHERE study_id = ? ORDER BY created", (study_id,)).fetchall()
        return [self._row(r) for r in rows]

    @_names_the_file
    def metrics(self, run_id: str) -> dict[str, list[tuple[int, float | None]]]:
        """``{name: [(step, value), ...]}`` for one run, ordered by step."""
        series: dict[str, list[tuple[int, float | None]]] = {}
        for name, step, value in self._db.execute(
            "SELECT name, step, value FROM metrics WHERE run_id = ? ORDER BY name, step", (run_id,)
        ):
            series.setdefault(name, []).append((step, value))
        return series

    @_names_the_file
    def alarms(self, run_id: str) -> list[AlarmRow]:
        """A run's alarms in the ``{kind, layer, step, message}`` shape (``Alarm.brief()``), ordered by step."""
        cur = self._db.execute("SELECT step, kind, layer, message FROM alarms WHERE run_id = ? ORDER BY step",
                               (run_id,))
        return [{"step": step, "kind": kind, "layer": layer, "message": message} for step, kind, layer, message in cur]

    def _row(self, row: tuple[Any, ...]) -> RunRow:
        names = [d[1] for d in self._db.execute("PRAGMA table_info(runs)")]
        out = dict(zip(names, row))
        out["recipe"] = json.loads(out["recipe"])
        out["result"] = json.loads(out["result"]) if out["result"] else None
        return cast(RunRow, out)
