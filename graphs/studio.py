"""The long-term memory store for ``langgraph dev`` / LangGraph Studio.

``langgraph.json`` points the server's ``store.path`` here, so a run started from Studio or the
server's API reads the same shopper memory as the CLI (the SQLite store in the QueryAgent home)
instead of an empty in-memory server store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from langgraph.store.base import Op, Result
from langgraph.store.sqlite import SqliteStore

from memory_store import open_store


class ThreadedSqliteStore(SqliteStore):
    """``SqliteStore`` with its async API served from a worker thread.

    The server calls the store's async methods; our nodes are sync and call the sync ones. The
    sync store serializes access with its own lock, so both paths are safe on one connection.
    """

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))


@asynccontextmanager
async def generate_store() -> AsyncIterator[SqliteStore]:
    store = open_store(store_class=ThreadedSqliteStore)
    try:
        yield store
    finally:
        store.conn.close()
