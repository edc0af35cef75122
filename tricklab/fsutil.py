"""Atomic file writes (a reader, or a crash, sees the old file or the new one, never half of one) and an
exclusive lock between processes that a crash cannot leave behind."""

from __future__ import annotations

import functools
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tricklab.errors import InputError, brief


@functools.cache
def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process umask (read once; setting it back at
    once is the only way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The file gets the mode an ordinary write would give it — the old file's, else 0o666 less the umask (0o644
    usually) — not ``mkstemp``'s private 0o600, so a run's report and results stay readable to whoever could
    read the directory."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError:
        mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(p)) from err  # say which file could not be written
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """``atomic_write`` for text (UTF-8)."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


class LockBusy(Exception):
    """``exclusive_lock(..., wait=False)`` found the lock held; ``holder`` is what its owner wrote (pid, ...)."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"{path} is held by {holder or 'another process'}")


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, wait: bool,
                   on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) for the ``with`` block.

    The operating system releases the lock when its process ends in any way, SIGKILL included, so a crash never
    leaves a stale lock. ``wait=False`` raises ``LockBusy`` at once when another process holds it; ``wait=True``
    calls ``on_wait(holder)`` once and blocks until the lock is free. The holder's pid and host are written into
    the file for those messages. POSIX ``flock``; where it does not exist (Windows) nothing is locked.

    The file is removed when the block ends, so no ``.lock`` stays behind after a clean exit (a killed process
    leaves its file, unlocked, and the next holder removes it). Removing it while locked is safe: a process that
    opened the file before it was removed finds, once it holds the lock, that the path no longer names the file it
    locked, and starts over with the file at the path now.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
        yield
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                if not wait:
                    raise LockBusy(p, holder) from None
                if on_wait is not None and not waited:
                    on_wait(holder)
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not _names(p, fd):   # the holder before us removed the file we opened: lock the one there now
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
            try:
                yield
            finally:
                if _names(p, fd):
                    p.unlink()   # still locked: a process waiting on this file starts over (above)
                fcntl.flock(fd, fcntl.LOCK_UN)
            return
        finally:
            os.close(fd)


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        now, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


# -- paths a user names ----------------------------------------------------------------------------------------
# The type of a path is read with ``stat`` before anything opens it: opening a FIFO for reading blocks until a
# writer comes, and a device can be read forever, so neither is ever opened. Each check raises an ``InputError``
# naming the field and the path, before anything is written.
def _kind_of(mode: int) -> str | None:
    """What a non-regular, non-directory file is, in words (None for a regular file or a directory)."""
    for test, words in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return None


def _mode(p: Path, field: str, what: str, shown: Path | None = None) -> int | None:
    """``p``'s mode (symlinks followed), None when nothing is there."""
    try:
        return p.stat().st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise InputError(field, f"{shown or p}: a part of this path is a file, not a directory", allowed=what) from None
    except OSError as err:
        raise InputError(field, f"{shown or p} cannot be used ({err.strerror})", allowed=what) from None


def _nearest_ancestor_is_a_directory(p: Path, field: str, what: str) -> None:
    for parent in p.absolute().parents:
        mode = _mode(parent, field, what, shown=p)
        if mode is None:
            continue
        if not stat.S_ISDIR(mode):
            raise InputError(field, f"{p}: {parent} is {_kind_of(mode) or 'a file'}, not a directory", allowed=what)
        return


def require_file(path: str | os.PathLike[str], field: str, *, what: str = "a file") -> Path:
    """``path`` as a ``Path`` if it is a regular file (symlinks followed)."""
    p = Path(path)
    mode = _mode(p, field, what)
    if mode is None:
        raise InputError(field, f"{p} does not exist", allowed=what)
    if stat.S_ISDIR(mode):
        raise InputError(field, f"{p} is a directory", allowed=what)
    kind = _kind_of(mode)
    if kind is not None:
        raise InputError(field, f"{p} is {kind}, not a regular file; it is never opened (reading it could block "
                                "forever)", allowed=what)
    return p


def require_writable_file_path(path: str | os.PathLike[str], field: str, *, what: str = "a file path",
                               parent_must_exist: bool = False) -> Path:
    """``path`` as a ``Path`` if a regular file may be created or replaced there: it is missing or a regular file,
    and its nearest existing ancestor is a directory — its parent itself with ``parent_must_exist`` (a file a
    user names on the command line: a typo in a directory name is refused, not made into new directories)."""
    p = Path(path)
    mode = _mode(p, field, what)
    if mode is None:
        _nearest_ancestor_is_a_directory(p, field, what)
        if parent_must_exist and not p.absolute().parent.is_dir():
            raise InputError(field, f"{p}: the directory {p.absolute().parent} does not exist; create it first",
                             allowed=what)
    elif stat.S_ISDIR(mode):
        raise InputError(field, f"{p} is a directory", allowed=what)
    elif (kind := _kind_of(mode)) is not None:
        raise InputError(field, f"{p} is {kind}, not a regular file", allowed=what)
    return p


def require_directory_path(path: str | os.PathLike[str], field: str, *, what: str = "a directory path") -> Path:
    """``path`` as a ``Path`` if a directory is (or may be made) there: it is a directory (symlinks followed) or
    missing, and its nearest existing ancestor is a directory — so a run or a log never lands half made beside a
    file it cannot replace. Nothing is created here."""
    p = Path(path)
    mode = _mode(p, field, what)
    if mode is None:
        _nearest_ancestor_is_a_directory(p, field, what)
    elif not stat.S_ISDIR(mode):
        raise InputError(field, f"{p} is {_kind_of(mode) or 'a file'}, not a directory", allowed=what)
    return p


def safe_name(name: str, field: str) -> str:
    """``name`` if it can be one path component: not empty, not ``.`` or ``..``, no ``/``, ``\\`` or NUL (so it
    cannot lead outside the directory it is placed in)."""
    if not name.strip() or name.strip() in (".", "..") or any(c in name for c in "/\\\x00"):
        raise InputError(field, f"{brief(name)} cannot name a directory: a name may not be empty, '.' or '..', or "
                                "contain '/', '\\' or NUL (it would lead outside the directory it belongs in)",
                         allowed="a plain name such as dropout-study")
    return name


def file_within(directory: str | os.PathLike[str], name: str, field: str) -> Path | None:
    """``directory/name`` if it is a regular file that stays inside ``directory`` once symlinks are resolved; None
    if nothing has that name. A link that leads outside ``directory`` (a run directory given to someone else's
    report must not carry ``~/.ssh/id_rsa`` into it), a FIFO, a device or a subdirectory is an ``InputError``
    naming ``field`` — raised before anything is opened."""
    path = Path(directory) / name
    if not os.path.lexists(path):
        return None
    if not path.resolve().is_relative_to(Path(directory).resolve()):
        raise InputError(field, f"{path} is a link that leads outside {directory}; it is not read",
                         allowed="files that lie inside the directory")
    return require_file(path, field)
