"""Where QueryAgent keeps its state: the memory store, the Chroma catalog, converted models, logs.

One folder, ``~/.queryagent`` by default, moved with ``QUERYAGENT_HOME``. It is never inside the
package folders, because ``langgraph dev`` reloads the server when files there change.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "QUERYAGENT_HOME"


def queryagent_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the QueryAgent home folder, creating it if needed.

    Args:
        home: an explicit folder; when ``None``, ``$QUERYAGENT_HOME`` or ``~/.queryagent``.
    """
    path = (
        Path(home)
        if home is not None
        else Path(os.environ.get(HOME_ENV) or Path.home() / ".queryagent")
    )
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
