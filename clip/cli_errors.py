"""How `clip` ends: bad input is one line on stderr and exit status 2, never a traceback; a bug is
one line saying so and how to see its traceback, exit status 1; `clip --debug ...` (or CLIP_DEBUG=1)
shows the full traceback of any error.

clip.cli.main parses the arguments and hands them to `run` here; nothing here imports a framework.
"""

from __future__ import annotations

import os
import sys

from clip.errors import ClipError, InputError

DEBUG_ENV = "CLIP_DEBUG"
# Arguments that are text for the model (labels, queries, templates), not paths: bytes that are not
# UTF-8 in them reach Python as lone surrogates (surrogateescape) that no tokenizer can take.
TEXT_ARGUMENTS = {"labels": "--labels", "text": "--text", "texts": "--texts", "templates": "--templates"}
EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 1, 130, 141


def debug_requested(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def _expected_errors() -> tuple:
    """The errors that mean bad input (an argument, a file, a model directory, a missing framework)."""
    return (ClipError, ValueError, OSError, ImportError)


def undecodable(value: str) -> str | None:
    """None for text that is valid Unicode; else where the first byte that is not UTF-8 is."""
    for position, char in enumerate(value):
        if "\udc80" <= char <= "\udcff":  # a byte surrogateescape could not decode
            return f"byte {ord(char) - 0xDC00:#04x} at character {position + 1}"
        if "\ud800" <= char <= "\udfff":
            return f"a lone surrogate U+{ord(char):04X} at character {position + 1}"
    return None


def check_text_arguments(args):
    """ValueError naming the first text argument that holds bytes that are not UTF-8."""
    for dest, flag in TEXT_ARGUMENTS.items():
        value = getattr(args, dest, None)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for item in values:
            if not isinstance(item, str) or dest == "templates" and os.path.exists(item):
                continue  # a --templates file: a path, read (and checked) as UTF-8 later
            where = undecodable(item)
            if where is not None:
                raise InputError(
                    f"{flag} is not valid UTF-8 text ({where}); pass it in UTF-8 "
                    "(check the terminal's or the script's encoding)"
                )


def _quiet_broken_pipe():
    """`clip ... | head` closed stdout: stop quietly, as a Unix filter does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _faithful_output():
    """File names that are not UTF-8 are printed as the bytes they are (a traceback otherwise)."""
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        try:
            stream.reconfigure(errors=errors)
        except (AttributeError, ValueError):  # not a TextIOWrapper (pytest's capture, a StringIO)
            pass


def run(args) -> int:
    """Run the parsed command `args.run(args)` and turn what it raises into a message and an exit status."""
    debug = debug_requested(args)
    name = f"clip {args.command}"
    _faithful_output()
    try:
        check_text_arguments(args)
        return args.run(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_BROKEN_PIPE
    except SystemExit as stop:  # a subcommand's own SystemExit("message") is bad input too
        if debug or not isinstance(stop.code, str):
            raise
        print(stop.code if stop.code.startswith("clip ") else f"{name}: {stop.code}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:
        if debug:
            raise
        if isinstance(err, _expected_errors()):
            print(f"{name}: {_message(err)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(
            f"{name}: internal error ({type(err).__name__}: {_message(err)}). This is a bug in clip; "
            f"run the command again with `clip --debug {args.command} ...` (or {DEBUG_ENV}=1) to see the "
            "traceback, and report it.",
            file=sys.stderr,
        )
        return EXIT_BUG


def _message(err: BaseException) -> str:
    """The error's message (a multi-line one, a list of tensors, is kept whole); a KeyError's key."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and err.args:
        text = repr(err.args[0])
    return text
