"""The harness of the hostile-input suite (docs/RELIABILITY.md, rows 6 and 22-30): one table row per case, one
check for all of them.

A ``Case`` names files to create in the test's directory (``{tmp}`` in any text or argument is that directory),
the command line, and what the answer must be: the exit code, the field or path the one-line message starts
with, and which paths the command may change. ``check`` runs the real CLI entry point in-process and asserts:

- the exit code (2 for bad input unless the case says otherwise);
- stderr's message starts with ``error: FIELD`` and is one line of at most ~1 KB (``MAX_MESSAGE`` plus the
  ``error: `` prefix), with no traceback and no "internal error";
- nothing was written outside the paths the case allows (the whole directory tree is compared before and after,
  file by file: names, sizes and modification times);
- every SQLite file in the directory still passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tricklab.cli.main import main
from tricklab.errors import MAX_MESSAGE

MARKER = "PWNED"  # a file hostile input tries to create; it must never exist


@dataclass(frozen=True)
class Case:
    """One hostile input. ``files``: name → text or bytes (``{tmp}`` replaced); ``setup(tmp)`` for what text cannot
    say (FIFOs, sockets, symlinks, read-only files); ``may_change``: paths (relative to the test directory) the
    command may create or modify — everything else must be left exactly as it was."""

    id: str
    argv: list[str]
    field: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    code: int = 2
    may_change: tuple[str, ...] = ()


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` → (type, size, mtime_ns), without following symlinks or opening anything."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0,
                                             st.st_mtime_ns if stat.S_ISREG(st.st_mode) else 0)
    return out


def _allowed(path: str, may_change: tuple[str, ...]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in may_change)


def _sqlite_files(root: Path) -> list[Path]:
    out = []
    for p in root.rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        with open(p, "rb") as fh:
            if fh.read(16) == b"SQLite format 3\x00":
                out.append(p)
    return out


def check(case: Case, tmp_path: Path, monkeypatch, capsys) -> str:
    """Run ``case`` in ``tmp_path`` and assert the contract above; returns stderr."""
    monkeypatch.chdir(tmp_path)
    for name, content in case.files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content.replace("{tmp}", str(tmp_path)), encoding="utf-8")
    if case.setup is not None:
        case.setup(tmp_path)
    healthy = {p for p in _sqlite_files(tmp_path) if _integrity(p) == "ok"}
    before = _tree(tmp_path)
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in case.argv])
    err = capsys.readouterr().err
    assert rc == case.code, f"exit {rc}, expected {case.code}: {err[-800:]}"
    assert "Traceback" not in err and "internal error" not in err, err[-2000:]
    message = next((line for line in err.splitlines() if line.startswith("error: ")), "")
    assert message.startswith(f"error: {case.field}"), err[:600]
    assert len(message) <= MAX_MESSAGE + len("error: ") + 2, f"{len(message)} characters: a message is a paragraph"
    assert not (tmp_path / MARKER).exists(), "hostile input ran code"
    after = _tree(tmp_path)
    changed = sorted(p for p in set(before) | set(after)
                     if before.get(p) != after.get(p) and not _allowed(p, case.may_change))
    assert not changed, f"written outside what the case allows: {changed[:10]}"
    for p in healthy:
        assert _integrity(p) == "ok", f"{p} was damaged"
    return err


def _integrity(path: Path) -> str:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as err:
        return str(err)
