"""The one atomic-write helper: whole files or folders, or nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memory_store.files import atomic_folder, atomic_path, atomic_write


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_replaces_with_the_umask_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    atomic_write(path, "one")
    atomic_write(path, b"two", fsync=True)
    assert path.read_text() == "two"
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp left


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == path.parent  # same file system
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_atomic_folder_swaps_a_whole_folder(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with atomic_folder(out) as tmp:
        (tmp / "a").write_text("1")
        assert not out.exists()  # readers see nothing until the block ends
    with atomic_folder(out) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]  # replaced, not merged
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
