"""Checks of what a user types on a command line: argparse types and one-line refusals.

Argument parsing stays argparse's (standard library, maintained); these are the ``type=``
callables and the parser class both CLIs (``queryagent``, ``queryagent-train``) use, so a bad
value is one line and exit 2 before any work starts, never a traceback after it (issue 25:
``--batch-size 0`` failed after the data loaded, ``--max-refinements -1`` after 47 s of work,
``--since 1e300`` with an ``OverflowError``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from agent.nodes import CATALOG_NAMESPACE, CATALOG_STATS_KEY
from graphs.safe_text import safe
from memory_store import DataError, Dataset, open_store
from memory_store.memory import STORE_URL_ENV
from memory_store.paths import HOME_ENV

__all__ = [
    "OneLineArgumentParser",
    "check_replacing",
    "ingest_note",
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


def ingest_note(notes: Sequence[str]) -> str:
    """The loader's notes (``Dataset.notes``) as one line: the first, and how many more."""
    more = f" (and {len(notes) - 1} more like it)" if len(notes) > 1 else ""
    return f"{notes[0]}{more}"


def check_replacing(
    dataset: Dataset, home: str | os.PathLike[str] | None, *, replace: bool
) -> None:
    """Refuse to replace a home's catalog with a data set holding no products or no purchases.

    Issue 25: an empty data folder ingested into a full home exited 0, replaced the fitted
    models (34 catalog queries became 0) and every shopper's fit dropped to 0. ``--replace``
    says it is meant. Reads only: the store is opened read-only, and a home without a store
    has nothing to lose.

    Raises:
        DataError: one line naming the folder and the flag.
    """
    if replace or (dataset.products and any(dataset.sequences.values())):
        return
    held = _catalog_products(home)
    if not held:
        return
    what = "no products" if not dataset.products else "no purchases"
    raise DataError(
        dataset.root,
        None,
        f"the data set holds {what}, and ingesting it would replace the home's catalog of "
        f"{held:,} products and its fitted models; add --replace to do so",
    )


def _catalog_products(home: str | os.PathLike[str] | None) -> int:
    """How many products the last ingest into ``home``'s store recorded (0: none)."""
    import sqlite3

    url = os.environ.get(STORE_URL_ENV)
    if url and not url.startswith("sqlite:///"):
        from graphs.offline.ingest import catalog_stats  # a server store: open it as usual

        return int(catalog_stats(open_store(home)).get("products", 0))
    path = url.removeprefix("sqlite:///") if url else None
    if path is None:
        path = str(
            Path(home if home is not None else os.environ.get(HOME_ENV) or "~/.queryagent")
            .expanduser()
            .resolve()
            / "memory.sqlite"
        )
    if path == ":memory:" or not os.path.isfile(path):
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT value FROM store WHERE prefix = ? AND key = ?",
                (".".join(CATALOG_NAMESPACE), CATALOG_STATS_KEY),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # not a store yet: open_store says what is wrong with it
    if row is None:
        return 0
    value = json.loads(row[0]) if isinstance(row[0], str | bytes) else row[0]
    return int(value.get("products", 0))


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

    For a command interrupted while native threads work (``queryagent-train eval``'s graph
    threads and the drafter's batching thread inside a torch forward pass): the shutdown joins
    the thread pool's threads, a further Ctrl-C ends that join, and Python then ends the
    threads still running with ``pthread_exit``, whose forced unwinding through a C++
    ``noexcept`` frame aborts the process ("terminate called without an active exception", exit
    134) after the one-line message was printed (``tests/reliability/test_interrupt.py``).
    Everything the command keeps (the evaluation cache) is written by whole appends and renames,
    so there is nothing left to flush but the standard streams.
    """
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
