"""The user memory, persisted on any LangGraph ``BaseStore``.

Layout in the store (all keys and values are plain JSON):

- ``("queryagent", "users")``, key ``user_id``: ``{"user_id", "n_events", "revision"}``, the
  registry of known users. A registered user with ``n_events == 0`` has no history (cold start);
  a user absent from it is unknown. ``revision`` goes up when a stored event is overwritten with
  different content, which invalidates that user's cached profiles.
- ``("queryagent", "events", user_id)``, key ``f"{seq:08d}"``: one :class:`BehaviorEvent`. A
  user's events are always ``seq = 0 .. n_events-1``, no gaps.
- ``("queryagent", "profiles")``, key ``f"{user_id}@{n}"``: the :class:`UserProfile` built from
  the user's first ``n`` events, plus a ``"built_with"`` stamp (revision, decay, root prefix); the
  paper's offline-compressed profile. It is reused only while the stamp still matches.

Everything is synchronous and safe to call from several threads (LangGraph runs sync nodes in a
thread pool): writes that read the registry first are serialised by a lock, and events are
written before the registry entry that makes them visible, so an interrupted write never exposes a
half-written history.

Example::

    from memory_store import UserMemory, load_dataset, open_store
    memory = UserMemory(open_store())          # ~/.queryagent/memory.sqlite
    memory.ingest_dataset(load_dataset("/work/shared/data/amazon-scientific"))
    print(memory.profile("A1SWWHE1L3XR3V").to_text())
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from langgraph.store.base import BaseStore, GetOp, Item, Op, PutOp, Result
from langgraph.store.sqlite import SqliteStore
from tqdm.auto import tqdm

from memory_store.datasets import Dataset
from memory_store.events import BehaviorEvent, events_from_sequence
from memory_store.paths import queryagent_home
from memory_store.profile import DEFAULT_DECAY, ROOT_PREFIX, UserProfile, build_profile

__all__ = [
    "EVENTS_NAMESPACE",
    "PROFILES_NAMESPACE",
    "USERS_NAMESPACE",
    "IngestStats",
    "StoreError",
    "UnknownUserError",
    "UserMemory",
    "events_namespace",
    "open_store",
]

USERS_NAMESPACE = ("queryagent", "users")
EVENTS_NAMESPACE = ("queryagent", "events")
PROFILES_NAMESPACE = ("queryagent", "profiles")
STORE_FILE = "memory.sqlite"

# Operations per store.batch call. Each SQLite put is 5 bound parameters in one multi-row INSERT;
# 500 puts stay far below SQLite's 32,766-parameter limit and Postgres's 65,535.
BATCH_SIZE = 500

T = TypeVar("T")


class StoreError(RuntimeError):
    """The store cannot be opened or is inconsistent (one line, for a CLI)."""


class UnknownUserError(KeyError):
    """The user is not in the memory's registry (never ingested or registered)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(user_id)
        self.user_id = user_id

    def __str__(self) -> str:  # KeyError would print the repr of its argument only
        return (
            f"unknown user {self.user_id!r}: not in the memory "
            "(ingest a data set or register the user first)"
        )


@dataclass(frozen=True)
class IngestStats:
    """What :meth:`UserMemory.ingest_dataset` wrote."""

    users: int
    events: int
    seconds: float


def events_namespace(user_id: str) -> tuple[str, ...]:
    """The namespace holding one user's events."""
    return (*EVENTS_NAMESPACE, user_id)


STORE_URL_ENV = "QUERYAGENT_STORE_URL"


def open_store(home: str | os.PathLike[str] | None = None, url: str | None = None) -> BaseStore:
    """Open the memory's store.

    Args:
        home: the QueryAgent home folder (see ``queryagent_home``); the default store is the
            SQLite file ``memory.sqlite`` in it.
        url: instead (or ``$QUERYAGENT_STORE_URL``), ``sqlite:///<path>``
            (``sqlite:///:memory:`` for a throwaway store) or a ``postgresql://`` URL (needs
            ``pip install langgraph-checkpoint-postgres``).

    Returns:
        A ready store (tables created).

    Raises:
        StoreError: an unsupported URL or a missing Postgres driver.
    """
    url = url or os.environ.get(STORE_URL_ENV) or None
    if url is None:
        return _sqlite_store(str(queryagent_home(home) / STORE_FILE))
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return _sqlite_store(path)
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres_store(url)
    raise StoreError(
        f"unsupported store url {url!r}: use sqlite:///<path> or postgresql://user@host/db"
    )


def _sqlite_store(path: str) -> BaseStore:
    # check_same_thread=False: the store serialises access with its own lock, and LangGraph calls
    # sync nodes from worker threads. Autocommit, because the store issues BEGIN/COMMIT itself.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if path != ":memory:":
        # WAL lets a reader (the dev server) read while another process ingests.
        conn.execute("PRAGMA journal_mode=WAL")
    store = ThreadedSqliteStore(conn)
    store.setup()
    return store


class ThreadedSqliteStore(SqliteStore):
    """``SqliteStore`` whose async API runs the sync one in a worker thread.

    The LangGraph server (``langgraph dev``) calls a store's async methods, which plain
    ``SqliteStore`` refuses; our nodes are sync and call the sync ones. The store serializes
    access with its own lock, so both paths share one connection safely.
    """

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))


def _postgres_store(url: str) -> BaseStore:
    try:
        from langgraph.store.postgres import PostgresStore
        from psycopg import Connection
        from psycopg.rows import dict_row
    except ImportError:
        raise StoreError(
            "a postgresql:// store needs langgraph-checkpoint-postgres: "
            "pip install langgraph-checkpoint-postgres 'psycopg[binary]'"
        ) from None
    conn = Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    store = PostgresStore(conn)  # type: ignore[arg-type]
    store.setup()
    return store


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class UserMemory:
    """Behaviour events and cached profiles of users, on a LangGraph ``BaseStore``.

    Args:
        store: any ``BaseStore`` (``InMemoryStore`` in tests, :func:`open_store` by default,
            ``runtime.store`` inside a graph node).
        decay: recency decay of the interest graph (see :func:`build_profile`).
        root_prefix: category root stripped from node names.
        batch_size: operations per ``store.batch`` call.
    """

    def __init__(
        self,
        store: BaseStore,
        *,
        decay: float = DEFAULT_DECAY,
        root_prefix: str = ROOT_PREFIX,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.store = store
        self.decay = decay
        self.root_prefix = root_prefix
        self.batch_size = batch_size
        # Registry updates are read-modify-write; one lock per memory object keeps threads of
        # one process from interleaving them.
        self._lock = threading.RLock()

    # -- store helpers --------------------------------------------------------------------

    def _get(self, ops: Sequence[GetOp]) -> list[Item | None]:
        results: list[Item | None] = []
        for chunk in _chunks(ops, self.batch_size):
            results.extend(cast("list[Item | None]", self.store.batch(chunk)))
        return results

    def _get_many(self, namespace: tuple[str, ...], keys: Sequence[str]) -> list[Item | None]:
        return self._get([GetOp(namespace, key) for key in keys])

    def _put_many(self, ops: Sequence[PutOp]) -> None:
        for chunk in _chunks(ops, self.batch_size):
            self.store.batch(chunk)

    def _registry(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = self._get_many(USERS_NAMESPACE, user_ids)
        return {item.key: dict(item.value) for item in found if item is not None}

    def _entry(self, user_id: str) -> dict[str, Any]:
        item = self.store.get(USERS_NAMESPACE, user_id)
        if item is None:
            raise UnknownUserError(user_id)
        return dict(item.value)

    # -- registry -------------------------------------------------------------------------

    def register_users(self, user_ids: Iterable[str]) -> int:
        """Add users to the registry (with no events); users already known are left as they are.

        Returns:
            How many users were new.
        """
        wanted = list(dict.fromkeys(user_ids))
        with self._lock:
            known = self._registry(wanted)
            new = [u for u in wanted if u not in known]
            self._put_many(
                [
                    PutOp(USERS_NAMESPACE, u, {"user_id": u, "n_events": 0, "revision": 0})
                    for u in new
                ]
            )
        return len(new)

    def known(self, user_id: str) -> bool:
        """Whether the user is registered (with or without history)."""
        return self.store.get(USERS_NAMESPACE, user_id) is not None

    def n_events(self, user_id: str) -> int:
        """How many events the user has (0 for a cold-start user).

        Raises:
            UnknownUserError: the user is not registered.
        """
        return int(self._entry(user_id)["n_events"])

    # -- events ---------------------------------------------------------------------------

    def add_events(self, events: Iterable[BehaviorEvent]) -> None:
        """Store events, registering their users; idempotent.

        An event whose ``(user_id, seq)`` is already stored replaces it. A user's events must stay
        contiguous: each ``seq`` is at most the user's current ``n_events`` or filled by the same
        call. Nothing is written when the batch is invalid.

        Raises:
            ValueError: the events would leave a gap in a user's sequence.
        """
        by_user: dict[str, dict[int, BehaviorEvent]] = {}
        for event in events:
            by_user.setdefault(event.user_id, {})[event.seq] = event  # last one wins
        if not by_user:
            return
        with self._lock:
            users = list(by_user)
            registry = self._registry(users)
            old_n = {u: int(registry.get(u, {}).get("n_events", 0)) for u in users}
            new_n: dict[str, int] = {}
            for user, batch in by_user.items():
                new_n[user] = max(old_n[user], max(batch) + 1)
                gap = [s for s in range(old_n[user], new_n[user]) if s not in batch]
                if gap:
                    raise ValueError(
                        f"events of user {user!r} would leave a gap: seq {gap[0]} is missing "
                        f"(the user has {old_n[user]} events; add them in order)"
                    )

            # Overwritten events: a change in content invalidates the user's cached profiles.
            overwrites = [
                (user, seq) for user, batch in by_user.items() for seq in batch if seq < old_n[user]
            ]
            changed: set[str] = set()
            for (user, seq), item in zip(overwrites, self._get_stored(overwrites), strict=True):
                if item is None or item.value != by_user[user][seq].model_dump(mode="json"):
                    changed.add(user)

            def entry(user: str, n: int) -> PutOp:
                revision = int(registry.get(user, {}).get("revision", 0)) + (user in changed)
                value = {"user_id": user, "n_events": n, "revision": revision}
                return PutOp(USERS_NAMESPACE, user, value)

            # Order of writes: bump the revision of changed users first (their cached profiles
            # go stale before any event changes), then the events, then the registry entries
            # that make new events visible.
            self._put_many([entry(u, old_n[u]) for u in users if u in changed])
            self._put_many(
                [
                    PutOp(events_namespace(user), f"{seq:08d}", event.model_dump(mode="json"))
                    for user, batch in by_user.items()
                    for seq, event in sorted(batch.items())
                ]
            )
            self._put_many([entry(u, new_n[u]) for u in users])

    def _get_stored(self, keys: Sequence[tuple[str, int]]) -> list[Item | None]:
        return self._get([GetOp(events_namespace(u), f"{seq:08d}") for u, seq in keys])

    def events(self, user_id: str, *, before: int | None = None) -> list[BehaviorEvent]:
        """The user's events in ``seq`` order (only ``seq < before`` when given).

        Raises:
            UnknownUserError: the user is not registered.
            StoreError: an event the registry counts is missing from the store.
        """
        n = self.n_events(user_id)
        if before is not None:
            n = max(0, min(n, before))
        return self._read_events(user_id, n)

    def _read_events(self, user_id: str, n: int) -> list[BehaviorEvent]:
        items = self._get_many(events_namespace(user_id), [f"{seq:08d}" for seq in range(n)])
        events = []
        for seq, item in enumerate(items):
            if item is None:
                raise StoreError(
                    f"memory store is inconsistent: user {user_id!r} should have {n} events "
                    f"but event {seq} is missing; re-ingest the data set"
                )
            events.append(BehaviorEvent.model_validate(item.value))
        return events

    # -- profiles -------------------------------------------------------------------------

    def profile(self, user_id: str, *, before: int | None = None) -> UserProfile:
        """The user's profile, from the events with ``seq < before`` (all when ``None``).

        A profile cached in the store is reused only if it was built from exactly the events now
        stored up to the cutoff (same count, no overwrite since, same decay and root prefix);
        otherwise it is rebuilt and cached. A registered user without events gets the cold-start
        profile.

        Raises:
            UnknownUserError: the user is not registered.
        """
        entry = self._entry(user_id)
        n = int(entry["n_events"])
        if before is not None:
            n = max(0, min(n, before))
        key = f"{user_id}@{n}"
        stamp = {
            "revision": int(entry.get("revision", 0)),
            "decay": self.decay,
            "root_prefix": self.root_prefix,
        }
        cached = self.store.get(PROFILES_NAMESPACE, key)
        if cached is not None and cached.value.get("built_with") == stamp:
            return UserProfile.model_validate(cached.value)
        profile = build_profile(
            user_id,
            self._read_events(user_id, n),
            decay=self.decay,
            root_prefix=self.root_prefix,
        )
        self.store.put(
            PROFILES_NAMESPACE, key, {**profile.model_dump(mode="json"), "built_with": stamp}
        )
        return profile

    # -- bulk -----------------------------------------------------------------------------

    def ingest_dataset(
        self, dataset: Dataset, progress: bool = True, *, users_per_batch: int = 250
    ) -> IngestStats:
        """Register every user of ``dataset`` and store their full sequences as purchase events.

        Idempotent: ingesting the same data set again rewrites the same keys.
        """
        start = time.perf_counter()
        self.register_users(dataset.users)
        n_events = 0
        with tqdm(
            total=len(dataset.users),
            unit="user",
            desc=f"ingest {dataset.name}",
            disable=not progress,
        ) as bar:
            for chunk in _chunks(dataset.users, users_per_batch):
                events = [
                    event
                    for user in chunk
                    for event in events_from_sequence(
                        user, dataset.sequences.get(user, []), dataset.products
                    )
                ]
                self.add_events(events)
                n_events += len(events)
                bar.update(len(chunk))
        return IngestStats(
            users=len(dataset.users), events=n_events, seconds=time.perf_counter() - start
        )
