"""Record purchases into a live store one by one, as a shop's event stream would.

    queryagent events add --user ID --item ID [--time T] [--home DIR]
    queryagent events add --file events.jsonl [--home DIR]     # {"user_id", "item_id", "time"?}

Each purchase is appended after the shopper's last stored event (``seq = n_events``, then the
next), with the product's title, category and brand taken from the served catalog (events carry a
snapshot, so a profile never needs the catalog). A shopper not in the memory yet is registered by
their first purchase. Old events are never touched, so the shopper's revision stays and only the
event count grows: cached profiles of the longer history are built on the next read, and
``queryagent precompute`` recomputes exactly these shoppers.

Everything is checked before anything is written: a line that is not ``{"user_id", "item_id",
"time"?}``, an id the store cannot key by, an item the catalog does not hold, or a time that is not
ISO-8601 or Unix seconds is one line naming the file and line (``EventsError``), and the store is
left as it was. The write itself is one ``UserMemory.append_events`` call, which stores the events
before the registry entries that make them visible.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from graphs.validators import TimeRangeError, unix_time
from memory_store import BehaviorEvent, DataError, UserMemory
from memory_store.datasets import check_id

__all__ = ["AddResult", "EventLine", "EventsError", "add_purchases", "parse_time", "read_events"]


class EventsError(Exception):
    """A user-caused problem with events to record (one line for the CLI)."""


class EventLine(BaseModel):
    """One purchase to record: a line of an events file, or ``--user``/``--item``/``--time``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str
    item_id: str
    time: float | int | str | None = None


@dataclass(frozen=True)
class AddResult:
    """What ``add_purchases`` wrote."""

    events: int
    shoppers: int
    new_shoppers: int


def parse_time(value: float | int | str | None, where: str) -> float | None:
    """A purchase time as Unix seconds: Unix seconds, or ISO-8601 (naive means UTC)."""
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond any float
            seconds = math.inf
    else:
        try:
            seconds = float(value)
        except ValueError:
            pass
    if seconds is not None:
        # nan, inf and 1e400 were stored as null, 1e300 and -1e20 as times no date matches.
        try:
            unix_time(seconds, where)
        except TimeRangeError as err:
            raise EventsError(str(err)) from None
        return seconds
    try:
        when = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError):
        raise EventsError(
            f"{where}: time {value!r} is not a time; use ISO-8601 (2026-11-30T16:00:00Z) or "
            "Unix seconds"
        ) from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


def read_events(path: str | os.PathLike[str]) -> list[tuple[str, EventLine]]:
    """Every line of an events file (blank lines skipped), each with its ``file:line`` label.

    Raises:
        EventsError: the file cannot be read, or a line is not a valid event.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading BOM is not part of line 1
    except (OSError, UnicodeDecodeError) as err:
        raise EventsError(
            f"{path}: cannot read ({getattr(err, 'strerror', None) or err})"
        ) from None
    lines: list[tuple[str, EventLine]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            lines.append((where, EventLine.model_validate(json.loads(line))))
        except json.JSONDecodeError as err:
            raise EventsError(f"{where}: not JSON ({err.msg})") from None
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise EventsError(
                f"{where}: {loc + ': ' if loc else ''}{first['msg']} "
                '(a line is {"user_id": ..., "item_id": ..., "time": optional})'
            ) from None
    if not lines:
        raise EventsError(f"{path}: no events in the file")
    return lines


def add_purchases(store: Any, catalog: Any, lines: Sequence[tuple[str, EventLine]]) -> AddResult:
    """Append the purchases to their shoppers' memories, in the given order.

    Args:
        store: the memory's store.
        catalog: the served catalog (its ``get`` gives each item's title, category, brand).
        lines: ``(label, event)`` pairs; the label names the line in errors.

    Raises:
        EventsError: a bad id, an unknown item or a bad time (nothing is written).
    """
    times: list[float | None] = []
    for where, line in lines:
        try:
            check_id(Path(where), None, "user", line.user_id)
            check_id(Path(where), None, "item", line.item_id)
        except DataError as err:
            raise EventsError(str(err)) from None
        times.append(parse_time(line.time, where))
    products = catalog.get([line.item_id for _, line in lines])
    for where, line in lines:
        if line.item_id not in products:
            raise EventsError(
                f"{where}: unknown item id {line.item_id!r}: not in the served catalog "
                "(ingest the data set that holds it first)"
            )
    memory = UserMemory(store)
    users = list(dict.fromkeys(line.user_id for _, line in lines))
    new = sum(not memory.known(u) for u in users)
    events = []
    for (_, line), when in zip(lines, times, strict=True):
        product = products[line.item_id]
        events.append(
            BehaviorEvent(
                user_id=line.user_id,
                seq=0,  # the next free position, given by append_events
                item_id=line.item_id,
                title=product.title,
                category=product.category,
                brand=product.brand,
                timestamp=when,
            )
        )
    memory.append_events(events)
    return AddResult(events=len(events), shoppers=len(users), new_shoppers=new)
