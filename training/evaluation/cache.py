"""The evaluation's per-method cache of per-user outcomes, which an interrupted run resumes from.

One JSONL file per method label in the cache folder: a header line (the configuration's key: what
the method's results depend on) and one ``UserOutcome`` a line. A cache written under another
configuration (another model, dtype, fit, seed ...) is parked in ``other-configurations/`` under
its key's digest rather than deleted, and comes back when that configuration runs again. Shards of
one run share the files: the header is created in one step and rows are appended as whole lines.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from memory_store.paths import private_dir, private_file
from training.evaluation.metrics import UserOutcome
from training.evaluation.specs import MethodSpec

PARKED_DIR = "other-configurations"  # caches of configurations other than the running one
_GONE = object()  # _read_header's answer for a file another shard moved away meanwhile


def _without_path(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k != "model"}


def _same_key(header: Any, key: dict[str, Any]) -> bool:
    """Whether a cache's header was written under ``key``. The model's path is kept in the
    header for the reader but not compared: its digest names what it loads, and the same folder
    has another path in another clone (the whole-split cache is tracked in git and resumed on
    other machines) or when named relatively (``make eval``) rather than by the default."""
    return isinstance(header, dict) and _without_path(header) == _without_path(key)


def _key_digest(key: dict[str, Any]) -> str:
    """A short name for a configuration (path left out, as ``_same_key`` compares)."""
    text = json.dumps(_without_path(key), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_header(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _read_header(path: Path) -> Any:
    try:
        with path.open() as f:
            return _parse_header(f.readline())
    except FileNotFoundError:
        return _GONE


def _replace_if_longer(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` unless ``dst`` already holds more rows (then drop ``src``)."""
    try:
        if dst.exists() and _line_count(dst) >= _line_count(src):
            src.unlink()
        else:
            os.replace(src, dst)
    except FileNotFoundError:
        pass  # another shard moved it first


def _line_count(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


class OutcomeCache:
    """The cache folder of one report (``report.cache/``): one file per method label."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def path(self, spec: MethodSpec) -> Path:
        return self.cache_dir / f"{spec.label.replace('/', '_')}.jsonl"

    def parked_path(self, spec: MethodSpec, key: dict[str, Any]) -> Path:
        stem = self.path(spec).stem
        return self.cache_dir / PARKED_DIR / f"{stem}.{_key_digest(key)}.jsonl"

    def load(
        self, spec: MethodSpec, key: dict[str, Any], *, drop_stale: bool = True
    ) -> dict[str, UserOutcome]:
        """The users cached under configuration ``key``. A cache written under another one is
        parked under its key's digest rather than deleted, and a parked cache of this
        configuration comes back: going back and forth between configurations loses no rows.
        ``drop_stale=False`` moves nothing and reads this configuration's rows wherever they
        are."""
        path = self.path(spec)
        parked = self.parked_path(spec, key)
        header = _read_header(path)
        if header is not _GONE and not _same_key(header, key):
            if not drop_stale:
                path = parked  # look, move nothing
            else:
                if isinstance(header, dict):  # a file without a header holds nothing to keep
                    aside = self.parked_path(spec, header)
                    private_dir(aside.parent)
                    _replace_if_longer(path, aside)
                path.unlink(missing_ok=True)
        if drop_stale and not path.exists() and parked.exists():
            try:
                os.replace(parked, path)  # this configuration's rows, back from the side
            except FileNotFoundError:
                pass  # another shard brought them back first
        if not path.exists():
            return {}
        lines = path.read_text().splitlines()
        if not lines or not _same_key(_parse_header(lines[0]), key):
            return {}
        done: dict[str, UserOutcome] = {}
        for line in lines[1:]:
            try:
                outcome = UserOutcome(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a line cut short by an interruption; that user runs again
            done[outcome.user_id] = outcome
        return done

    def start(self, path: Path, key: dict[str, Any]) -> None:
        """Create the cache with its header in one step: shards started together must neither
        truncate each other's rows nor read a file whose header is not written yet (which would
        look like another configuration's cache and be deleted)."""
        private_dir(path.parent)
        if path.exists():
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        private_file(tmp)  # per-user outcomes: 0600 like everything in the home
        tmp.write_text(json.dumps(key) + "\n")
        try:
            os.link(tmp, path)  # fails if another shard made it first; theirs has the same key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()


@contextmanager
def appender(path: Path) -> Iterator[Any]:
    """A function appending outcomes to the cache at ``path``, as one unbuffered ``O_APPEND``
    write per call: whole lines land at the end of the file even when shards of the same run
    append to it at once (a buffered file object flushes at arbitrary byte boundaries, which
    could interleave two shards' lines)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    cut = False
    if path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
    if cut:  # a row cut short (a short write when a fatal signal arrives, a power loss): end
        os.write(fd, b"\n")  # its line, or the next row is glued to it and lost with it

    def append(outcomes: Sequence[UserOutcome]) -> None:
        data = "".join(json.dumps(asdict(o)) + "\n" for o in outcomes).encode()
        while data:  # a short write only happens when the disk is full
            data = data[os.write(fd, data) :]

    try:
        yield append
    finally:
        os.close(fd)
