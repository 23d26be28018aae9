"""The trajectory record, schema v3: pydantic models of one graph run, and the schema names.

``TrajectoryStep`` keeps each step as the graph's ``QueryAttempt`` dump: the fields training
needs are typed, any other attempt field (``products``, ``check`` and whatever the agent adds
later) is kept as it is, so new fields reach the files without this module changing. The older
schemas' names are here too; their frozen models and the conversion are in
``graphs.record.migration``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "OLD_SCHEMAS",
    "SCHEMA",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "FinalAnswer",
    "Target",
    "TrajectoryError",
    "TrajectoryRecord",
    "TrajectoryStep",
    "one_line",
]

SCHEMA = "queryagent.trajectory/v3"
SCHEMA_V2 = "queryagent.trajectory/v2"
SCHEMA_V1 = "queryagent.trajectory/v1"
# Schemas this package reads (converted to ``SCHEMA`` on read) but never appends to.
OLD_SCHEMAS = (SCHEMA_V2, SCHEMA_V1)


class TrajectoryError(Exception):
    """A trajectory file is missing, malformed or of another schema (one line for a CLI)."""


def one_line(err: ValidationError) -> str:
    """A validation error as one line: ``field.path: message; ...``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


class Strict(BaseModel):
    """Base of the frozen and the current records' strict parts."""

    # strict: no silent coercion ("3" is not an int); extra="forbid": an unknown key is an error.
    model_config = ConfigDict(extra="forbid", strict=True)


class TrajectoryStep(BaseModel):
    """One model call of the chain of retrieval: the graph's ``QueryAttempt`` dump.

    The fields training reads are typed and required; every other attempt field (``products``:
    what the query retrieved, ``check``: the check's ``fit`` and ``feedback``, and any field the
    agent adds)
    is kept as it came (``extra="allow"``; read them as attributes or from ``model_dump()``).
    ``prompt_token_ids`` / ``completion_token_ids`` are the ids recorded at generation time (never
    re-tokenized). A completion that is not a query is kept as data: ``query`` None, ``error``.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    turn: int = Field(ge=0, description="0 for the draft, then 1, 2, ... for refinements")
    kind: Literal["draft", "refine"]
    # Empty for a candidate no model wrote (recalled from memory, transitions, ...).
    messages: list[dict[str, Any]] = Field(default_factory=list)
    completion: str = ""
    prompt_token_ids: list[int] = Field(default_factory=list)
    completion_token_ids: list[int] = Field(default_factory=list)
    query: str | None = None
    error: str | None = None


class FinalAnswer(BaseModel):
    """What the run recommended (the graph's output)."""

    model_config = ConfigDict(extra="allow", strict=True)

    query: str | None
    source: str | None = Field(
        description="the recommended attempt's first source, or 'fallback' (no candidate)"
    )
    fit: float | None = Field(
        default=None, description="the check's fit of the recommended attempt (None: fallback)"
    )
    product_ids: list[str]


class Target(Strict):
    """The held-out next item of an example from a data split, and its ground-truth query."""

    item_id: str
    title: str
    query: str | None = Field(description="HEM ground-truth query; None when it has no category")


class TrajectoryRecord(Strict):
    """One graph run (see ``graphs.record``); one JSON line in a trajectory file."""

    schema_: Literal["queryagent.trajectory/v3"] = Field(alias="schema")
    run_id: str = Field(description="the graph run's id (the run config's run_id)")
    thread_id: str | None
    user_id: str
    before: int | None = Field(description="memory cut: the profile saw the first `before` events")
    model: str | None = Field(description="the drafter's model id or path")
    created: str = Field(description="ISO-8601 time the run started (UTC)")
    profile: dict[str, Any] | None = Field(description="the UserProfile snapshot the run used")
    steps: list[TrajectoryStep]
    final: FinalAnswer
    target: Target | None = None
    run: dict[str, Any] = Field(
        default_factory=dict, description="anything else about the run (refinements, context...)"
    )

    # ``schema`` would shadow BaseModel.schema(); the alias keeps the JSON key in and out.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    @field_validator("created")
    @classmethod
    def _iso_8601(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO-8601 time: {value!r}") from None
        return value

    @property
    def memory_recalled(self) -> bool:
        """recall_memory ran (Fetch_Memory): the run has a profile snapshot."""
        return self.profile is not None

    def to_json(self) -> str:
        """The record as one JSON line (without the newline)."""
        return self.model_dump_json(by_alias=True)
