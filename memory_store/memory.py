# Over 400 lines: ``UserMemory`` (about 300 of them) keeps the registry, events, cached profiles
# and the ingest mark consistent under one store and one lock, so it stays whole. Opening the
# store (``open_store``: SQLite or PostgreSQL) is a seam for a later split into its own module.
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
- ``("queryagent", "ingest")``, key ``"state"``: ``{"generation", "complete", "data", "users"}``,
  the completion mark of the last :meth:`UserMemory.ingest_dataset`. Each registry entry an
  ingest writes carries its ``generation``; while the mark says ``complete: false`` (the ingest
  was killed, or is still running) a shopper the current ingest has not written yet is refused
  with :class:`IngestIncompleteError` instead of being served as a cold-start shopper. An ingest
  that fits the catalog's models after the memory (``queryagent ingest``) writes
  ``"fit_pending": true`` with the mark and clears it once the models are saved
  (:meth:`UserMemory.finish_fit`): until then every shopper is refused with
  :class:`ModelsOutOfDateError`, since the models on disk are the previous data's.

Everything is synchronous and safe to call from several threads (LangGraph runs sync nodes in a
thread pool) and several processes (``events add`` runs beside the server): writes that read the
registry first are serialised by a lock that covers both (``_WriteLock``), and events are
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
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock
from langgraph.store.base import BaseStore, GetOp, Item, Op, PutOp, Result
from langgraph.store.sqlite import SqliteStore
from tqdm.auto import tqdm

from memory_store.datasets import Dataset
from memory_store.events import BehaviorEvent, events_from_sequence
from memory_store.namespaces import (
    EVENTS_NAMESPACE,
    INGEST_NAMESPACE,
    PROFILES_NAMESPACE,
    USERS_NAMESPACE,
)
from memory_store.paths import HOME_ENV, HomeError, private_file, queryagent_home
from memory_store.profile import DEFAULT_DECAY, ROOT_PREFIX, UserProfile, build_profile

__all__ = [
    "EVENTS_NAMESPACE",
    "INGEST_NAMESPACE",
    "IngestIncompleteError",
    "PROFILES_NAMESPACE",
    "USERS_NAMESPACE",
    "IngestStats",
    "ModelsOutOfDateError",
    "StoreError",
    "UnknownUserError",
    "UserMemory",
    "events_namespace",
    "open_store",
]

INGEST_STATE_KEY = "state"
STORE_FILE = "memory.sqlite"

# Operations per store.batch call. Each SQLite put is 5 bound parameters in one multi-row INSERT;
# 500 puts stay far below SQLite's 32,766-parameter limit and Postgres's 65,535.
BATCH_SIZE = 500

T = TypeVar("T")


class StoreError(RuntimeError):
    """The store cannot be opened or is inconsistent (one line, for a CLI)."""


class IngestIncompleteError(StoreError):
    """The last ingest did not finish before this shopper's memory was written."""

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"the memory of shopper {user_id!r} is incomplete: ingest was interrupted; "
            "run `queryagent ingest` again"
        )
        self.user_id = user_id


class ModelsOutOfDateError(StoreError):
    """The last ingest wrote the memory but was stopped before it fitted the catalog's models."""

    def __init__(self) -> None:
        super().__init__("the catalog's models are out of date; run `queryagent ingest`")


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
            SQLite file ``memory.sqlite`` in it (created ``0600``).
        url: instead (or ``$QUERYAGENT_STORE_URL``), ``sqlite:///<path>``
            (``sqlite:///:memory:`` for a throwaway store) or a ``postgresql://`` URL (needs the
            ``postgres`` extra: ``pip install -e '.[postgres]'``).

    Returns:
        A ready store (tables created).

    Raises:
        StoreError: an unsupported URL, a missing Postgres driver, or a store that cannot be
            opened (an unwritable folder, a file that is not a database, a server that refuses).
    """
    url = url or os.environ.get(STORE_URL_ENV) or None
    if url is None:
        try:
            path = queryagent_home(home) / STORE_FILE
        except HomeError as err:
            raise StoreError(str(err)) from None
        return _sqlite_store(str(path))
    if url.startswith("sqlite:///"):
        path_text = url.removeprefix("sqlite:///")
        if path_text != ":memory:":
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path_text)), exist_ok=True)
            except OSError as err:
                raise StoreError(
                    f"cannot open the memory store {url} ({err.strerror or err}); "
                    f"fix {STORE_URL_ENV} or the folder's permissions"
                ) from None
        return _sqlite_store(path_text)
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres_store(url)
    raise StoreError(
        f"unsupported store url {url!r}: use sqlite:///<path> or postgresql://user@host/db"
    )


def _sqlite_store(path: str) -> BaseStore:
    # check_same_thread=False: the store serialises access with its own lock, and LangGraph calls
    # sync nodes from worker threads. Autocommit, because the store issues BEGIN/COMMIT itself.
    try:
        if path != ":memory:":
            private_file(path)  # 0600 from its first byte; -wal and -shm inherit the mode
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            _check_own_database(conn, path)
            if path != ":memory:":
                # WAL lets a reader (the dev server) read while another process ingests.
                conn.execute("PRAGMA journal_mode=WAL")
            store = ThreadedSqliteStore(conn)
            store.setup()
        except BaseException:
            conn.close()
            raise
    except (sqlite3.Error, HomeError) as err:
        raise StoreError(
            f"cannot open the memory store {path}: {err}; it must be a QueryAgent SQLite file "
            f"in a writable folder (see --home, ${HOME_ENV} and ${STORE_URL_ENV})"
        ) from None
    return store


# Tables of LangGraph's SqliteStore: a file holding other tables is another program's database.
_STORE_TABLES = {"store", "store_migrations", "store_vectors", "vector_migrations"}


def _check_own_database(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a SQLite file that holds another program's tables, before anything is written.

    Issue 25: ``QUERYAGENT_STORE_URL=sqlite:///HOME/chroma/chroma.sqlite3`` wrote the store's
    tables into Chroma's own database and switched it to WAL.

    Raises:
        StoreError: naming the file and some of its tables.
    """
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not str(row[0]).startswith("sqlite_")
    }
    foreign = sorted(tables - _STORE_TABLES)
    if foreign and not tables & {"store"}:
        raise StoreError(
            f"cannot open the memory store {path}: it is another program's database (tables "
            f"{', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}); give the store a "
            f"file of its own (see --home and ${STORE_URL_ENV})"
        )


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
        import psycopg
        from langgraph.store.postgres import PostgresStore
        from psycopg.rows import dict_row
    except ImportError:
        raise StoreError(
            "a postgresql:// store needs the postgres extra: pip install -e '.[postgres]' "
            "(langgraph-checkpoint-postgres, psycopg[binary])"
        ) from None
    try:
        conn = psycopg.Connection.connect(
            url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=10
        )
        # One connection shared by the process's threads: PostgresStore serialises its use with
        # a lock, as the SQLite store does.
        store = PostgresStore(conn)  # type: ignore[arg-type]
        store.setup()
    except psycopg.Error as err:
        raise StoreError(
            f"cannot open the PostgreSQL memory store {_redact(url)}: {' '.join(str(err).split())}"
        ) from None
    return store


def _redact(url: str) -> str:
    """The URL without its password (it may end up in a log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# Advisory-lock key of the memory's writers on PostgreSQL (any constant shared by every process;
# this one is the first 8 bytes of sha256("queryagent.memory.writes") as a signed 64-bit int).
PG_WRITE_LOCK_KEY = 0x067D_142F_CB66_B5E1
LOCK_SUFFIX = ".lock"


class _WriteLock:
    """Serialises the memory's read-modify-write updates across threads AND processes.

    Appending reads a shopper's ``n_events`` and writes events at the next positions; two
    writers that both read ``n`` store two events at ``n`` and one is lost. A thread lock covers
    one process only (issue 25: eight concurrent ``events add`` lost one event), so the same
    section also holds a lock every process sees: a file lock beside a SQLite store
    (``memory.sqlite.lock``, ``fcntl`` through ``filelock``; released by the kernel when a
    process dies), or a session advisory lock on PostgreSQL (released when the connection
    closes). In-memory stores live in one process and need only the thread lock. Reentrant.
    """

    def __init__(self, store: BaseStore) -> None:
        self._thread = threading.RLock()
        self._depth = 0
        self._store = weakref.ref(store)  # the lock must not keep its store alive
        # The lock file is made on the first write, so a read-only home can still be read.
        self._path = _sqlite_file(store) if isinstance(store, SqliteStore) else None
        self._file: FileLock | None = None

    def __enter__(self) -> _WriteLock:
        self._thread.acquire()
        try:
            if self._depth == 0:
                self._across_processes(acquire=True)
        except BaseException:
            self._thread.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self._across_processes(acquire=False)
        finally:
            self._thread.release()

    def _across_processes(self, *, acquire: bool) -> None:
        if self._path is not None:
            if self._file is None:
                private_file(self._path + LOCK_SUFFIX)  # 0600, as the database beside it
                self._file = FileLock(self._path + LOCK_SUFFIX, mode=0o600)
            if acquire:
                self._file.acquire()
            else:
                self._file.release()
            return
        store = self._store()
        if store is None or type(store).__name__ != "PostgresStore":
            return
        sql = "SELECT pg_advisory_lock(%s)" if acquire else "SELECT pg_advisory_unlock(%s)"
        with store.lock:  # type: ignore[attr-defined]  # the store's own connection lock
            store.conn.execute(sql, (PG_WRITE_LOCK_KEY,))  # type: ignore[attr-defined]


def _sqlite_file(store: SqliteStore) -> str | None:
    """The database file behind a SQLite store (``None`` for an in-memory database)."""
    with store.lock:
        rows = store.conn.execute("PRAGMA database_list").fetchall()
    for _, name, file in rows:
        if name == "main":
            return str(file) or None
    return None


_STORE_LOCKS: weakref.WeakKeyDictionary[BaseStore, _WriteLock] = weakref.WeakKeyDictionary()
_STORE_LOCKS_LOCK = threading.Lock()


def _store_lock(store: BaseStore) -> _WriteLock:
    """One write lock per store object in this process (see ``UserMemory.__init__``)."""
    with _STORE_LOCKS_LOCK:
        lock = _STORE_LOCKS.get(store)
        if lock is None:
            lock = _STORE_LOCKS[store] = _WriteLock(store)
        return lock


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
        # Registry updates are read-modify-write. The lock belongs to the store, not to this
        # object: graph nodes build a UserMemory per call, and two of them appending to one
        # shopper from two threads must not both write seq n (a lost event).
        self._lock = _store_lock(store)

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

    def register_users(self, user_ids: Iterable[str], *, generation: int | None = None) -> int:
        """Add users to the registry (with no events); users already known are left as they are.

        Args:
            user_ids: the users.
            generation: the ingest generation writing them (see :meth:`ingest_dataset`); known
                users are stamped with it too, keeping their events.

        Returns:
            How many users were new.
        """
        wanted = list(dict.fromkeys(user_ids))
        with self._lock:
            known = self._registry(wanted)
            new = [u for u in wanted if u not in known]
            ops = [PutOp(USERS_NAMESPACE, u, _entry_value(u, 0, 0, generation)) for u in new]
            if generation is not None:
                ops += [
                    PutOp(USERS_NAMESPACE, u, {**known[u], "generation": generation})
                    for u in wanted
                    if u in known and known[u].get("generation") != generation
                ]
            self._put_many(ops)
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

    def add_events(self, events: Iterable[BehaviorEvent], *, generation: int | None = None) -> None:
        """Store events, registering their users; idempotent.

        An event whose ``(user_id, seq)`` is already stored replaces it. A user's events must stay
        contiguous: each ``seq`` is at most the user's current ``n_events`` or filled by the same
        call. Nothing is written when the batch is invalid. ``generation`` stamps the users'
        registry entries (see :meth:`ingest_dataset`); ``None`` keeps their stamp.

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

            def entry(user: str, n: int, stamp: int | None) -> PutOp:
                revision = int(registry.get(user, {}).get("revision", 0)) + (user in changed)
                return PutOp(USERS_NAMESPACE, user, _entry_value(user, n, revision, stamp))

            def old_stamp(user: str) -> int | None:
                value = registry.get(user, {}).get("generation")
                return None if value is None else int(value)

            # Order of writes: bump the revision of changed users first (their cached profiles
            # go stale before any event changes), then the events, then the registry entries
            # that make new events visible.
            self._put_many([entry(u, old_n[u], old_stamp(u)) for u in users if u in changed])
            self._put_many(
                [
                    PutOp(events_namespace(user), f"{seq:08d}", event.model_dump(mode="json"))
                    for user, batch in by_user.items()
                    for seq, event in sorted(batch.items())
                ]
            )
            stamps = {u: old_stamp(u) if generation is None else generation for u in users}
            self._put_many([entry(u, new_n[u], stamps[u]) for u in users])

    def append_events(self, events: Sequence[BehaviorEvent]) -> list[BehaviorEvent]:
        """Store events after each user's stored ones, in the given order (their ``seq`` is
        replaced by the next free position), registering new users; returns what was stored.

        The positions are read and the events written under the store's write lock, which
        covers threads and processes, so two appends never claim the same position. Nothing is
        written when the batch is invalid.
        """
        with self._lock:
            users = list(dict.fromkeys(e.user_id for e in events))
            registry = self._registry(users)
            next_seq = {u: int(registry.get(u, {}).get("n_events", 0)) for u in users}
            stored = []
            for event in events:
                stored.append(event.model_copy(update={"seq": next_seq[event.user_id]}))
                next_seq[event.user_id] += 1
            self.add_events(stored)
        return stored

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
            IngestIncompleteError: an unfinished ingest has not written this user yet.
        """
        self.check_ingested(user_id)
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

    def ingest_state(self) -> dict[str, Any] | None:
        """The completion mark of the last :meth:`ingest_dataset` (``None`` if none ran)."""
        item = self.store.get(INGEST_NAMESPACE, INGEST_STATE_KEY)
        return None if item is None else dict(item.value)

    def check_ingested(self, user_id: str) -> None:
        """Refuse a shopper whose memory an unfinished ingest has not written (yet).

        A store never filled by :meth:`ingest_dataset` (events added by hand) has no mark and
        passes; so does every shopper once the last ingest completed.

        Raises:
            IngestIncompleteError: the last ingest is not complete and has not written this
                shopper (unregistered, or registered by an earlier generation).
            ModelsOutOfDateError: the last ingest stopped before its fit ended.
        """
        state = self.ingest_state()
        if state is not None and state.get("fit_pending"):
            raise ModelsOutOfDateError()
        if state is None or state.get("complete"):
            return
        item = self.store.get(USERS_NAMESPACE, user_id)
        if item is None or item.value.get("generation") != state.get("generation"):
            raise IngestIncompleteError(user_id)

    def ingest_dataset(
        self,
        dataset: Dataset,
        progress: bool = True,
        *,
        users_per_batch: int = 250,
        fit_pending: bool = False,
    ) -> IngestStats:
        """Store every user of ``dataset`` with its full sequence as purchase events.

        Idempotent: ingesting the same data set again rewrites the same keys. Resumable in the
        sense that matters: the completion mark (``INGEST_NAMESPACE``) is set to a new,
        incomplete generation first and to complete last, and each user's registry entry is
        stamped with the generation together with its events, so after a kill every shopper not
        yet written is refused (:meth:`check_ingested`) instead of looking like a cold-start
        shopper, and running the ingest again completes it. ``fit_pending``: the caller fits the
        catalog's models next; the mark says so (from its first write, so a kill at any point
        before :meth:`finish_fit` leaves it) and every shopper is refused until then.
        """
        start = time.perf_counter()
        state = self.ingest_state() or {}
        begun = (  # by begin_ingest for this very ingest (the mark is still incomplete)
            state.get("started")
            and state.get("complete") is False
            and state.get("data") == dataset.name
            and bool(state.get("fit_pending")) == fit_pending
        )
        if not begun:
            self.begin_ingest(dataset, fit_pending=fit_pending)
            state = self.ingest_state() or {}
        mark = {k: v for k, v in state.items() if k not in ("complete", "started")}
        generation = int(mark["generation"])
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
                self.add_events(events, generation=generation)
                # Users without events (cold start) are registered by their own write.
                self.register_users(
                    [u for u in chunk if not dataset.sequences.get(u)], generation=generation
                )
                n_events += len(events)
                bar.update(len(chunk))
        self.store.put(INGEST_NAMESPACE, INGEST_STATE_KEY, {**mark, "complete": True})
        return IngestStats(
            users=len(dataset.users), events=n_events, seconds=time.perf_counter() - start
        )

    def begin_ingest(self, dataset: Dataset, *, fit_pending: bool = False) -> int:
        """Write a new, incomplete generation's mark before anything else of an ingest is
        written (the catalog comes first in ``graphs.offline.ingest``), so a kill while the
        catalog is upserted refuses every shopper rather than serving the old memory beside a
        half-new catalog. :meth:`ingest_dataset` then continues this generation.

        Returns:
            The new generation.
        """
        state = self.ingest_state() or {}
        generation = int(state.get("generation", 0)) + 1
        mark: dict[str, Any] = {
            "generation": generation,
            "data": dataset.name,
            "users": len(dataset.users),
        }
        if fit_pending:
            mark["fit_pending"] = True
        # "started": the ingest_dataset of this ingest continues this mark (not a new one).
        self.store.put(
            INGEST_NAMESPACE, INGEST_STATE_KEY, {**mark, "complete": False, "started": True}
        )
        return generation

    def finish_fit(self) -> None:
        """Clear the mark's ``fit_pending`` (the catalog's models of this data are saved)."""
        state = self.ingest_state()
        if state is not None and state.get("fit_pending"):
            del state["fit_pending"]
            self.store.put(INGEST_NAMESPACE, INGEST_STATE_KEY, state)


def _entry_value(user: str, n_events: int, revision: int, generation: int | None) -> dict[str, Any]:
    """A registry entry; ``generation`` only when an ingest wrote it."""
    value: dict[str, Any] = {"user_id": user, "n_events": n_events, "revision": revision}
    if generation is not None:
        value["generation"] = generation
    return value
