"""Hostile paths, special files and outputs (docs/RELIABILITY.md): every file a user names is type-checked before
it is opened (a FIFO, socket or device never blocks a command), a key named twice in YAML is an error, a report
never overwrites a file that is not an earlier report of its kind, a report reads only its run's own files, and
data with one class is refused before training.

The table runs through the harness of ``tests/hostile.py`` (exit 2, one line naming the field, nothing changed
outside what a case allows, every SQLite file intact). A command that blocks fails its case after 20 s instead of
hanging the suite (``_no_hang``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.hostile import Case, check
from tricklab.cli.main import main
from tricklab.data import load_data
from tricklab.errors import InputError
from tricklab.integrations.tensorboard import export_run
from tricklab.recipe.io import DuplicateKey, safe_load
from tricklab.report import write_run_report, write_study_report
from tricklab.report.outputs import claim_output
from tricklab.study import study_from_dict

HANG_SECONDS = 20


class Hang(BaseException):
    """Raised by SIGALRM in a command that blocked; a BaseException, so the CLI's handlers cannot swallow it."""


@pytest.fixture(autouse=True)
def _no_hang():
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"the command blocked for {HANG_SECONDS} s (a FIFO or device was opened)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# -- what a case's setup makes ------------------------------------------------------------------------------------
def fifo(name: str):
    return lambda tmp: os.mkfifo(tmp / name)


def unix_socket(name: str):
    """A bound Unix socket file (bound by a path relative to the test's directory: absolute ones may exceed the
    108-byte limit of ``sun_path``)."""
    def make(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(os.path.relpath(tmp / name))
    return make


def link(name: str, target: str):
    def make(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target.replace("{tmp}", str(tmp)), tmp / name)
    return make


def sqlite_file(name: str):
    """A healthy SQLite file (the harness checks it is still intact afterwards)."""
    def make(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(tmp / name) as db:
            db.execute("CREATE TABLE runs (id TEXT)")
            db.execute("INSERT INTO runs VALUES ('precious')")
        db.close()
    return make


def npz_file(name: str, y: list[int], **extra: list[int]):
    def make(tmp: Path) -> None:
        x = np.arange(len(y) * 3, dtype=np.float32).reshape(len(y), 3)
        arrays = {"x": x, "y": np.array(y)}
        for key, values in extra.items():  # y_test=[...]: with x_test of the same length
            arrays[key], arrays["x_test"] = np.array(values), np.ones((len(values), 3), dtype=np.float32)
        np.savez(tmp / name, **arrays)
    return make


def study_store(name: str, study: str = "drop"):
    """A store holding one finished study of 2 arms × 2 seeds, filled the way the runner fills it (no training)."""
    def make(tmp: Path) -> None:
        from tests.test_study_report import fill_store

        spec = study_from_dict({"name": study, "base": {"data": {"name": "digits"}, "model": {"name": "mlp"}},
                                "factors": {"model.dropout": [0.0, 0.5]}, "seeds": 2})
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        fill_store(tmp / name, spec, {arm: [0.9, 0.91] for arm in spec.arm_names()})
    return make


def both(*setups):
    def make(tmp: Path) -> None:
        for setup in setups:
            setup(tmp)
    return make


HISTORY = [{"epoch": 1, "step": 10, "lr": 0.01, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.6},
           {"epoch": 2, "step": 20, "lr": 0.01, "train_loss": 0.8, "val_loss": 0.9, "val_accuracy": 0.7}]
RESULT = {"status": "completed", "run_id": "r1", "test_accuracy": 0.7, "test_loss": 0.9, "best_epoch": 2, "epochs": 2,
          "steps": 20, "alarms": [], "recipe": {"name": "tiny"}, "history": HISTORY}
RUN = {"run/result.json": json.dumps(RESULT), "run/metrics.json": json.dumps(HISTORY), "run/recipe.yaml": "name: tiny\n",
       "run/checkpoint.pt": b"PK\x03\x04 weights of two days of training"}
SPEC = "name: s\nbase: {data: {name: synthetic}}\nfactors: {model.dropout: [0.0, 0.5]}\n"
ONE_CLASS_CSV = "a,b,label\n" + "".join(f"{i},{i * 2},cat\n" for i in range(20))
CSV = ["--set", "data.name=csv", "--set", "data.path={tmp}/d.csv"]
NPZ = ["--set", "data.name=npz", "--set", "data.path={tmp}/d.npz"]
IDX = ["--set", "data.name=idx", "--set", "data.path={tmp}/idx"]
CIFAR = ["--set", "data.name=cifar10", "--set", "data.path={tmp}/cifar"]
CIFAR_BATCHES = {f"cifar/{n}": b"" for n in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")}
LESSON = ["lesson", "init", "--quick", "--quiet"]
READ_STORE = tuple(f"st/tricklab.sqlite{suffix}" for suffix in ("", "-wal", "-shm"))
"""What reading a WAL-mode store may touch (SQLite checkpoints its log); the harness still checks its integrity."""

CASES = [
    # -- the recipe: never opened unless it is a regular file ------------------------------------------------------
    Case("recipe-fifo", ["train", "{tmp}/r.yaml"], "recipe", setup=fifo("r.yaml")),
    Case("recipe-fifo-doctor", ["doctor", "{tmp}/r.yaml"], "recipe", setup=fifo("r.yaml")),
    Case("recipe-link-to-a-fifo", ["train", "{tmp}/r.yaml"], "recipe", setup=both(fifo("p"), link("r.yaml", "p"))),
    Case("recipe-socket", ["train", "{tmp}/r.yaml"], "recipe", setup=unix_socket("r.yaml")),
    Case("recipe-dev-zero", ["train", "/dev/zero"], "recipe"),
    Case("recipe-dev-null-doctor", ["doctor", "/dev/null"], "recipe"),
    Case("recipe-dev-urandom", ["train", "/dev/urandom"], "recipe"),
    Case("recipe-parent-is-a-file", ["train", "{tmp}/f/r.yaml"], "recipe", files={"f": "x"}),
    # -- the study spec and its base ------------------------------------------------------------------------------
    Case("study-fifo", ["study", "{tmp}/s.yaml"], "study", setup=fifo("s.yaml")),
    Case("study-socket", ["study", "{tmp}/s.yaml"], "study", setup=unix_socket("s.yaml")),
    Case("study-dev-zero", ["study", "/dev/zero"], "study"),
    Case("study-parent-is-a-file", ["study", "{tmp}/f/s.yaml"], "study", files={"f": "x"}),
    Case("base-fifo", ["study", "{tmp}/s.yaml"], "base", files={"s.yaml": SPEC.replace("{data: {name: synthetic}}",
                                                                                       "b.yaml")}, setup=fifo("b.yaml")),
    Case("base-socket", ["study", "{tmp}/s.yaml"], "base", files={"s.yaml": SPEC.replace("{data: {name: synthetic}}",
                                                                                         "b.yaml")},
         setup=unix_socket("b.yaml")),
    Case("base-dev-urandom", ["study", "{tmp}/s.yaml"], "base",
         files={"s.yaml": SPEC.replace("{data: {name: synthetic}}", "/dev/urandom")}),
    # -- data paths -----------------------------------------------------------------------------------------------
    Case("csv-fifo", ["train", *CSV], "data.path", setup=fifo("d.csv")),
    Case("csv-socket", ["train", *CSV], "data.path", setup=unix_socket("d.csv")),
    Case("csv-dev-urandom", ["train", "--set", "data.name=csv", "--set", "data.path=/dev/urandom"], "data.path"),
    Case("csv-parent-is-a-file", ["train", "--set", "data.name=csv", "--set", "data.path={tmp}/f/d.csv"], "data.path",
         files={"f": "x"}),
    Case("npz-fifo", ["train", *NPZ], "data.path", setup=fifo("d.npz")),
    Case("npz-dev-zero", ["train", "--set", "data.name=npz", "--set", "data.path=/dev/zero"], "data.path"),
    Case("npz-link-to-a-device", ["train", *NPZ], "data.path", setup=link("d.npz", "/dev/zero")),
    Case("idx-directory-is-a-fifo", ["train", *IDX], "data.path", setup=fifo("idx")),
    Case("idx-file-is-a-fifo", ["train", *IDX], "data.path", setup=fifo("idx/train-images-idx3-ubyte"),
         files={"idx/t10k-images-idx3-ubyte": b""}),
    Case("idx-file-links-to-dev-zero", ["train", *IDX], "data.path",
         setup=link("idx/train-labels-idx1-ubyte.gz", "/dev/zero")),
    Case("cifar10-batch-is-a-fifo", ["train", *CIFAR], "data.path",
         files={k: v for k, v in CIFAR_BATCHES.items() if not k.endswith("test_batch")}, setup=fifo("cifar/test_batch")),
    Case("cifar10-meta-is-a-fifo", ["train", *CIFAR], "data.path", files=CIFAR_BATCHES,
         setup=fifo("cifar/batches.meta")),
    Case("cifar10-path-is-a-device", ["train", "--set", "data.name=cifar10", "--set", "data.path=/dev/null"],
         "data.path"),
    # -- tricklab report PATH ---------------------------------------------------------------------------------------
    Case("report-fifo", ["report", "{tmp}/s.sqlite"], "PATH", setup=fifo("s.sqlite")),
    Case("report-socket", ["report", "{tmp}/s.sqlite"], "PATH", setup=unix_socket("s.sqlite")),
    Case("report-dev-zero", ["report", "/dev/zero"], "PATH"),
    Case("report-parent-is-a-file", ["report", "{tmp}/f/tricklab.sqlite"], "PATH", files={"f": "x"}),
    # -- a key named twice ------------------------------------------------------------------------------------------
    Case("recipe-duplicate-key", ["train", "{tmp}/r.yaml"], "epochs", files={"r.yaml": "epochs: 3\nepochs: 5\n"}),
    Case("recipe-duplicate-key-nested-flow", ["train", "{tmp}/r.yaml"], "optimizer.lr",
         files={"r.yaml": "optimizer: {lr: 0.1, lr: 0.2}\n"}),
    Case("recipe-duplicate-key-nested-block", ["doctor", "{tmp}/r.yaml"], "model.depth",
         files={"r.yaml": "model:\n  depth: 2\n  width: 8\n  depth: 20\n"}),
    Case("study-duplicate-key", ["study", "{tmp}/s.yaml"], "seeds", files={"s.yaml": SPEC + "seeds: 2\nseeds: 3\n"}),
    Case("study-duplicate-factor", ["study", "{tmp}/s.yaml"], "factors.model.dropout",
         files={"s.yaml": "name: s\nfactors:\n  model.dropout: [0.0]\n  model.dropout: [0.5]\n"}),
    Case("base-duplicate-key", ["study", "{tmp}/s.yaml"], "optimizer.lr",
         files={"s.yaml": SPEC.replace("{data: {name: synthetic}}", "b.yaml"),
                "b.yaml": "optimizer:\n  lr: 0.1\n  lr: 0.2\n"}),
    Case("set-duplicate-key", ["train", "--set", "optimizer={lr: 0.1, lr: 0.2}"], "--set optimizer.lr"),
    # -- report --out never replaces what is not an earlier report ------------------------------------------------
    Case("report-out-over-a-store", ["report", "{tmp}/run", "--out", "{tmp}/tricklab.sqlite"], "--out", files=RUN,
         setup=sqlite_file("tricklab.sqlite")),
    Case("report-out-over-a-checkpoint", ["report", "{tmp}/run", "--out", "{tmp}/run/checkpoint.pt"], "--out",
         files=RUN),
    Case("report-out-over-a-recipe", ["report", "{tmp}/run", "--out", "{tmp}/run/recipe.yaml"], "--out", files=RUN),
    Case("report-out-over-result-json", ["report", "{tmp}/run", "--out", "{tmp}/run/result.json"], "--out",
         files=RUN),
    Case("report-out-over-any-file", ["report", "{tmp}/run", "--out", "{tmp}/notes.html"], "--out",
         files={**RUN, "notes.html": "<!DOCTYPE html><p>my own notes</p>"}),
    Case("report-default-over-a-foreign-report-html", ["report", "{tmp}/run"], "--out",
         files={**RUN, "run/report.html": "<html>written by hand</html>"}),
    Case("report-out-parent-is-a-file", ["report", "{tmp}/run", "--out", "{tmp}/run/result.json/r.html"], "--out",
         files=RUN),
    Case("report-out-fifo", ["report", "{tmp}/run", "--out", "{tmp}/r.html"], "--out", files=RUN,
         setup=fifo("r.html")),
    Case("report-out-is-a-directory", ["report", "{tmp}/run", "--out", "{tmp}/run"], "--out", files=RUN),
    Case("report-out-is-the-store-itself-even-forced", ["report", "{tmp}/s.sqlite", "--out", "{tmp}/s.sqlite",
                                                        "--force"], "--out", setup=sqlite_file("s.sqlite")),
    Case("study-report-over-a-foreign-csv", ["report", "{tmp}/st/tricklab.sqlite"], "--out",
         files={"st/drop-trials.csv": "my,own,table\n1,2,3\n"}, setup=study_store("st/tricklab.sqlite"),
         may_change=READ_STORE),
    Case("study-report-over-a-foreign-summary", ["report", "{tmp}/st/tricklab.sqlite", "--out", "{tmp}/st/r.html"],
         "--out", files={"st/drop-summary.md": "# My study\n\nnotes\n"}, setup=study_store("st/tricklab.sqlite"),
         may_change=READ_STORE),
    # -- report --tensorboard LOGDIR --------------------------------------------------------------------------------
    Case("tensorboard-over-a-store", ["report", "{tmp}/run", "--tensorboard", "{tmp}/tricklab.sqlite"],
         "--tensorboard", files=RUN, setup=sqlite_file("tricklab.sqlite")),
    Case("tensorboard-over-a-checkpoint", ["report", "{tmp}/run", "--tensorboard", "{tmp}/run/checkpoint.pt"],
         "--tensorboard", files=RUN),
    Case("tensorboard-fifo", ["report", "{tmp}/run", "--tensorboard", "{tmp}/tb"], "--tensorboard", files=RUN,
         setup=fifo("tb")),
    Case("tensorboard-parent-is-a-file", ["report", "{tmp}/run", "--tensorboard", "{tmp}/run/recipe.yaml/tb"],
         "--tensorboard", files=RUN),
    # -- lesson --out DIR -------------------------------------------------------------------------------------------
    Case("lesson-out-is-a-store", [*LESSON, "--out", "{tmp}/tricklab.sqlite"], "--out",
         setup=sqlite_file("tricklab.sqlite")),
    Case("lesson-out-is-a-recipe", [*LESSON, "--out", "{tmp}/r.yaml"], "--out", files={"r.yaml": "epochs: 3\n"}),
    Case("lesson-out-fifo", [*LESSON, "--out", "{tmp}/out"], "--out", setup=fifo("out")),
    Case("lesson-out-parent-is-a-file", [*LESSON, "--out", "{tmp}/f/out"], "--out", files={"f": "x"}),
    Case("lesson-book-is-a-foreign-file", [*LESSON, "--out", "{tmp}/out"], "--out",
         files={"out/lesson-init-quick.html": "my notes on init"}),
    Case("lesson-store-is-not-sqlite", [*LESSON, "--out", "{tmp}/out"], "--out",
         files={"out/lessons.sqlite": "name: a recipe, not a store\n"}),
    Case("lesson-runs-is-a-file", [*LESSON, "--out", "{tmp}/out"], "--out", files={"out/runs": "x"}),
    # -- one class -------------------------------------------------------------------------------------------------
    Case("csv-one-class", ["train", *CSV, "--store", "none"], "data", files={"d.csv": ONE_CLASS_CSV}),
    Case("csv-label-column-constant", ["train", *CSV, "--set", "data.label_column=k", "--store", "none"], "data",
         files={"d.csv": "a,k,label\n" + "".join(f"{i},7,{i % 2}\n" for i in range(20))}),
    Case("npz-one-class", ["train", *NPZ, "--store", "none"], "data", setup=npz_file("d.npz", [3] * 20)),
    Case("npz-one-class-in-training-only", ["train", *NPZ, "--store", "none"], "data",
         setup=npz_file("d.npz", [1] * 20, y_test=[0, 1])),
    # -- --runs-dir and --store -------------------------------------------------------------------------------------
    Case("runs-dir-fifo", ["train", "--runs-dir", "{tmp}/runs"], "--runs-dir", setup=fifo("runs")),
    Case("runs-dir-dev-null", ["train", "--runs-dir", "/dev/null"], "--runs-dir"),
    Case("runs-dir-parent-is-a-file", ["train", "--runs-dir", "{tmp}/f/runs"], "--runs-dir", files={"f": "x"}),
    Case("runs-dir-file-doctor", ["doctor", "--runs-dir", "{tmp}/f"], "--runs-dir", files={"f": "x"}),
    Case("runs-dir-socket-doctor", ["doctor", "--runs-dir", "{tmp}/runs"], "--runs-dir", setup=unix_socket("runs")),
    Case("runs-dir-fifo-study", ["study", "{tmp}/s.yaml", "--runs-dir", "{tmp}/runs"], "--runs-dir",
         files={"s.yaml": SPEC}, setup=fifo("runs")),
    Case("runs-dir-file-study", ["study", "{tmp}/s.yaml", "--runs-dir", "{tmp}/s.yaml/runs"], "--runs-dir",
         files={"s.yaml": SPEC}),
    Case("store-fifo", ["train", "--store", "{tmp}/s.sqlite"], "--store", setup=fifo("s.sqlite")),
    Case("store-dev-zero-doctor", ["doctor", "--store", "/dev/zero"], "--store"),
    Case("store-parent-is-a-file-study", ["study", "{tmp}/s.yaml", "--store", "{tmp}/s.yaml/t.sqlite"], "--store",
         files={"s.yaml": SPEC}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_path_exits_2_naming_the_field(case, tmp_path, monkeypatch, capsys):
    check(case, tmp_path, monkeypatch, capsys)


def test_the_table_covers_every_kind_of_path():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


# -- outputs -------------------------------------------------------------------------------------------------------
def make_run(root: Path, files: dict[str, str | bytes] = RUN) -> Path:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    return root / "run"


def test_force_replaces_a_foreign_file_but_never_the_input(tmp_path, capsys):
    run = make_run(tmp_path)
    notes = tmp_path / "notes.html"
    notes.write_text("my own notes")
    assert main(["report", str(run), "--out", str(notes)]) == 2
    assert notes.read_text() == "my own notes"
    assert main(["report", str(run), "--out", str(notes), "--force"]) == 0
    assert "tricklab run report" in notes.read_text()
    capsys.readouterr()
    with pytest.raises(InputError, match="made from"):
        claim_output(run / "result.json", "--out", "html", force=True, inputs=[run / "result.json"])


def test_a_report_replaces_its_own_earlier_report(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", str(run)]) == 0 and main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert '<meta name="generator" content="tricklab ' in page
    out = tmp_path / "elsewhere" / "r.html"
    assert write_run_report(run, out) == out and write_run_report(run, out) == out
    # a page written before the generator <meta> existed is still recognised as tricklab's own
    out.write_text(page.replace(page[page.index('<meta name="generator"'):page.index('<meta name="viewport"')], ""))
    assert write_run_report(run, out) == out
    capsys.readouterr()


def test_a_study_report_replaces_its_own_html_csv_and_summary(tmp_path):
    study_store("tricklab.sqlite")(tmp_path)
    store = tmp_path / "tricklab.sqlite"
    first = write_study_report(store, "drop")
    written = {p.name: p.read_text() for p in tmp_path.glob("drop-*")}
    assert set(written) == {"drop-report.html", "drop-trials.csv", "drop-summary.md"}
    assert write_study_report(store, "drop") == first  # the CSV and summary are recognised as well
    (tmp_path / "drop-summary.md").write_text("# Study notes of my own\n")
    with pytest.raises(InputError) as err:
        write_study_report(store, "drop")
    assert err.value.field == "--out" and "drop-summary.md" in str(err.value)
    assert (tmp_path / "drop-summary.md").read_text() == "# Study notes of my own\n"
    assert write_study_report(store, "drop", force=True) == first


def test_report_goes_next_to_what_it_reports_on(tmp_path, monkeypatch, capsys):
    """Not into the current directory: beside the store, into the run directory."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = make_run(tmp_path / "data")
    study_store("st/tricklab.sqlite")(tmp_path / "data")
    assert main(["report", str(run)]) == 0
    assert main(["report", str(tmp_path / "data" / "st" / "tricklab.sqlite")]) == 0
    assert (run / "report.html").is_file() and (tmp_path / "data" / "st" / "drop-report.html").is_file()
    assert list(elsewhere.iterdir()) == []
    capsys.readouterr()
    assert main(["report", "--help"]) == 0
    assert "next to what it reports on" in capsys.readouterr().out


def test_lesson_force_replaces_a_foreign_book(tmp_path, monkeypatch, capsys):
    """The book's file is claimed before any lesson runs (here the lesson itself is stubbed: a real one trains)."""
    import tricklab.lessons.book
    import tricklab.lessons.run

    ran = []

    class Result:
        seconds = 0.0

        def to_json(self) -> dict[str, Any]:
            return {"lesson": "init"}

    monkeypatch.setattr(tricklab.lessons.run, "run_lesson", lambda lesson, **kw: ran.append(lesson) or Result())
    monkeypatch.setattr(tricklab.lessons.book, "write_book", lambda results, path: Path(path).write_text("book"))
    book = tmp_path / "lesson-init-quick.html"
    book.write_text("my notes")
    assert main([*LESSON, "--json", "--out", str(tmp_path)]) == 2 and ran == []
    assert "--out" in capsys.readouterr().err and book.read_text() == "my notes"
    assert main([*LESSON, "--json", "--out", str(tmp_path), "--force"]) == 0 and len(ran) == 1
    assert book.read_text() == "book"


# -- a report reads only the run's own files -------------------------------------------------------------------------
SECRET = "TOPSECRET-5f3a9c"


def test_links_leading_outside_the_run_directory_are_never_read(tmp_path, capsys):
    secret_dir = tmp_path / "home"
    secret_dir.mkdir()
    (secret_dir / "metrics.json").write_text(json.dumps([{"epoch": 1, "step": 1, "val_loss": 1, "note": SECRET}]))
    (secret_dir / "id_rsa").write_text(f"-----BEGIN KEY----- {SECRET}\n")
    (secret_dir / "alarms.json").write_text(json.dumps([{"kind": "x", "step": 1, "message": SECRET}]))
    run = make_run(tmp_path, {"run/result.json": json.dumps(RESULT)})
    os.symlink(secret_dir / "id_rsa", run / "recipe.yaml")
    os.symlink(secret_dir / "alarms.json", run / "alarms.json")
    os.symlink(secret_dir / "metrics.json", run / "metrics.json")
    (run / "inner.jsonl").write_text("")
    os.symlink("inner.jsonl", run / "probes.jsonl")  # a link that stays inside the run is its own file
    os.mkfifo(run / "checkpoint.pt")                  # not a file a report reads: never opened either way

    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert SECRET not in page
    for name in ("recipe.yaml", "alarms.json", "metrics.json"):
        assert f"{name} is left out" in page and "leads outside" in page
    assert "probes.jsonl is left out" not in page
    capsys.readouterr()

    notes: list[str] = []
    pytest.importorskip("torch.utils.tensorboard")
    logdir = export_run(run, tmp_path / "tb", notes=notes)
    assert sorted(n.split(" ")[0] for n in notes) == ["alarms.json", "metrics.json"]
    assert all(SECRET.encode() not in f.read_bytes() for f in logdir.rglob("*") if f.is_file())


def test_a_fifo_in_a_run_directory_is_left_out_not_opened(tmp_path, capsys):
    run = make_run(tmp_path, {"run/result.json": json.dumps(RESULT)})
    for name in ("metrics.json", "recipe.yaml", "probes.jsonl", "alarms.json"):
        os.mkfifo(run / name)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert page.count("FIFO") >= 4
    capsys.readouterr()


# -- YAML: one key once, safe_load otherwise -------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "path"), [
    ("epochs: 3\nepochs: 5\n", "epochs"),
    ("optimizer: {lr: 0.1, lr: 0.2}\n", "optimizer.lr"),
    ("a:\n  - {x: 1}\n  - {x: 1, x: 2}\n", "a.1.x"),
    ("1: a\n0x1: b\n", "1"),                     # equal as values: one key of the mapping
    ("? x\n: 1\nx: 2\n", "x"),
])
def test_a_key_named_twice_is_named_by_its_path(text, path):
    with pytest.raises(DuplicateKey) as err:
        safe_load(text)
    assert err.value.path == path


def test_safe_load_semantics_are_kept():
    assert safe_load("base: &b {lr: 1, wd: 2}\nrun: {<<: *b, lr: 3}\n") == {"base": {"lr": 1, "wd": 2},
                                                                            "run": {"lr": 3, "wd": 2}}
    assert safe_load("a: &x [1, 2]\nb: *x\n'1': s\n1: i\n") == {"a": [1, 2], "b": [1, 2], "1": "s", 1: "i"}
    with pytest.raises(Exception, match="could not determine a constructor"):
        safe_load("x: !!python/name:os.system\n")


# -- data with one class -------------------------------------------------------------------------------------------
def test_one_class_data_names_data_and_the_class_count(tmp_path):
    file = tmp_path / "d.csv"
    file.write_text(ONE_CLASS_CSV)
    with pytest.raises(InputError) as err:
        load_data("csv", path=file)
    assert err.value.field == "data" and "only 1 class ('cat')" in str(err.value)
