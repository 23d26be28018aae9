"""Older trajectory files, converted to schema v3 on read (``tests/fixtures/trajectories-v1.jsonl``
and ``-v2.jsonl`` are frozen):

* v2 (2026-11, before the check's names said which consistency they meant): a step's
  ``consistency: {score, products, feedback}`` is v3's ``check: {fit, feedback}`` (``products``,
  always empty in v2, kept only when it is not), and ``final.consistency`` is ``final.fit``;
* v1 (callback-recorded): each line is validated against the frozen v1 models, then converted
  (``retrieved`` -> ``products``; ``node`` and ``step`` kept as extra step fields;
  ``memory_recalled`` false -> ``profile`` None; the v1 check's per-product scores kept as
  ``check.products``), then converted as a v2 record is.

Converted records say so in ``run.converted_from``. ``parse_line`` reads one line of any schema
this package reads.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from graphs.record.schema import (
    OLD_SCHEMAS,
    SCHEMA,
    SCHEMA_V1,
    SCHEMA_V2,
    Strict,
    TrajectoryRecord,
)

__all__ = ["parse_line"]


# -------------------------------------------------------------------------------------------
# Schema v1, frozen: only read (and converted). Self-contained on purpose: it does not
# reuse agent.records, so a change there cannot silently change what a v1 file means.


class _V1Message(Strict):
    role: str
    content: str


class _V1RetrievedItem(Strict):
    item_id: str
    title: str
    category: str
    brand: str
    rank: int = Field(ge=1)
    score: float


class _V1ProductFit(Strict):
    item_id: str
    category_match: float
    brand_match: float
    similarity: float
    score: float
    fits: bool


class _V1Consistency(Strict):
    score: float
    products: list[_V1ProductFit]
    feedback: str


class _V1Step(Strict):
    node: str
    step: int = Field(ge=0)
    turn: int = Field(ge=0)
    kind: Literal["draft", "refine"]
    messages: list[_V1Message]
    completion: str
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    query: str | None
    error: str | None
    retrieved: list[_V1RetrievedItem]
    consistency: _V1Consistency | None


class _V1Final(Strict):
    query: str | None
    source: str | None
    consistency: float | None
    product_ids: list[str]


class _V1Target(Strict):
    item_id: str
    title: str
    query: str | None


class _V1Record(Strict):
    schema_: Literal["queryagent.trajectory/v1"] = Field(alias="schema")
    run_id: str
    thread_id: str | None
    user_id: str
    before: int | None
    model: str | None
    created: str
    memory_recalled: bool
    profile: dict[str, Any]
    steps: list[_V1Step]
    final: _V1Final
    target: _V1Target | None = None

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True
    )


def _v1_to_v2(old: _V1Record) -> dict[str, Any]:
    """A v1 record in the v2 shape, as JSON (nothing dropped: ``node``/``step`` stay as step
    extras)."""
    steps = []
    for s in old.steps:
        step = s.model_dump(mode="json")
        step["products"] = step.pop("retrieved")
        steps.append(step)
    return {
        "schema": SCHEMA_V2,
        "run_id": old.run_id,
        "thread_id": old.thread_id,
        "user_id": old.user_id,
        "before": old.before,
        "model": old.model,
        "created": old.created,
        "profile": old.profile if old.memory_recalled else None,
        "steps": steps,
        "final": old.final.model_dump(mode="json"),
        "target": old.target.model_dump(mode="json") if old.target else None,
        "run": {},
    }


def _v2_to_v3(old: dict[str, Any], converted_from: str = SCHEMA_V2) -> TrajectoryRecord:
    """A v2 record (JSON) as v3: the check's report and the final fit under their v3 names."""
    steps = []
    for s in old.get("steps") or []:
        step = dict(s)
        if "consistency" in step:
            report = step.pop("consistency")
            if isinstance(report, dict):
                check = {"fit": report.get("score"), "feedback": report.get("feedback", "")}
                if report.get("products"):
                    check["products"] = report["products"]
                report = check
            step["check"] = report
        steps.append(step)
    final = dict(old.get("final") or {})
    if "consistency" in final:
        final["fit"] = final.pop("consistency")
    run: dict[str, Any] = dict(old.get("run") or {})
    return TrajectoryRecord.model_validate(
        {
            **old,
            "schema": SCHEMA,
            "steps": steps,
            "final": final,
            "run": {**run, "converted_from": converted_from},
        }
    )


def parse_line(line: str, *, accept_old: bool) -> TrajectoryRecord:
    """One JSON line as a v3 record; with ``accept_old`` a v1 or v2 line is converted.

    Raises:
        ValidationError: the line is not a valid record of an accepted schema.
    """
    try:
        return TrajectoryRecord.model_validate_json(line)
    except ValidationError:
        schema = _schema_of(line) if accept_old else None
        if schema not in OLD_SCHEMAS:
            raise
    if schema == SCHEMA_V1:  # frozen v1, converted on read
        return _v2_to_v3(_v1_to_v2(_V1Record.model_validate_json(line)), SCHEMA_V1)
    return _v2_to_v3(json.loads(line))


def _schema_of(line: str) -> str | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value.get("schema") if isinstance(value, dict) else None
