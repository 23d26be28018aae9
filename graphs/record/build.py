"""A trajectory record built from one graph run: its ``OutputState``, its input, the run's stamps.

Everything a record holds is in the graph's output (``profile`` and ``attempts``), so a record is
built from an output, its input and the run's metadata; nothing listens to callbacks.
``run_stamp`` says what a live run ran on (its memory and catalog); ``code_version`` is the git
version of the code, kept in every file's sidecar.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from pydantic import ValidationError

from agent.state import output_json
from graphs.offline.ingest import catalog_stats
from graphs.record.schema import SCHEMA, Target, TrajectoryError, TrajectoryRecord, one_line
from memory_store import USERS_NAMESPACE, UserMemory, events_digest

__all__ = ["code_version", "now", "record_from_output", "run_stamp"]


def now() -> str:
    """The current time, ISO-8601 UTC (a record's ``created``, a sidecar's stamps)."""
    return datetime.now(UTC).isoformat()


def record_from_output(
    output: Mapping[str, Any],
    inputs: Mapping[str, Any],
    *,
    model: str | None = None,
    run_id: str | None = None,
    thread_id: str | None = None,
    created: str | None = None,
    target: Target | Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> TrajectoryRecord:
    """The trajectory record of one graph run, from its ``OutputState`` and its input.

    Args:
        output: the graph's output (``invoke`` result or one item of ``batch``'s list), with
            its models or as JSON (``agent.state.output_json``).
        inputs: the input that run was given (``user_id``, ``before``).
        model: the drafter's model id or path.
        run_id: the run's id (default: a new UUID); pass the run config's ``run_id``.
        thread_id: the checkpointer thread, when the run had one.
        created: ISO-8601 start time (default: now).
        target: the held-out item, for runs over a data split.
        run: extra run metadata (``refinements`` from the output is always added).

    Raises:
        TrajectoryError: the output is not a query-agent output (one line, with the field).
    """
    output = output_json(output)  # the models as the JSON the file keeps
    products = output.get("products") or []
    try:
        return TrajectoryRecord.model_validate(
            {
                "schema": SCHEMA,
                "run_id": run_id or str(uuid4()),
                "thread_id": thread_id,
                "user_id": output.get("user_id", inputs.get("user_id")),
                "before": inputs.get("before"),
                "model": model,
                "created": created or now(),
                "profile": output.get("profile"),
                # Each attempt as the graph dumped it: new QueryAttempt fields flow through.
                "steps": [dict(a) for a in output.get("attempts") or []],
                "final": {
                    "query": output.get("query"),
                    "source": output.get("source"),
                    "fit": output.get("fit"),
                    "product_ids": [p.get("item_id") for p in products],
                },
                "target": target.model_dump() if isinstance(target, Target) else target,
                "run": {"refinements": int(output.get("refinements") or 0), **(run or {})},
            }
        )
    except ValidationError as err:
        raise TrajectoryError(f"cannot record the run as {SCHEMA}: {one_line(err)}") from None


def run_stamp(store: Any, user_id: str, before: int | None = None) -> dict[str, Any]:
    """What a live run ran on, for its record's ``run``: the memory it held and the catalog.

    ``{"memory": {"n_events", "revision", "generation", "digest", "last_event_time"},
    "catalog": {"version", "generation"}}``: the number of events the run's memory held (cut at
    ``before``), the registry's revision and ingest generation, a digest of those events
    (``memory_store.events_digest``) and the time of the last one where events carry times; the
    catalog version (``graphs.offline.ingest.catalog_version``) and the store's ingest generation.
    ``training.outcomes`` joins the run with the shopper's first purchase recorded after the
    held events, and refuses a run whose catalog version is not the store's. Read it before the
    run starts (the memory the run will see). An unknown shopper gets ``n_events`` 0.
    """
    memory = UserMemory(store)
    item = store.get(USERS_NAMESPACE, user_id)
    entry = dict(item.value) if item is not None else {}
    held = memory.events(user_id, before=before) if item is not None else []
    state = memory.ingest_state() or {}
    return {
        "memory": {
            "n_events": len(held),
            "revision": int(entry.get("revision", 0)),
            "generation": entry.get("generation"),
            "digest": events_digest(held),
            "last_event_time": held[-1].timestamp if held else None,
        },
        "catalog": {
            "version": catalog_stats(store).get("catalog_version"),
            "generation": state.get("generation"),
        },
    }


def code_version() -> str:
    """The git short hash of the checkout this code runs from, or ``"unknown"``."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
