"""The ``tricklab`` command: argument parsing, exit codes, errors for people.

Exit codes (DESIGN.md): 0 the command did its job (a diverged run is a result, not an error); 2 bad input
(recipe, flag, data path) with a one-paragraph message naming the field and the allowed values; 1 an
internal error.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tricklab.errors import MAX_MESSAGE, InputError, Interrupted, TricklabError, elide

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C

# Failures of the machine, not of tricklab or of the input: exit 1 with a message, without "this is a bug".
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code and message shape for bad flags."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        message = elide(message.replace("\n", " "), MAX_MESSAGE - len(self.prog) - 2)   # a 100 KB flag stays short
        sys.stderr.write(f"error: {self.prog}: {message}\n(run '{self.prog} --help' for the allowed flags)\n")
        raise SystemExit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    from tricklab.cli import doctor_cmd, lesson_cmd, report_cmd, study_cmd, train_cmd, tricks_cmd
    from tricklab.provenance import __version__

    parser = _Parser(
        prog="tricklab",
        description="The training tricks of deep learning, first-class: apply them from one recipe, "
                    "diagnose a run that does not train, and measure what each trick is worth.",
        epilog="Exit codes: 0 done (a diverged run is a result), 2 bad input, 1 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"tricklab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    train_cmd.add_parser(sub)
    doctor_cmd.add_parser(sub)
    study_cmd.add_parser(sub)
    tricks_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    lesson_cmd.add_parser(sub)
    return parser


def _print_input_error(err: InputError) -> None:
    sys.stderr.write(f"error: {err}\n")


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends a command as Ctrl-C does: the same clean-up (workers ended, trials marked, the resume line)."""
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():   # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        with _sigterm_as_interrupt():
            args = parser.parse_args(argv)
            if not getattr(args, "command", None):
                parser.print_help()
                return EXIT_INPUT
            return int(args.run(args) or EXIT_OK)
    except InputError as err:
        _print_input_error(err)
        return EXIT_INPUT
    except Interrupted as err:
        command = err.resume or shlex.join(["tricklab", *(sys.argv[1:] if argv is None else argv)])
        sys.stderr.write(f"interrupted: {err}; to continue: {command}\n")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_INPUT
    except OSError as err:
        if err.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(err)
        where = f" ({err.filename})" if err.filename else ""
        sys.stderr.write(f"error: {err.strerror or err}{where}. Files are written whole or not at all, so nothing "
                         "half-written was kept; fix this (free disk space) and run the command again (an "
                         "interrupted run continues with `tricklab train --resume RUN_DIR`, a study with the same "
                         "`tricklab study` command)\n")
        return EXIT_INTERNAL
    except TricklabError as err:  # tricklab's own non-input errors (a store locked too long, ...)
        sys.stderr.write(f"error: {err}\n")
        return EXIT_INTERNAL
    except Exception as err:  # noqa: BLE001 - the last line of defence: an internal error is exit code 1
        return _internal_error(err)


def _internal_error(err: BaseException) -> int:
    sys.stderr.write(f"internal error: {type(err).__name__}: {elide(str(err), MAX_MESSAGE)}\n")
    if os.environ.get("TRICKLAB_DEBUG"):
        traceback.print_exception(err)
    else:
        sys.stderr.write("(this is a bug in tricklab; set TRICKLAB_DEBUG=1 to see the traceback)\n")
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
