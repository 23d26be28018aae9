"""Checks of what a user types on a command line: argparse types and one-line refusals.

Argument parsing stays argparse's (standard library, maintained); these are the ``type=``
callables and the parser class both CLIs (``queryagent``, ``queryagent-train``) use, so a bad
value is one line and exit 2 before any work starts, never a traceback after it (issue 25:
``--batch-size 0`` failed after the data loaded, ``--max-refinements -1`` after 47 s of work,
``--since 1e300`` with an ``OverflowError``).
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime
from typing import NoReturn

from graphs.safe_text import safe

__all__ = [
    "OneLineArgumentParser",
    "TimeRangeError",
    "model_arg",
    "non_negative_int",
    "positive_int",
    "unix_time",
]


class OneLineArgumentParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line (``prog: error: ...``) and exit 2.

    argparse prints the whole usage block before the error; the house rule for user errors is
    one line (``--help`` still prints the usage). Subparsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {safe(message)}\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (a batch size, a count of workers)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a refinement budget: 0 is single turn)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def model_arg(text: str) -> str:
    """A ``--model`` value: an empty one would name the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty model name: give a Hugging Face id or a model folder"
        )
    return text


class TimeRangeError(ValueError):
    """A time in seconds that no calendar date matches (not finite, or beyond year 9999)."""


def unix_time(seconds: float, what: str) -> datetime:
    """Unix seconds as an aware UTC time.

    Raises:
        TimeRangeError: ``nan``, an infinity, or a time outside the years 1 to 9999 (Python's
            dates), which a store would otherwise keep as null or as an impossible date.
    """
    if not math.isfinite(seconds):
        raise TimeRangeError(f"{what}: time {seconds!r} is not a finite number of Unix seconds")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise TimeRangeError(
            f"{what}: time {seconds!r} is out of range (Unix seconds between "
            f"{datetime.min.replace(tzinfo=UTC).timestamp():.0f} and "
            f"{datetime.max.replace(tzinfo=UTC).timestamp():.0f}, years 1 to 9999)"
        ) from None


def leave_process(code: int) -> NoReturn:
    """End the process now with ``code``, skipping the interpreter's shutdown.

    For a command interrupted while native threads work (the drafter's batching thread inside a
    torch forward pass): at shutdown Python ends daemon threads with ``pthread_exit``, whose
    forced unwinding through a C++ ``noexcept`` frame aborts the process ("terminate called
    without an active exception", exit 134) after the one-line message was printed. Everything
    the command keeps (the evaluation cache) is written by whole appends and renames, so there
    is nothing left to flush but the standard streams.
    """
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
