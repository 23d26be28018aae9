"""Where QueryAgent keeps its state: the memory store, the Chroma catalog, converted models, logs.

One folder, ``~/.queryagent`` by default, moved with ``QUERYAGENT_HOME``. It is never inside the
package folders, because ``langgraph dev`` reloads the server when files there change.

The home holds shopper histories (personal data), so it is private: a home this module creates is
``0700``, and :func:`private_file` creates files ``0600`` whatever the umask. Reports and logs a
user names on the command line are not in the home and keep the umask's mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "HOME_ENV",
    "HomeError",
    "home_path",
    "private_dir",
    "private_file",
    "private_tree",
    "queryagent_home",
]

HOME_ENV = "QUERYAGENT_HOME"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class HomeError(RuntimeError):
    """The home folder cannot be created or written (one line, for a CLI)."""


def home_path(home: str | os.PathLike[str] | None = None) -> Path:
    """Where the home is (as ``queryagent_home`` finds it), without creating it."""
    path = (
        Path(home)
        if home is not None
        else Path(os.environ.get(HOME_ENV) or Path.home() / ".queryagent")
    )
    return path.expanduser().resolve()


def queryagent_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the QueryAgent home folder, creating it (mode ``0700``) if needed.

    Args:
        home: an explicit folder; when ``None``, ``$QUERYAGENT_HOME`` or ``~/.queryagent``.

    Raises:
        HomeError: the folder cannot be created (a read-only parent, a file in the way).
    """
    return private_dir(home_path(home))


def private_dir(path: Path) -> Path:
    """``path`` as a folder, created ``0700`` when missing (parents get the umask's mode).

    An existing folder keeps its mode: a user who opened it up did so on purpose.

    Raises:
        HomeError: it cannot be created.
    """
    if path.is_dir():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    except OSError as err:
        raise HomeError(
            f"cannot create the folder {path} ({err.strerror or err}); choose a writable "
            f"--home or ${HOME_ENV}"
        ) from None
    return path


def private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with mode ``0600`` if it does not exist (an existing file is kept).

    Call it before a library (SQLite, a log writer) opens the file, so the file is private from
    its first byte; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.

    Raises:
        HomeError: it cannot be created.
    """
    if os.path.exists(path):
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
    except FileExistsError:  # another process made it first
        return
    except OSError as err:
        raise HomeError(
            f"cannot create {path} ({err.strerror or err}); the folder must be writable"
        ) from None
    os.close(fd)


def private_tree(root: str | os.PathLike[str]) -> None:
    """Take the group and other permissions off everything below ``root`` (``root`` itself and
    symbolic links are left as they are).

    Libraries write into the home with the umask's modes: the fitted ranking models, Chroma's
    index files and the hub cache were 0644 in 0755 folders at umask 022, and 0666/0777 at umask
    000 (issue 25). The CLI calls this after each command. Files it cannot change (a read-only
    home, another user's file) are skipped: the command already said what it could not do.
    """
    base = Path(root)
    if not base.is_dir():
        return
    for folder, dirs, files in os.walk(base):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                mode = stat.S_IMODE(st.st_mode)
                if not stat.S_ISLNK(st.st_mode) and mode & 0o077:
                    os.chmod(path, mode & 0o700)
            except OSError:
                continue
