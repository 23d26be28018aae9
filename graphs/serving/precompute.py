"""Nearline precompute: every shopper's recommendation, computed ahead and kept beside the memory.

    queryagent precompute [--users FILE] [--since TIMESTAMP] [--home DIR] [--model M]
                          [--engine local|ray] [--batch-size N] [--force]
    queryagent recommend --user ID --cached       # serves what precompute stored

The paper deploys the agent as a nearline batch job; this is that job. Shoppers come from the
memory's registry (all of them, the ``--users`` file's ids, or those whose memory changed since a
time), run through ``graphs.offline.runner.OfflineRunner`` (``graph.batch`` with the
micro-batching drafter), and each result is written to the store (``graphs.serving.results``)
under ``("queryagent", "recommendations")``, key = the shopper id, beside the memory (same SQLite
file or Postgres database)::

    {"user_id", "query", "source", "fit", "refinements", "products": [...],
     "memory": {"n_events", "revision"},          # the memory the result was computed from
     "model", "model_digest", "catalog_version", "code_version", "computed_at": ISO-8601 UTC}

Up to date means: a stored result whose ``memory`` stamp equals the shopper's registry entry now
(same event count, same revision) and whose model digest and catalog version are the current
ones. Only the others are computed, so a re-run after new events recomputes just the shoppers
whose memory changed, and a run that was interrupted resumes where it stopped: results are written
chunk by chunk (upserts by shopper id, so nothing is duplicated) and finished shoppers are up to
date. ``--force`` recomputes everything selected.

``--since T`` (ISO-8601, naive = UTC, or Unix seconds) selects the shoppers whose registry entry
was written at or after ``T`` (``Item.updated_at``: the store stamps it whenever events are
added to that shopper, and on every re-ingest; whole seconds on SQLite, so the second of ``T``
counts). The bundled data set has no event timestamps, so this is when the events reached the
store, not when the shopper acted. Over-selection is harmless: up-to-date shoppers are skipped.

Engines: ``local`` (default) runs in this process. ``ray`` runs the same per-chunk step in a Ray
Data ``map_batches`` over an actor pool: each actor holds a drafter, a catalog client and a store
connection, reads its shoppers' memory from the store and writes their results back (the store
must be a file or a server the workers can open: the home's SQLite, or ``$QUERYAGENT_STORE_URL``).
``pip install -e '.[ray]'``; see the README for a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from langgraph.store.base import BaseStore, GetOp, Item
from tqdm.auto import tqdm

from agent.context import Context
from graphs.offline.runner import OfflineRunner
from graphs.query_agent import Deps
from graphs.record import TrajectoryRecord, run_stamp
from graphs.serving.ray_engine import run_on_ray
from graphs.serving.results import (
    RECOMMENDATIONS_NAMESPACE,
    PrecomputeError,
    Versions,
    memory_stamp,
    store_results,
)
from graphs.validators import TimeRangeError, unix_time
from memory_store.namespaces import USERS_NAMESPACE

__all__ = [
    "PrecomputeResult",
    "age_text",
    "parse_since",
    "precompute",
    "read_users_file",
    "select_users",
    "stale",
]

Engine = Literal["local", "ray"]
ENGINES = ("local", "ray")
# Registry entries read per store.search call.
PAGE = 1000


def stale(stored: Mapping[str, Any] | None, entry: Mapping[str, Any], versions: Versions) -> bool:
    """Whether a shopper needs computing: no result, or one from another memory or model/catalog.

    The code version is recorded, not compared: a commit that changes nothing the agent does
    should not recompute every shopper (``--force`` does).
    """
    return (
        stored is None
        or stored.get("memory") != memory_stamp(entry)
        or stored.get("model_digest") != versions.model_digest
        or stored.get("catalog_version") != versions.catalog_version
    )


def parse_since(text: str) -> datetime:
    """``--since``: ISO-8601 (naive means UTC) or Unix seconds -> an aware UTC time."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:  # 1e300, inf and -1e20 were an OverflowError traceback (graphs.validators)
        try:
            return unix_time(seconds, f"--since {text!r}")
        except TimeRangeError as err:
            raise PrecomputeError(str(err)) from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PrecomputeError(
            f"--since {text!r}: not a time; use ISO-8601 (2026-11-30T16:00:00Z) or Unix seconds"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _written_since(updated_at: datetime, since: datetime) -> bool:
    # SQLite stamps whole seconds in naive UTC: the second of ``since`` counts (over-selecting is
    # harmless, up-to-date shoppers are skipped). Aware stamps (in-memory, Postgres) are exact.
    if updated_at.tzinfo is None:
        return _aware(updated_at) >= since.astimezone(UTC).replace(microsecond=0)
    return updated_at >= since


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # SQLite: naive UTC


def read_users_file(path: str | os.PathLike[str]) -> list[str]:
    """Shopper ids, one a line (blank lines and ``#`` comments ignored), in file order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PrecomputeError(f"--users {path}: cannot read ({err})") from None
    users = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return list(dict.fromkeys(u for u in users if u))


def _registry(store: BaseStore) -> dict[str, Any]:
    """Every registry item (id -> Item), in the store's order."""
    items: dict[str, Any] = {}
    offset = 0
    while True:
        page = store.search(USERS_NAMESPACE, limit=PAGE, offset=offset)
        for item in page:
            if item.namespace == USERS_NAMESPACE:
                items[item.key] = item
        if len(page) < PAGE:
            return items
        offset += PAGE


def select_users(
    store: BaseStore, *, users: Sequence[str] | None = None, since: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """The selected shoppers' registry entries (id -> ``{"n_events", "revision", ...}``).

    Raises:
        PrecomputeError: a listed id is not in the memory.
    """
    registry = _registry(store)
    if users is not None:
        unknown = [u for u in users if u not in registry]
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise PrecomputeError(
                f"unknown shopper(s) {', '.join(map(repr, unknown[:3]))}{more}: not in the memory "
                "(run `queryagent ingest` first, or fix the --users file)"
            )
        chosen = {u: registry[u] for u in users}
    else:
        chosen = registry
    if since is not None:
        chosen = {u: item for u, item in chosen.items() if _written_since(item.updated_at, since)}
    return {u: dict(item.value) for u, item in chosen.items()}


def _stored(store: BaseStore, users: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(users), PAGE):
        chunk = users[start : start + PAGE]
        items = cast(
            "list[Item | None]", store.batch([GetOp(RECOMMENDATIONS_NAMESPACE, u) for u in chunk])
        )
        found.update({u: dict(i.value) for u, i in zip(chunk, items, strict=True) if i})
    return found


def age_text(computed_at: str, now: datetime | None = None) -> str:
    """``"3 min ago"``-style age of an ISO-8601 time."""
    seconds = max(
        0.0,
        ((now or datetime.now(UTC)) - _aware(datetime.fromisoformat(computed_at))).total_seconds(),
    )
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


@dataclass
class PrecomputeResult:
    """What a precompute did: the selected shoppers, those computed now, those up to date."""

    selected: int = 0
    up_to_date: int = 0
    computed: list[str] = field(default_factory=list)
    engine: str = "local"


def precompute(
    store: BaseStore,
    deps: Deps | None = None,
    *,
    users: Sequence[str] | None = None,
    since: datetime | None = None,
    context: Context | None = None,
    batch_size: int = 16,
    chunk_size: int | None = None,
    force: bool = False,
    engine: Engine = "local",
    progress: bool = True,
    model: str | None = None,
    deps_factory: Callable[[], Deps] | None = None,
    store_opener: Callable[[], BaseStore] | None = None,
    ray_actors: int = 1,
    log: Callable[[list[TrajectoryRecord]], None] | None = None,
) -> PrecomputeResult:
    """Compute and store the recommendation of every selected shopper that is not up to date.

    Args:
        store: the memory's store; results are written into it.
        deps: the drafter and catalog (local engine; default: ``deps_factory()``).
        users: only these shoppers (default: every registered shopper).
        since: only shoppers whose memory was written at or after this time.
        context: the run context (default ``Context()``, what ``recommend`` uses).
        batch_size: shoppers per model call (micro-batching; a Ray batch on ``ray``).
        chunk_size: shoppers per ``graph.batch`` call, stored before the next one starts
            (default ``graphs.offline.runner.CHUNK_BATCHES`` drafter batches).
        force: recompute up-to-date shoppers too.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actor pool).
        progress: a tqdm bar over shoppers.
        model: the model name recorded with the results (default: the drafter's name).
        deps_factory: builds the deps (picklable for ``ray``: each actor calls it once).
        store_opener: opens the same store again (picklable; each Ray actor calls it).
        ray_actors: the actor pool's size (``ray``).
        log: called with each computed chunk's trajectory records (local engine), each stamped
            with the memory and catalog it ran on (``graphs.record.run_stamp``), once the
            chunk is stored: ``queryagent precompute --log FILE``.

    Raises:
        PrecomputeError: unknown listed shoppers, a bad engine, or a Ray setup problem.
    """
    if engine not in ENGINES:
        raise PrecomputeError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if batch_size < 1:
        raise PrecomputeError(f"--batch-size must be >= 1, got {batch_size}")
    context = context or Context()
    entries = select_users(store, users=users, since=since)
    if deps is None and engine == "local":
        if deps_factory is None:
            raise ValueError("precompute needs deps or a deps_factory")
        deps = deps_factory()
    if model is None and deps is not None:
        model = getattr(deps.drafter, "name", None)
    versions = Versions.current(store, model)
    stored = _stored(store, list(entries))
    todo = [u for u, e in entries.items() if force or stale(stored.get(u), e, versions)]
    result = PrecomputeResult(
        selected=len(entries), up_to_date=len(entries) - len(todo), engine=engine
    )
    if not todo:
        return result
    bar = tqdm(total=len(todo), desc="precompute", unit="shopper", disable=not progress)
    try:
        if engine == "local":
            assert deps is not None
            runner = OfflineRunner(
                store=store,
                catalog=deps.catalog,
                drafter=deps.drafter,
                ranking=deps.ranking,
                context=context,
                model=model,
                batch_size=batch_size,
            )
            inputs = [{"user_id": u} for u in todo]
            # The memory each run will hold, read before the runs (the outcome join's anchor).
            stamps = {u: run_stamp(store, u) for u in todo} if log is not None else {}
            # One chunk = one graph.batch call, written before the next starts: an interruption
            # loses at most the chunk in flight.
            for _, outputs, records in runner.iter_chunks(
                inputs, chunk_size=chunk_size, records=log is not None
            ):
                store_results(store, outputs, entries, versions)
                if log is not None:
                    log(
                        [
                            r.model_copy(update={"run": {**r.run, **stamps[r.user_id]}})
                            for r in records
                        ]
                    )
                result.computed.extend(o["user_id"] for o in outputs)
                bar.update(len(outputs))
        else:
            if deps_factory is None or store_opener is None:
                raise ValueError("the ray engine needs a picklable deps_factory and store_opener")
            for done in run_on_ray(
                todo,
                deps_factory=deps_factory,
                store_opener=store_opener,
                context=context,
                versions=versions,
                batch_size=batch_size,
                actors=ray_actors,
            ):
                result.computed.extend(done)
                bar.update(len(done))
    finally:
        bar.close()
    return result
