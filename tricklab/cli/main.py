"""The ``tricklab`` command: argument parsing, exit codes, errors for people.

Exit codes (DESIGN.md): 0 the command did its job (a diverged run is a result, not an error); 2 bad input
(recipe, flag, data path) with a one-paragraph message naming the field and the allowed values; 1 an
internal error.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tricklab.errors import MAX_MESSAGE, InputError, Interrupted, TricklabError, brief, elide
from tricklab.registry import closest, did_you_mean

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C

# Failures of the machine, not of tricklab or of the input: exit 1 with a message, without "this is a bug".
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


class ArgumentsRefused(SystemExit):
    """argparse refused the command line (exit code 2); ``field`` is the flag or argument it names, if any."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(EXIT_INPUT)
        self.field, self.message = field, message


_ARGUMENT = re.compile(r"^argument ([^:]+): (.*)$", re.S)
_NAMED = ("unrecognized arguments: ", "the following arguments are required: ")   # argparse's words, then names


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code and message shape for bad flags, and "did you mean" for a mistyped choice
    (a subcommand, ``--executor``, ``--kind``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        message = elide(message.replace("\n", " "), MAX_MESSAGE - len(self.prog) - 2)   # a 100 KB flag stays short
        fix = f"run '{self.prog} --help' for the allowed flags"
        sys.stderr.write(f"error: {self.prog}: {message}\n({fix})\n")
        m, field = _ARGUMENT.match(message), None
        if m:
            field, message = m.group(1).split("/")[0], m.group(2)
        elif message.startswith(_NAMED):
            field = message.removeprefix(_NAMED[0]).removeprefix(_NAMED[1]).split(",")[0].split()[0]
        raise ArgumentsRefused(field, f"{self.prog}: {message} ({fix})")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice: {brief(value)}{did_you_mean(value, names)} "
                                                 f"(choose from {', '.join(names)})")


def build_parser() -> argparse.ArgumentParser:
    from tricklab.cli import doctor_cmd, lesson_cmd, lr_find_cmd, report_cmd, study_cmd, train_cmd, tricks_cmd
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
    lr_find_cmd.add_parser(sub)
    return parser


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


class _Failure:
    """What went wrong, for the ``--json`` error object: ``field`` (or None) and the message a person reads."""

    def __init__(self) -> None:
        self.field: str | None = None
        self.message = ""

    def say(self, text: str, field: str | None = None, *, prefix: str = "error: ") -> None:
        """Write ``prefix`` and ``text`` to stderr as the command's error and keep ``text`` for the JSON object."""
        sys.stderr.write(f"{prefix}{text.rstrip()}\n")
        self.field, self.message = field, text.strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code. With ``--json`` every
    exit code but 0 ends stdout with one line ``{"error": {"code", "field", "message"}}``."""
    words = list(sys.argv[1:] if argv is None else argv)
    failure = _Failure()
    code = _main(words, failure)
    if code != EXIT_OK and "--json" in (words[:words.index("--")] if "--" in words else words):
        if not failure.message:
            failure.message = f"the command ended with exit code {code}"
        sys.stdout.flush()
        print(json.dumps({"error": {"code": code, "field": failure.field, "message": failure.message}}), flush=True)
    return code


def _main(words: list[str], failure: _Failure) -> int:
    parser = build_parser()
    try:
        with _sigterm_as_interrupt():
            args = _parse(parser, bare_overrides(parser, words))
            if not getattr(args, "command", None):
                parser.print_help()
                failure.say("no command given; run 'tricklab COMMAND' with one of the commands above "
                            "(tricklab train runs the built-in default)", "COMMAND")
                return EXIT_INPUT
            return int(args.run(args) or EXIT_OK)
    except InputError as err:
        failure.say(str(err), err.field)
        return EXIT_INPUT
    except Interrupted as err:
        command = err.resume or shlex.join(["tricklab", *words])
        failure.say(f"{err}; to continue: {command}", prefix="interrupted: ")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        failure.say("stopped before anything was kept; run the command again", prefix="interrupted: ")
        return EXIT_INTERRUPTED
    except ArgumentsRefused as refused:
        failure.field, failure.message = refused.field, refused.message
        return EXIT_INPUT
    except SystemExit as exit_:   # --help and --version (0)
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_INPUT
    except OSError as err:
        if err.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(err, failure)
        where = f" ({err.filename})" if err.filename else ""
        failure.say(f"{err.strerror or err}{where}. Files are written whole or not at all, so nothing "
                    "half-written was kept; fix this (free disk space) and run the command again (an "
                    "interrupted run continues with tricklab train --resume RUN_DIR, a study with the same "
                    "tricklab study command)")
        return EXIT_INTERNAL
    except TricklabError as err:  # tricklab's own non-input errors (a store locked too long, ...)
        failure.say(str(err))
        return EXIT_INTERNAL
    except Exception as err:  # noqa: BLE001 - the last line of defence: an internal error is exit code 1
        return _internal_error(err, failure)


def _parse(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """``parser.parse_args(words)``, but words no command takes are refused by the command's own parser (its
    usage, its ``--help``) with the nearest flag it has: ``--jsn`` → ``--json``."""
    args, extra = parser.parse_known_args(words)
    if extra:
        sub = _command_parser(parser, getattr(args, "command", None)) or parser
        flags = [o for a in sub._actions for o in a.option_strings]
        first = extra[0].partition("=")[0]
        hint = _flag_hint(first, flags) if first.startswith("-") else ""
        sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def _flag_hint(word: str, flags: list[str]) -> str:
    """" — did you mean …?" for an unknown flag: the command's nearest flag when it is a near miss (``--jsn``),
    else a recipe key it resembles where the command takes ``--set`` (``--epoch`` → ``--set epochs=…``)."""
    if closest(word, flags, cutoff=0.8) is not None:
        return did_you_mean(word, flags)
    if "--set" in flags:
        from tricklab.recipe.io import recipe_key_guesses

        keys = recipe_key_guesses(word)
        if keys:
            return (" — did you mean the recipe key " + " or ".join(repr(k) for k in keys)
                    + f"? Recipe keys are set with --set KEY=VALUE or a bare KEY=VALUE: --set {keys[0]}=VALUE")
    return did_you_mean(word, flags)


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    return commands.get(command) if command else None


def bare_overrides(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """``words`` with every bare ``key=value`` after a command that takes ``--set`` written as ``--set key=value``
    (Hydra's habit: ``tricklab train optimizer.lr=0.1 epochs=3``), in place, so their order is kept. A word that
    names an existing file stays a recipe path; the values of flags (``--runs-dir a=b``) and everything after
    ``--`` are left as they are."""
    at = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    sub = _command_parser(parser, words[at]) if at is not None else None
    if at is None or sub is None:
        return words
    takes_value = {o for a in sub._actions if a.nargs != 0 for o in a.option_strings}
    if "--set" not in takes_value:
        return words
    out, i = list(words[:at + 1]), at + 1
    while i < len(words):
        word = words[i]
        if word == "--":
            return out + words[i:]
        if word.startswith("-"):
            out.append(word)
            matches = [o for o in takes_value if o == word or (word.startswith("--") and o.startswith(word))]
            if "=" not in word and (word in takes_value or len(matches) == 1) and i + 1 < len(words):
                out.append(words[i + 1])   # the flag's value, whatever it looks like
                i += 1
        elif "=" in word and "/" not in word.partition("=")[0] and not os.path.lexists(word):
            out += ["--set", word]
        else:
            out.append(word)
        i += 1
    return out


def _internal_error(err: BaseException, failure: _Failure) -> int:
    message = f"{type(err).__name__}: {elide(str(err), MAX_MESSAGE)}"
    if os.environ.get("TRICKLAB_DEBUG"):
        failure.say(message, prefix="internal error: ")
        traceback.print_exception(err)
    else:
        failure.say(f"{message}\n(this is a bug in tricklab; set TRICKLAB_DEBUG=1 to see the traceback, and report "
                    "it with the command you ran)", prefix="internal error: ")
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
