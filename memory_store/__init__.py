"""The ground floor of QueryAgent: data sets, behaviour events, the profile and its persistence.

It imports nothing from ``agent``, ``graphs`` or ``training``.
"""

from memory_store.datasets import (
    SPLITS,
    DataError,
    Dataset,
    Example,
    leave_one_out,
    load_dataset,
    load_jsonl,
    load_recbole,
    parse_item_text,
    target_position,
)
from memory_store.events import BehaviorEvent, EventKind, events_digest, events_from_sequence
from memory_store.memory import (
    IngestIncompleteError,
    IngestStats,
    ModelsOutOfDateError,
    StoreError,
    UnknownUserError,
    UserMemory,
    events_namespace,
    open_store,
)
from memory_store.namespaces import (
    EVENTS_NAMESPACE,
    INGEST_NAMESPACE,
    PROFILES_NAMESPACE,
    USERS_NAMESPACE,
)
from memory_store.paths import HomeError, queryagent_home
from memory_store.products import Product
from memory_store.profile import (
    DEFAULT_DECAY,
    ROOT_PREFIX,
    IntentItem,
    InterestEdge,
    InterestGraph,
    InterestNode,
    UserProfile,
    build_profile,
    category_name,
    node_key,
    raw_history_text,
)

__all__ = [
    "DEFAULT_DECAY",
    "EVENTS_NAMESPACE",
    "INGEST_NAMESPACE",
    "IngestIncompleteError",
    "ModelsOutOfDateError",
    "PROFILES_NAMESPACE",
    "ROOT_PREFIX",
    "SPLITS",
    "USERS_NAMESPACE",
    "BehaviorEvent",
    "DataError",
    "Dataset",
    "EventKind",
    "Example",
    "HomeError",
    "IngestStats",
    "IntentItem",
    "InterestEdge",
    "InterestGraph",
    "InterestNode",
    "Product",
    "StoreError",
    "UnknownUserError",
    "UserMemory",
    "UserProfile",
    "build_profile",
    "category_name",
    "events_digest",
    "events_from_sequence",
    "events_namespace",
    "leave_one_out",
    "load_dataset",
    "load_jsonl",
    "load_recbole",
    "target_position",
    "node_key",
    "open_store",
    "parse_item_text",
    "queryagent_home",
    "raw_history_text",
]
