"""Hostile input, the store, studies and resumes (docs/RELIABILITY.md rows 22-27): another program's SQLite file,
special files and impossible paths as ``--store``, study names that are paths, absurd trial counts, run
directories whose recipe, identity or data changed since their checkpoint. Each case goes through the harness
in ``tests/hostile.py``: exit 2, a one-line message naming the field, nothing written, every SQLite file intact.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.hostile import Case, check
from tricklab.store import Store
from tricklab.store.sqlite import APPLICATION_ID

TRAIN = ["train", "--set", "data.name=synthetic", "--set", "model.name=mlp", "--set", "model.depth=1",
         "--set", "model.width=8", "--set", "epochs=1", "--quiet"]
SPEC = "name: s\nbase: {data: {name: synthetic}, model: {name: mlp, depth: 1, width: 8}, epochs: 1}\n" \
       "factors: {model.dropout: [0.0, 0.2]}\nseeds: 1\n"
STUDY = ["study", "s.yaml", "--quiet", "--no-report"]


def _foreign(tables: dict[str, str], app_id: int = 0, version: int = 0, journal: str = "delete"):
    """A setup that writes another program's SQLite database ``db.sqlite`` (its own tables and rows)."""
    def setup(tmp: Path) -> None:
        with sqlite3.connect(tmp / "db.sqlite") as db:
            db.execute(f"PRAGMA journal_mode = {journal}")
            for name, columns in tables.items():
                db.execute(f"CREATE TABLE {name} ({columns})")
                db.execute(f"INSERT INTO {name} VALUES ({', '.join('?' * len(columns.split(',')))})",
                           ["x"] * len(columns.split(",")))
            db.execute(f"PRAGMA application_id = {app_id}")
            db.execute(f"PRAGMA user_version = {version}")
        db.close()
    return setup


def _fifo(name: str):
    return lambda tmp: os.mkfifo(tmp / name)


def _socket(name: str):
    def setup(tmp: Path) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp / name))   # left bound: the file stays a socket for the case
        _SOCKETS.append(s)
    return setup


_SOCKETS: list[socket.socket] = []

NOTES = {"notes.txt": "my notes\n"}
FOREIGN = {"notes": "title, body", "tags": "name"}
FIREFOX = {"moz_places": "url, title"}
RUNS_ONLY_PLUS = {"runs": "id", "my_table": "x"}   # a "runs" table among others: not tricklab's


def _store_cases(command: list[str], files: dict[str, str], tag: str) -> list[Case]:
    return [
        Case(f"{tag}-store-foreign-sqlite", [*command, "--store", "db.sqlite"], "--store", files,
             _foreign(FOREIGN)),
        Case(f"{tag}-store-foreign-wal-sqlite", [*command, "--store", "db.sqlite"], "--store", files,
             _foreign(FIREFOX, journal="wal"), may_change=("db.sqlite-shm", "db.sqlite-wal")),
        Case(f"{tag}-store-other-application-id", [*command, "--store", "db.sqlite"], "--store", files,
             _foreign({"runs": "id"}, app_id=0x12345678)),
        Case(f"{tag}-store-runs-table-among-others", [*command, "--store", "db.sqlite"], "--store", files,
             _foreign(RUNS_ONLY_PLUS)),
        Case(f"{tag}-store-newer-schema", [*command, "--store", "db.sqlite"], "--store", files,
             _foreign({"runs": "id"}, app_id=APPLICATION_ID, version=99)),
        Case(f"{tag}-store-fifo", [*command, "--store", "fifo.sqlite"], "--store", files, _fifo("fifo.sqlite")),
        Case(f"{tag}-store-socket", [*command, "--store", "sock.sqlite"], "--store", files, _socket("sock.sqlite")),
        Case(f"{tag}-store-dev-null", [*command, "--store", "/dev/null"], "--store", files),
        Case(f"{tag}-store-parent-is-a-file", [*command, "--store", "notes.txt/s.sqlite"], "--store",
             {**files, **NOTES}),
        Case(f"{tag}-store-grandparent-is-a-file", [*command, "--store", "notes.txt/a/b/s.sqlite"], "--store",
             {**files, **NOTES}),
        Case(f"{tag}-store-is-a-directory", [*command, "--store", "."], "--store", files),
        Case(f"{tag}-store-parent-missing", [*command, "--store", "no/such/dir/s.sqlite"], "--store", files),
        Case(f"{tag}-store-parent-missing-absolute", [*command, "--store", "/no-such-dir-tricklab/s.sqlite"],
             "--store", files),
        Case(f"{tag}-store-symlink-to-fifo", [*command, "--store", "link.sqlite"], "--store", files,
             lambda tmp: (os.mkfifo(tmp / "f"), os.symlink(tmp / "f", tmp / "link.sqlite"))),
    ]


def _study(name: str) -> dict[str, str]:
    return {"s.yaml": SPEC.replace("name: s\n", f"name: {name}\n")}


CASES = [
    *_store_cases(TRAIN, {}, "train"),
    *_store_cases(STUDY, {"s.yaml": SPEC}, "study"),
    *_store_cases(["doctor", "--set", "data.name=synthetic", "--set", "model.name=mlp", "--set", "epochs=1",
                   "--quiet"], {}, "doctor")[:6],
    Case("report-out-parent-missing", ["report", "run", "--out", "no/such/r.html"], "--out",
         {"run/recipe.yaml": "name: x\n"}),
    Case("report-foreign-sqlite", ["report", "db.sqlite"], "PATH", {}, _foreign(FOREIGN)),
    Case("report-other-application-id", ["report", "db.sqlite"], "PATH", {}, _foreign({"x": "y"}, app_id=7)),
    Case("study-name-dotdot", STUDY, "name", _study('".."')),
    Case("study-name-dot", STUDY, "name", _study('"."')),
    Case("study-name-parent-path", STUDY, "name", _study('"../../escape"')),
    Case("study-name-absolute", STUDY, "name", _study('"/tmp/escape"')),
    Case("study-name-separator", STUDY, "name", _study('"a/b"')),
    Case("study-name-backslash", STUDY, "name", _study('"a\\\\b"')),
    Case("study-name-nul", STUDY, "name", _study('"a\\0b"')),
    Case("study-name-blank", STUDY, "name", _study('"   "')),
    Case("study-10e4-arms-by-10e5-seeds", STUDY, "seeds",
         {"s.yaml": SPEC.replace("factors: {model.dropout: [0.0, 0.2]}\nseeds: 1\n",
                                 "factors: {optimizer.lr: [" + ", ".join(f"{i}e-5" for i in range(1, 101)) + "],"
                                 " model.width: [" + ", ".join(str(i) for i in range(8, 108)) + "]}\n"
                                 "seeds: 100000\n")}),
    Case("study-missing-data-before-any-trial", STUDY, "data.path",
         {"s.yaml": SPEC.replace("{name: synthetic}", "{name: npz, path: nowhere.npz}")}),
    Case("study-data-one-class-before-any-trial", STUDY, "data",
         {"s.yaml": SPEC.replace("{name: synthetic}", "{name: csv, path: one.csv}"),
          "one.csv": "a,b,label\n" + "".join(f"{i},{i * 2},0\n" for i in range(60))}),
    *[Case(f"{cmd}-run-name-{tag}", [cmd, "--set", "data.name=synthetic", "--set", f"name={name}", "--quiet"],
           "name") for cmd in ("train", "doctor")
      for tag, name in (("dotdot", ".."), ("dot", "."), ("parent-path", "../../escape"), ("absolute", "/tmp/escape"),
                        ("separator", "a/b"), ("backslash", "a\\b"), ("trailing-slash", "run/"))],
    Case("flag-of-100-kb", ["train", "--" + "x" * 100_000], "tricklab"),
    Case("choice-of-100-kb", ["study", "s.yaml", "--executor", "y" * 100_000], "tricklab study", {"s.yaml": SPEC}),
    Case("command-of-100-kb", ["w" * 100_000], "tricklab"),
    Case("set-key-of-100-kb", ["train", "--set", "z" * 100_000 + "=1"], "--set"),
    Case("recipe-key-of-100-kb", ["train", "r.yaml"], "k" * 40, {"r.yaml": "? " + "k" * 100_000 + "\n: 1\n"}),
    Case("study-name-of-100-kb", STUDY, "name", _study("n" * 100_000)),
    Case("study-runs-dir-is-a-file", [*STUDY, "--runs-dir", "notes.txt"], "--runs-dir", {"s.yaml": SPEC, **NOTES}),
    Case("study-runs-dir-is-a-fifo", [*STUDY, "--runs-dir", "f"], "--runs-dir", {"s.yaml": SPEC}, _fifo("f")),
]


class Blocked(BaseException):
    """Raised by the alarm when a case blocks (opening a FIFO)."""


@pytest.fixture(autouse=True)
def _no_hang():
    """A case that blocks (opening a FIFO) fails instead of hanging the suite."""
    import signal

    def timeout(*_):
        raise Blocked("the command blocked")   # not an Exception: no handler under test can swallow it

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
    while _SOCKETS:
        _SOCKETS.pop().close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_store_and_study_input(case, tmp_path, monkeypatch, capsys):
    check(case, tmp_path, monkeypatch, capsys)


# -- run directories whose recipe, identity or data changed since their checkpoint -------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One small finished run (npz data) to copy into each case."""
    from tricklab.cli.main import main

    root = tmp_path_factory.mktemp("made")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", x=rng.normal(size=(800, 5)).astype("float32"), y=rng.integers(0, 3, 800))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "--set", "data.name=npz", "--set", "data.path=d.npz", "--set", "model.name=mlp",
                     "--set", "model.depth=1", "--set", "model.width=8", "--set", "epochs=1", "--quiet",
                     "--store", "none"]) == 0
    finally:
        os.chdir(cwd)
    return root


def _edit(change):
    """A setup copying the finished run into the case's directory as ``run/`` and applying ``change(run)``."""
    def setup(tmp: Path) -> None:
        src = _FINISHED[0]
        shutil.copy(src / "d.npz", tmp / "d.npz")
        run = next((src / "runs").iterdir())
        shutil.copytree(run, tmp / "run")
        text = (tmp / "run" / "recipe.yaml").read_text()
        (tmp / "run" / "recipe.yaml").write_text(text.replace(str(src), str(tmp)))
        ident = (tmp / "run" / "identity.json").read_text()
        (tmp / "run" / "identity.json").write_text(ident.replace(str(src), str(tmp)))
        change(tmp / "run")
    return setup


_FINISHED: list[Path] = []


def _recipe_change(section: str, key: str, value):
    def change(run: Path) -> None:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        recipe[section][key] = value
        (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return change


def _data_change(run: Path) -> None:
    data = run.parent / "d.npz"
    with np.load(data) as z:
        x, y = z["x"], z["y"]
    np.savez(data, x=x + 1, y=y)
    os.utime(data)


RESUME_CASES = [
    Case("resume-recipe-width-edited", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(_recipe_change("model", "width", 32))),
    Case("resume-recipe-lr-edited", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(_recipe_change("optimizer", "lr", 0.5))),
    Case("resume-recipe-data-path-edited", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(lambda run: (shutil.copy(run.parent / "d.npz", run.parent / "e.npz"),
                                  _recipe_change("data", "path", str(run.parent / "e.npz"))(run)))),
    Case("resume-data-file-changed", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(_data_change)),
    Case("resume-data-file-gone", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(lambda run: (run.parent / "d.npz").unlink())),
    Case("resume-identity-garbage", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(lambda run: (run / "identity.json").write_text("{not json"))),
    Case("resume-identity-is-a-fifo", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(lambda run: ((run / "identity.json").unlink(), os.mkfifo(run / "identity.json")))),
    Case("resume-recipe-is-a-fifo", ["train", "--resume", "run", "--store", "none"], "--resume",
         setup=_edit(lambda run: ((run / "recipe.yaml").unlink(), os.mkfifo(run / "recipe.yaml")))),
]


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c.id for c in RESUME_CASES])
def test_a_run_directory_changed_since_its_checkpoint_is_never_resumed(case, finished_run, tmp_path, monkeypatch,
                                                                       capsys):
    _FINISHED[:] = [finished_run]
    check(case, tmp_path, monkeypatch, capsys)


def test_an_intact_store_on_a_read_only_file_and_directory_stays_readable(tmp_path, monkeypatch, capsys):
    """docs/RELIABILITY.md row 25: `tricklab report` reads a store it cannot write, without "may be damaged"."""
    from tricklab.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro").mkdir()
    assert main([*TRAIN, "--store", "ro/s.sqlite", "--runs-dir", "ro/runs"]) == 0
    with Store(tmp_path / "ro" / "s.sqlite") as db:
        assert db.integrity_ok()
    capsys.readouterr()
    store = tmp_path / "ro" / "s.sqlite"
    for p in (store, tmp_path / "ro"):
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        if os.access(store, os.W_OK):
            pytest.skip("running as a user who can write read-only files (root without CAP_DAC restrictions)")
        rc = main(["report", str(store), "--out", str(tmp_path / "r.html")])
        err = capsys.readouterr().err
        assert rc == 0 and "damaged" not in err, err
        with Store(store) as db:
            assert db.read_only and len(db.runs()) == 1
    finally:
        for p in (tmp_path / "ro", store):
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_foreign_database_is_left_exactly_as_it_was(tmp_path):
    """No table added, the journal mode unchanged, not one byte written (the header's change counter included)."""
    from tricklab.errors import InputError

    _foreign(FOREIGN)(tmp_path)
    before = (tmp_path / "db.sqlite").read_bytes()
    with pytest.raises(InputError, match="another program"):
        Store(tmp_path / "db.sqlite")
    assert (tmp_path / "db.sqlite").read_bytes() == before
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert {r[0] for r in db.execute("SELECT name FROM sqlite_master")} == set(FOREIGN)


def test_a_store_of_the_previous_schema_is_upgraded_and_marked(tmp_path):
    """A schema-1 store (no application_id, no trial_hash) opens, gains the column and tricklab's mark."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL, "
                         "finished REAL, status TEXT NOT NULL, recipe TEXT NOT NULL, result TEXT, run_dir TEXT, "
                         "version TEXT, git_rev TEXT, study_id TEXT, arm TEXT, seed INTEGER);"
                         "CREATE TABLE trials (study_id TEXT NOT NULL, arm TEXT NOT NULL, seed INTEGER NOT NULL, "
                         "status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, run_id TEXT, executor TEXT, "
                         "error TEXT, started REAL, finished REAL, result TEXT, PRIMARY KEY (study_id, arm, seed));"
                         "PRAGMA user_version = 1;")
    db.close()
    with Store(path) as store:
        assert store.trials("none") == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert "trial_hash" in {r[1] for r in db.execute("PRAGMA table_info(trials)")}


def test_an_intact_store_on_a_read_only_filesystem_stays_readable(tmp_path):
    """The same promise where even root cannot write: the store and its runs on a tmpfs remounted read-only (in a
    user namespace). `tricklab report` reads it (SQLite opened ``immutable``: no shared-memory file can be made
    beside it) and writes the report elsewhere; a training run into it is refused with the store named."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_faults import _can_mount_tmpfs

    if not _can_mount_tmpfs():
        pytest.skip("needs user namespaces (unshare -rm) to mount a tmpfs")
    made = tmp_path / "made"
    made.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    (made / "s.yaml").write_text(SPEC)
    done = subprocess.run([sys.executable, "-m", "tricklab", *STUDY, "--store", "s.sqlite", "--workers", "1"],
                          cwd=made, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out, mnt = tmp_path / "out", tmp_path / "mnt"
    out.mkdir()
    mnt.mkdir()
    script = (f'mount -t tmpfs -o size=4m tmpfs "{mnt}" && cp -a "{made}/." "{mnt}/" && '
              f'mount -o remount,ro "{mnt}" || exit 97\n'
              f'cd "{mnt}"\n'
              f'"{sys.executable}" -m tricklab report s.sqlite --out "{out}/r.html" > "{out}/stdout" '
              f'2> "{out}/stderr"; echo $? > "{out}/rc"\n'
              f'"{sys.executable}" -m tricklab {" ".join(TRAIN)} --store s.sqlite --runs-dir "{out}/runs" '
              f'2> "{out}/train-stderr"; echo $? > "{out}/train-rc"\n')
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    err = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "0" and "damaged" not in err, err
    assert (out / "r.html").is_file()
    train_err = (out / "train-stderr").read_text()
    assert (out / "train-rc").read_text().strip() in ("1", "2") and "s.sqlite" in train_err, train_err
    assert "Traceback" not in train_err and "internal error" not in train_err, train_err
