"""The SQLite store: WAL, round trips, one transaction per write, damaged files named."""

from __future__ import annotations

import sqlite3

import pytest

from tricklab.errors import InputError
from tricklab.store import Store


def test_round_trip_and_wal(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.add_run("r1", "demo", {"seed": 0}, run_dir="runs/r1", seed=0)
        store.finish_run("r1", "completed", {"test_accuracy": 0.9},
                         [(10, 1, "train_loss", 0.5), (20, 2, "train_loss", 0.25), (20, 2, "val_loss", None)],
                         [{"kind": "nan_loss", "layer": None, "step": 7, "message": "m"}])
    with Store(path) as store:
        run = store.get_run("r1")
        assert run["status"] == "completed" and run["result"] == {"test_accuracy": 0.9} and run["seed"] == 0
        assert store.metrics("r1") == {"train_loss": [(10, 0.5), (20, 0.25)], "val_loss": [(20, None)]}
        assert store.alarms("r1") == [{"step": 7, "kind": "nan_loss", "layer": None, "message": "m"}]
        assert store.integrity_ok()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_restarted_run_replaces_its_rows(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.add_run("r", "a", {})
        store.finish_run("r", "diverged", {}, [(1, 1, "loss", 1.0)])
        store.add_run("r", "a", {})
        assert store.get_run("r")["status"] == "running"
        assert store.metrics("r") == {}
        assert len(store.runs()) == 1


def test_failed_transaction_leaves_nothing(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.add_run("r", "a", {})
        with pytest.raises(KeyError):
            store.finish_run("r", "completed", {}, alarms=[{"step": 1}])  # no "kind": fails mid-transaction
        assert store.get_run("r")["status"] == "running"


def test_garbage_file_is_named(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError) as err:
        Store(bad)
    assert "bad.sqlite" in str(err.value) and err.value.field == "--store"


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="directory"):
        Store(tmp_path)
