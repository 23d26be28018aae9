"""Atomic writes: the one place the project writes a file or folder to a temp name and renames it.

Readers never see half a file: the content goes to an unused name beside the target (same file
system, so the rename is atomic) and replaces the target only when it is complete; on any error
the temp is removed and the target is left as it was.

Temp files are opened with ``"x"`` rather than made by ``tempfile.mkstemp``, whose 0600 mode the
rename would hand to the output: a file written here gets the umask's usual mode, like any other.
Temp folders are made with ``mkdir`` for the same reason (``mkdtemp`` makes them 0700)::

    atomic_write(path, json.dumps(report))
    with atomic_path(png) as tmp:        # a writer that wants a path (savefig, save_pretrained)
        fig.savefig(tmp)
    with atomic_folder(out) as tmp:      # a whole folder, replacing an earlier one
        model.save_pretrained(tmp)
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

__all__ = ["atomic_folder", "atomic_path", "atomic_write", "temp_beside"]


def temp_beside(path: str | os.PathLike[str]) -> Path:
    """An unused hidden name beside ``path`` that keeps its suffix (``savefig`` reads the format
    from it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{uuid4().hex[:12]}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside ``path`` that replaces ``path`` when the block ends without error.

    The block must create the file (the temp path does not exist yet). The parent folder is
    created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns ``path``.

    Args:
        path: the file to write or replace; its folder is created if needed.
        data: the whole content.
        fsync: flush the content to disk before the rename (for files that must survive a
            power cut, such as logs other runs append to).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(raw)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty temp folder beside ``path`` that replaces ``path`` (and any earlier folder
    there) when the block ends without error.

    An earlier folder is first renamed aside and removed after the swap, so a reader finds
    either the old folder or the new one. Two processes writing the same folder each swap in a
    complete copy; the last one stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid4().hex[:12]}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.{uuid4().hex[:12]}.old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
