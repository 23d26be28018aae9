"""The stored recommendations: where they live, what they were computed with, writing and reading.

Shared by the nearline precompute (``graphs.serving.precompute``), its Ray engine
(``graphs.serving.ray_engine``: each actor writes its own results) and ``recommend --cached``.
Each result is kept under ``("queryagent", "recommendations")``, key = the shopper id, beside the
memory (same SQLite file or Postgres database); see ``graphs.serving.precompute`` for its fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import BaseStore, PutOp

from agent.model_identity import model_digest
from graphs.offline.ingest import catalog_stats
from graphs.record import code_version
from memory_store.namespaces import RECOMMENDATIONS_NAMESPACE

__all__ = [
    "RECOMMENDATIONS_NAMESPACE",
    "PrecomputeError",
    "Versions",
    "get_recommendation",
    "memory_stamp",
    "store_results",
]


class PrecomputeError(Exception):
    """A user-caused problem with a precompute request (one line for the CLI)."""


@dataclass(frozen=True)
class Versions:
    """What a stored result was computed with; a result of other versions is recomputed."""

    model: str | None
    model_digest: str
    catalog_version: str | None
    code_version: str

    @classmethod
    def current(cls, store: BaseStore, model: str | None) -> Versions:
        return cls(
            model=model,
            model_digest=model_digest(model),  # agent.model_identity: the project's one owner
            catalog_version=catalog_stats(store).get("catalog_version"),
            code_version=code_version(),
        )


def memory_stamp(entry: Mapping[str, Any]) -> dict[str, int]:
    """The memory a result was computed from: the registry entry's event count and revision."""
    return {"n_events": int(entry.get("n_events", 0)), "revision": int(entry.get("revision", 0))}


def get_recommendation(store: BaseStore, user_id: str) -> dict[str, Any] | None:
    """The stored recommendation of a shopper, or None when none was computed."""
    item = store.get(RECOMMENDATIONS_NAMESPACE, user_id)
    if item is None:
        return None
    value = dict(item.value)
    if "consistency" in value:  # stored before the check's score was named ``fit``
        value["fit"] = value.pop("consistency")
    return value


def _result_value(
    output: Mapping[str, Any], entry: Mapping[str, Any], versions: Versions, now: str
) -> dict[str, Any]:
    return {
        "user_id": output["user_id"],
        "query": output.get("query"),
        "query_text": output.get("query_text"),
        "text_source": output.get("text_source"),
        "rewrites": int(output.get("rewrites") or 0),
        "source": output.get("source"),
        "fit": output.get("fit"),
        "refinements": int(output.get("refinements") or 0),
        "products": list(output.get("products") or []),
        "memory": memory_stamp(entry),
        "model": versions.model,
        "model_digest": versions.model_digest,
        "catalog_version": versions.catalog_version,
        "code_version": versions.code_version,
        "computed_at": now,
    }


def store_results(
    store: BaseStore,
    outputs: Iterable[Mapping[str, Any]],
    entries: Mapping[str, Mapping[str, Any]],
    versions: Versions,
) -> int:
    """Upsert graph outputs as stored recommendations (one ``store.batch``); returns the count.

    ``entries`` are the registry entries read before the runs: the memory each result used.
    """
    now = datetime.now(UTC).isoformat()
    ops = [
        PutOp(
            RECOMMENDATIONS_NAMESPACE,
            out["user_id"],
            _result_value(out, entries[out["user_id"]], versions, now),
        )
        for out in outputs
    ]
    if ops:
        store.batch(ops)
    return len(ops)
