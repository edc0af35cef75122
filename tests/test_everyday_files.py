"""Files where users look (issue 18 item 7): ``tricklab report`` writes beside the store or the run directory (or
``--out``) and prints the path; after a clean exit of train, study and report no lock or temporary file is left."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

from tests.conftest import last_json
from tests.test_everyday_errors import FAST, tricklab
from tricklab.fsutil import exclusive_lock

LEFTOVERS = (".lock", ".tmp", "-wal", "-shm", "-journal")
UMASK = os.umask(0o022)
os.umask(UMASK)


def leftovers(root: Path) -> list[str]:
    """Every lock, temporary or SQLite side file under ``root`` (hidden files included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(LEFTOVERS) or (p.name.startswith(".") and p.is_file()))


def test_train_study_and_report_leave_only_their_results(tmp_path):
    r = tricklab("train", *FAST, "--json", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / last_json(r.stdout)["run_dir"]
    (tmp_path / "s.yaml").write_text(json.dumps({
        "name": "tiny", "seeds": 1, "metric": "test_accuracy", "factors": {"model.dropout": [0.0, 0.3]},
        "base": {"data": {"name": "digits"}, "model": {"name": "mlp", "depth": 1, "width": 16}, "epochs": 1}}))
    r = tricklab("study", "s.yaml", "--quiet", "--workers", "1", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert leftovers(tmp_path) == []

    # a run's report goes into the run directory, a study's beside its store; the path is what is printed
    r = tricklab("report", str(run_dir.relative_to(tmp_path)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(tmp_path / r.stdout.strip()) == run_dir / "report.html" and (run_dir / "report.html").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = tricklab("report", "../tricklab.sqlite", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert (elsewhere / r.stdout.strip()).resolve() == (tmp_path / "tiny-report.html").resolve()
    assert list(elsewhere.iterdir()) == []                  # nothing in the directory the command ran in
    r = tricklab("report", "tricklab.sqlite", "--out", "elsewhere/mine.html", "--json", cwd=tmp_path)
    assert last_json(r.stdout)["report"] == "elsewhere/mine.html" and (elsewhere / "mine.html").is_file()

    assert leftovers(tmp_path) == []
    # every file is as readable as an ordinary write makes it (umask 022 here: 0o644), not mkstemp's 0o600
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in [*run_dir.iterdir(), tmp_path / "tiny-report.html"]}
    assert set(modes.values()) == {oct(0o666 & ~UMASK)}, modes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "elsewhere", "runs", "s.yaml", "tricklab.sqlite", "tiny-report.html", "tiny-trials.csv", "tiny-summary.md"])


def test_an_atomic_write_keeps_an_ordinary_files_mode(tmp_path):
    from tricklab.fsutil import atomic_write_text

    new = tmp_path / "new.txt"
    atomic_write_text(new, "a")
    assert new.stat().st_mode & 0o777 == 0o666 & ~UMASK
    new.chmod(0o640)                                       # the user's own choice survives a rewrite
    atomic_write_text(new, "b")
    assert new.stat().st_mode & 0o777 == 0o640 and new.read_text() == "b"


def test_the_lock_file_goes_with_its_holder(tmp_path):
    lock = tmp_path / "run" / ".lock"
    with exclusive_lock(lock, wait=False):
        assert lock.is_file()
    assert not lock.exists()


def _count(path: str, lock: str, times: int) -> None:
    for _ in range(times):
        with exclusive_lock(lock, wait=True):
            n = int(Path(path).read_text())
            Path(path).write_text(str(n + 1))


def test_removing_the_lock_file_keeps_the_lock_exclusive(tmp_path):
    """Processes that opened the lock file before its holder removed it start over with the new one: a
    read-increment-write under the lock never loses an update."""
    counter, lock = tmp_path / "n", tmp_path / ".lock"
    counter.write_text("0")
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    workers = [ctx.Process(target=_count, args=(str(counter), str(lock), 200)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert int(counter.read_text()) == 800
    assert not lock.exists()
