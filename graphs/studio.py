"""The long-term memory store for ``langgraph dev`` / LangGraph Studio.

``langgraph.json`` points the server's ``store.path`` here, so a run started from Studio or the
server's API reads the same shopper memory as the CLI (the SQLite store in the QueryAgent home,
``$QUERYAGENT_HOME``) instead of an empty in-memory server store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.store.base import BaseStore

from memory_store import open_store


@asynccontextmanager
async def generate_store() -> AsyncIterator[BaseStore]:
    store = open_store()
    try:
        yield store
    finally:
        conn = getattr(store, "conn", None)
        if conn is not None:
            conn.close()
