"""Trajectory files: JSON lines, one ``TrajectoryRecord`` per line, and a sidecar
``<file>.meta.json`` saying which command, config, catalog and code version made it and how many
records it holds.

New files are written atomically (a temp file beside the target, renamed when complete); appends
(``recommend --log``) go out in one write under a file lock, after the existing file is validated.
Appending to a v1 or v2 file is refused (write v3 to a new file); reading converts them
(``graphs.record.migration``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock
from pydantic import ValidationError

from graphs.record.build import code_version, now
from graphs.record.migration import parse_line
from graphs.record.schema import (
    OLD_SCHEMAS,
    SCHEMA,
    TrajectoryError,
    TrajectoryRecord,
    one_line,
)
from memory_store.files import atomic_path, atomic_write

__all__ = [
    "LoadedTrajectories",
    "TrajectoryWriter",
    "append_trajectories",
    "check_appendable",
    "load_trajectories",
    "meta_path",
    "read_meta",
    "write_trajectories",
]

logger = logging.getLogger(__name__)


def meta_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of a trajectory file: ``<path>.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def _sidecar(
    meta: dict[str, Any], count: int, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The sidecar: the caller's ``meta`` (command, config, catalog, anything else) plus the
    fields every trajectory file has. On append the first ``created`` is kept."""
    stamp = now()
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "command": " ".join(sys.argv),
        "config": {},
        "code_version": None,
        "catalog": None,
    }
    out.update(meta)
    out["schema"] = SCHEMA
    out["code_version"] = out["code_version"] or code_version()
    out["record_count"] = count
    out["created"] = (previous or {}).get("created", stamp)
    if previous is not None:
        out["updated"] = stamp
    return out


def _write_atomic(path: Path, text: str) -> None:
    try:
        atomic_write(path, text, fsync=True)
    except OSError as err:
        raise TrajectoryError(f"{path}: cannot write in {path.parent} ({err.strerror})") from None


def _check_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise TrajectoryError(f"{path}: folder {path.parent} does not exist")


def read_meta(path: str | os.PathLike[str], *, readable: bool = False) -> dict[str, Any] | None:
    """The sidecar of a trajectory file, or None when it has none.

    Args:
        path: the ``.jsonl`` file.
        readable: accept any schema this package can read (v1, v2 too), not only the one it
            writes.

    Raises:
        TrajectoryError: the sidecar is not a JSON object or names another schema.
    """
    side = meta_path(path)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrajectoryError(f"{side}: not a JSON sidecar ({err})") from None
    if not isinstance(meta, dict):
        raise TrajectoryError(f"{side}: not a JSON object")
    accepted = (SCHEMA, *OLD_SCHEMAS) if readable else (SCHEMA,)
    if meta.get("schema") not in accepted:
        raise TrajectoryError(
            f"{side}: schema {meta.get('schema')!r}, expected {SCHEMA!r}; "
            "write to another file or use the loader of that schema"
        )
    return meta


class TrajectoryWriter:
    """Writes a trajectory file atomically: lines go to a temp file beside ``path``, which
    replaces ``path`` (and the sidecar is written) only when the ``with`` block ends cleanly.

    For exports too large to hold in memory::

        with TrajectoryWriter(out, meta) as writer:
            for chunk in chunks:
                writer.write(records_of(chunk))
    """

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        self.count = 0
        self._file: IO[str] | None = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> TrajectoryWriter:
        _check_folder(self.path)
        # The file goes to a temp name (memory_store.files.atomic_path) that replaces ``path``
        # when the block ends cleanly; on an error the temp is removed and ``path`` is untouched.
        self._stack = contextlib.ExitStack()
        try:
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._file = self._stack.enter_context(open(tmp, "x", encoding="utf-8"))
        except OSError as err:
            self._stack.close()
            raise TrajectoryError(
                f"{self.path}: cannot write in {self.path.parent} ({err.strerror})"
            ) from None
        return self

    def write(self, records: Iterable[TrajectoryRecord]) -> None:
        assert self._file is not None, "use TrajectoryWriter in a with block"
        for record in records:
            self._file.write(record.to_json() + "\n")
            self.count += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._file is not None and self._stack is not None
        if exc_type is None:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._stack.__exit__(exc_type, exc, tb)  # closes the file, then renames or removes it
        if exc_type is None:
            _write_atomic(
                meta_path(self.path), json.dumps(_sidecar(self.meta, self.count), indent=2)
            )


def write_trajectories(
    path: str | os.PathLike[str], records: Iterable[TrajectoryRecord], meta: dict[str, Any]
) -> Path:
    """Write ``records`` as a new JSONL file (replacing any) and its sidecar, atomically.

    Args:
        path: the ``.jsonl`` file; its folder must exist.
        records: the records, written in this order.
        meta: sidecar fields: ``command`` (default: this process's argv), ``config``,
            ``catalog`` (e.g. ``{"location", "collection"}``), anything else worth keeping;
            ``schema``, ``code_version``, ``record_count`` and ``created`` are filled in.

    Returns:
        ``path``.

    Raises:
        TrajectoryError: the folder does not exist.
    """
    with TrajectoryWriter(path, meta) as writer:
        writer.write(records)
    return Path(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    """The file opened for appending, under an exclusive lock (two CLIs logging at once).

    The lock is ``filelock.FileLock`` on a hidden ``.<name>.lock`` beside the file (portable,
    unlike ``fcntl.flock``); it is held from before the file is opened until it is closed.
    """
    _check_folder(path)
    with FileLock(path.with_name(f".{path.name}.lock")):
        try:
            f = path.open("a+", encoding="utf-8")
        except OSError as err:
            raise TrajectoryError(f"{path}: cannot open for appending ({err.strerror})") from None
        with f:
            yield f


def check_appendable(path: str | os.PathLike[str]) -> int:
    """How many records ``path`` holds, after checking that records can be appended to it.

    A missing file is fine (0); its folder must exist. An existing file must be a valid
    trajectory file of this schema (every line, and the sidecar when there is one).

    Raises:
        TrajectoryError: missing folder, another schema, or an invalid line (``file:line: ...``).
    """
    path = Path(path)
    _check_folder(path)
    read_meta(path)
    if not path.exists():
        return 0
    return len(_load(path, skip_invalid=False, accept_old=False))  # old lines: write a new file


def append_trajectories(
    path: str | os.PathLike[str], records: Iterable[TrajectoryRecord], meta: dict[str, Any]
) -> int:
    """Append ``records`` to a trajectory file (``recommend --log``) and rewrite its sidecar.

    Creates the file and sidecar when absent. The existing file is validated first, so records
    are never appended to a file that would not load. The new lines go out in one write under a
    lock; the sidecar is replaced atomically and keeps the first ``created`` (``updated`` says
    when the last append happened; ``command``/``config`` are the last append's).

    Returns:
        The record count after appending.

    Raises:
        TrajectoryError: as ``check_appendable``.
    """
    path = Path(path)
    lines = [r.to_json() + "\n" for r in records]
    _check_folder(path)
    read_meta(path)  # before the file is created: another schema is refused untouched
    with _locked(path) as f:
        previous = read_meta(path)
        f.seek(0)
        existing = _validate_lines(path, f, skip_invalid=False)
        end = f.seek(0, os.SEEK_END)
        if end > 0:
            f.seek(end - 1)
            if f.read(1) != "\n":
                lines.insert(0, "\n")  # a hand-edited file without a final newline
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())
        count = len(existing) + sum(1 for line in lines if line != "\n")
        if previous is None and existing:
            previous = {}  # a log without a sidecar: the sidecar starts now
        _write_atomic(meta_path(path), json.dumps(_sidecar(meta, count, previous), indent=2))
    return count


class LoadedTrajectories(list[TrajectoryRecord]):
    """``load_trajectories``' result: a plain list of records, plus what was skipped.

    Attributes:
        path: the file read.
        skipped: invalid lines left out (only with ``skip_invalid=True``; else 0).
        problems: one ``"file:line: what is wrong"`` per skipped line.
    """

    def __init__(
        self, records: Iterable[TrajectoryRecord], path: Path, problems: list[str]
    ) -> None:
        super().__init__(records)
        self.path = path
        self.problems = problems
        self.skipped = len(problems)


def _validate_lines(
    path: Path, f: IO[str], *, skip_invalid: bool, accept_old: bool = False
) -> LoadedTrajectories:
    records: list[TrajectoryRecord] = []
    problems: list[str] = []
    try:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(parse_line(line, accept_old=accept_old))
            except ValidationError as err:
                problem = f"{path}:{number}: {one_line(err)}"
                if not skip_invalid:
                    raise TrajectoryError(problem) from None
                problems.append(problem)
    except UnicodeDecodeError as err:
        raise TrajectoryError(f"{path}: not UTF-8 text ({err.reason})") from None
    return LoadedTrajectories(records, path, problems)


def load_trajectories(
    path: str | os.PathLike[str], *, skip_invalid: bool = False
) -> LoadedTrajectories:
    """Read and validate every line of a trajectory file.

    Args:
        path: the ``.jsonl`` file.
        skip_invalid: leave invalid lines out (counted in ``result.skipped``, described in
            ``result.problems``, and logged) instead of raising on the first one.

    Returns:
        A ``LoadedTrajectories``: a ``list[TrajectoryRecord]`` in file order with ``skipped``
        and ``problems`` attributes. Blank lines are ignored.

    Raises:
        TrajectoryError: the file is missing or unreadable, its sidecar names another schema, or
            (unless ``skip_invalid``) a line is not a valid v3 record (or v1/v2 record, converted
            to v3 on read): ``"file.jsonl:3: ..."``.
    """
    return _load(path, skip_invalid=skip_invalid, accept_old=True)


def _load(
    path: str | os.PathLike[str], *, skip_invalid: bool, accept_old: bool
) -> LoadedTrajectories:
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(f"{path}: no such trajectory file")
    read_meta(path, readable=accept_old)
    try:
        with path.open(encoding="utf-8") as f:
            result = _validate_lines(path, f, skip_invalid=skip_invalid, accept_old=accept_old)
    except OSError as err:
        raise TrajectoryError(f"{path}: cannot read ({err.strerror})") from None
    if result.skipped:
        logger.warning("%s: skipped %d invalid line(s)", path, result.skipped)
    return result
