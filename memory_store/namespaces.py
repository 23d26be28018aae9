"""Every namespace QueryAgent writes in a LangGraph store, in one place.

A namespace names where a kind of record lives in the store (SQLite, PostgreSQL, or the
``langgraph dev`` server's). Records outlive the code that wrote them, so these tuples are part
of the stored format: changing one orphans what is stored under the old one. Which module
writes each, and what its keys and values are:

- ``USERS_NAMESPACE``, ``EVENTS_NAMESPACE`` (``+ (user_id,)``), ``PROFILES_NAMESPACE``,
  ``INGEST_NAMESPACE``: the user memory (``memory_store.memory``, its docstring has the layout);
- ``CATALOG_NAMESPACE``: the catalog's statistics written at ingest and read by the agent's
  ``recall_memory`` node (``agent.nodes``, ``graphs.offline.ingest``);
- ``RECOMMENDATIONS_NAMESPACE``: precomputed recommendations, key ``user_id``
  (``graphs.serving.precompute``).
"""

from __future__ import annotations

__all__ = [
    "CATALOG_NAMESPACE",
    "EVENTS_NAMESPACE",
    "INGEST_NAMESPACE",
    "PROFILES_NAMESPACE",
    "RECOMMENDATIONS_NAMESPACE",
    "ROOT",
    "USERS_NAMESPACE",
]

ROOT = "queryagent"  # the first label of every namespace: the project's records, apart

USERS_NAMESPACE = (ROOT, "users")
EVENTS_NAMESPACE = (ROOT, "events")
PROFILES_NAMESPACE = (ROOT, "profiles")
INGEST_NAMESPACE = (ROOT, "ingest")
CATALOG_NAMESPACE = (ROOT, "catalog")
RECOMMENDATIONS_NAMESPACE = (ROOT, "recommendations")
