"""Trajectory files: the versioned record of what the agent did, built from the graph's output.

A trajectory is one graph run: the profile the run recalled, every draft and refinement (the
chain of retrieval) with the token ids recorded when they were generated, what each query
retrieved and how well that fit, and the final recommendation. All of it is in the graph's
``OutputState`` (``profile`` and ``attempts``), so a record is built from an output, its input and
the run's metadata; nothing listens to callbacks::

    from graphs.trajectories import record_from_output, write_trajectories
    out = graph.invoke({"user_id": "A1SWWHE1L3XR3V"}, context=ctx)
    record = record_from_output(out, {"user_id": "A1SWWHE1L3XR3V"}, model="smollm2-sft")
    write_trajectories("runs/demo.jsonl", [record], {"command": "...", "config": {...}})

Many runs at once go through ``graphs.offline.runner.OfflineRunner`` (``graph.batch``: outputs in input
order, so output ``i`` is input ``i``'s record, no matching by key).

Training (SFT, GRPO) and analysis read these files, so the schema is versioned (``SCHEMA``).
v3 (this module) keeps each step as the graph's ``QueryAttempt`` dump: the fields training needs
are typed, any other attempt field (``products``, ``check`` and whatever the agent adds later) is
kept as it is, so new fields reach the files without this module changing. Older files still
load, converted to v3 on read (``tests/fixtures/trajectories-v1.jsonl`` and ``-v2.jsonl`` are
frozen):

* v2 (2026-11, before the check's names said which consistency they meant): a step's
  ``consistency: {score, products, feedback}`` is v3's ``check: {fit, feedback}`` (``products``,
  always empty in v2, kept only when it is not), and ``final.consistency`` is ``final.fit``;
* v1 (callback-recorded): each line is validated against the frozen v1 models, then converted
  (``retrieved`` -> ``products``; ``node`` and ``step`` kept as extra step fields;
  ``memory_recalled`` false -> ``profile`` None; the v1 check's per-product scores kept as
  ``check.products``), then converted as a v2 record is.

Converted records say so in ``run.converted_from``. Appending to a v1 or v2 file is refused
(write v3 to a new file).

Files: JSON lines, one ``TrajectoryRecord`` per line, and a sidecar ``<file>.meta.json`` saying
which command, config, catalog and code version made it and how many records it holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.state import output_json
from memory_store.files import atomic_path, atomic_write

__all__ = [
    "OLD_SCHEMAS",
    "SCHEMA",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "LoadedTrajectories",
    "Target",
    "TrajectoryError",
    "TrajectoryRecord",
    "TrajectoryStep",
    "TrajectoryWriter",
    "append_trajectories",
    "check_appendable",
    "code_version",
    "load_trajectories",
    "meta_path",
    "read_meta",
    "record_from_output",
    "run_stamp",
    "write_trajectories",
]

logger = logging.getLogger(__name__)

SCHEMA = "queryagent.trajectory/v3"
SCHEMA_V2 = "queryagent.trajectory/v2"
SCHEMA_V1 = "queryagent.trajectory/v1"
# Schemas this module reads (converted to ``SCHEMA`` on read) but never appends to.
OLD_SCHEMAS = (SCHEMA_V2, SCHEMA_V1)


class TrajectoryError(Exception):
    """A trajectory file is missing, malformed or of another schema (one line for a CLI)."""


# -------------------------------------------------------------------------------------------
# Schema v1, frozen: only read (and converted). Self-contained on purpose: it does not
# reuse agent.records, so a change there cannot silently change what a v1 file means.


class _Strict(BaseModel):
    # strict: no silent coercion ("3" is not an int); extra="forbid": an unknown key is an error.
    model_config = ConfigDict(extra="forbid", strict=True)


class _V1Message(_Strict):
    role: str
    content: str


class _V1RetrievedItem(_Strict):
    item_id: str
    title: str
    category: str
    brand: str
    rank: int = Field(ge=1)
    score: float


class _V1ProductFit(_Strict):
    item_id: str
    category_match: float
    brand_match: float
    similarity: float
    score: float
    fits: bool


class _V1Consistency(_Strict):
    score: float
    products: list[_V1ProductFit]
    feedback: str


class _V1Step(_Strict):
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


class _V1Final(_Strict):
    query: str | None
    source: str | None
    consistency: float | None
    product_ids: list[str]


class _V1Target(_Strict):
    item_id: str
    title: str
    query: str | None


class _V1Record(_Strict):
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


# -------------------------------------------------------------------------------------------
# Schema v3


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


class Target(_Strict):
    """The held-out next item of an example from a data split, and its ground-truth query."""

    item_id: str
    title: str
    query: str | None = Field(description="HEM ground-truth query; None when it has no category")


class TrajectoryRecord(_Strict):
    """One graph run. See the module docstring; one JSON line in a trajectory file."""

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


def _now() -> str:
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
                "created": created or _now(),
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
        raise TrajectoryError(f"cannot record the run as {SCHEMA}: {_one_line(err)}") from None


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
    from graphs.offline.ingest import catalog_stats
    from memory_store import USERS_NAMESPACE, UserMemory, events_digest

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


# -------------------------------------------------------------------------------------------
# Files


def meta_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of a trajectory file: ``<path>.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


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


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def _sidecar(
    meta: dict[str, Any], count: int, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The sidecar: the caller's ``meta`` (command, config, catalog, anything else) plus the
    fields every trajectory file has. On append the first ``created`` is kept."""
    now = _now()
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "command": " ".join(sys.argv),
        "config": {},
        "code_version": None,
        "catalog": None,
    }
    out.update(meta)
    out["schema"] = SCHEMA
    out["code_version"] = out["code_version"] or code_version()
    out["record_count"] = count
    out["created"] = (previous or {}).get("created", now)
    if previous is not None:
        out["updated"] = now
    return out


def _write_atomic(path: Path, text: str) -> None:
    try:
        atomic_write(path, text, fsync=True)
    except OSError as err:
        raise TrajectoryError(f"{path}: cannot write in {path.parent} ({err.strerror})") from None


def _check_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise TrajectoryError(f"{path}: folder {path.parent} does not exist")


def read_meta(path: str | os.PathLike[str], *, readable: bool = False) -> dict[str, Any] | None:
    """The sidecar of a trajectory file, or None when it has none.

    Args:
        path: the ``.jsonl`` file.
        readable: accept any schema this module can read (v1, v2 too), not only the one it
            writes.

    Raises:
        TrajectoryError: the sidecar is not a JSON object or names another schema.
    """
    side = meta_path(path)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrajectoryError(f"{side}: not a JSON sidecar ({err})") from None
    if not isinstance(meta, dict):
        raise TrajectoryError(f"{side}: not a JSON object")
    accepted = (SCHEMA, *OLD_SCHEMAS) if readable else (SCHEMA,)
    if meta.get("schema") not in accepted:
        raise TrajectoryError(
            f"{side}: schema {meta.get('schema')!r}, expected {SCHEMA!r}; "
            "write to another file or use the loader of that schema"
        )
    return meta


class TrajectoryWriter:
    """Writes a trajectory file atomically: lines go to a temp file beside ``path``, which
    replaces ``path`` (and the sidecar is written) only when the ``with`` block ends cleanly.

    For exports too large to hold in memory::

        with TrajectoryWriter(out, meta) as writer:
            for chunk in chunks:
                writer.write(records_of(chunk))
    """

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        self.count = 0
        self._file: IO[str] | None = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> TrajectoryWriter:
        _check_folder(self.path)
        # The file goes to a temp name (memory_store.files.atomic_path) that replaces ``path``
        # when the block ends cleanly; on an error the temp is removed and ``path`` is untouched.
        self._stack = contextlib.ExitStack()
        try:
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._file = self._stack.enter_context(open(tmp, "x", encoding="utf-8"))
        except OSError as err:
            self._stack.close()
            raise TrajectoryError(
                f"{self.path}: cannot write in {self.path.parent} ({err.strerror})"
            ) from None
        return self

    def write(self, records: Iterable[TrajectoryRecord]) -> None:
        assert self._file is not None, "use TrajectoryWriter in a with block"
        for record in records:
            self._file.write(record.to_json() + "\n")
            self.count += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._file is not None and self._stack is not None
        if exc_type is None:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._stack.__exit__(exc_type, exc, tb)  # closes the file, then renames or removes it
        if exc_type is None:
            _write_atomic(
                meta_path(self.path), json.dumps(_sidecar(self.meta, self.count), indent=2)
            )


def write_trajectories(
    path: str | os.PathLike[str], records: Iterable[TrajectoryRecord], meta: dict[str, Any]
) -> Path:
    """Write ``records`` as a new JSONL file (replacing any) and its sidecar, atomically.

    Args:
        path: the ``.jsonl`` file; its folder must exist.
        records: the records, written in this order.
        meta: sidecar fields: ``command`` (default: this process's argv), ``config``,
            ``catalog`` (e.g. ``{"location", "collection"}``), anything else worth keeping;
            ``schema``, ``code_version``, ``record_count`` and ``created`` are filled in.

    Returns:
        ``path``.

    Raises:
        TrajectoryError: the folder does not exist.
    """
    with TrajectoryWriter(path, meta) as writer:
        writer.write(records)
    return Path(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    """The file opened for appending, under an exclusive lock (two CLIs logging at once).

    The lock is ``filelock.FileLock`` on a hidden ``.<name>.lock`` beside the file (portable,
    unlike ``fcntl.flock``); it is held from before the file is opened until it is closed.
    """
    from filelock import FileLock

    _check_folder(path)
    with FileLock(path.with_name(f".{path.name}.lock")):
        try:
            f = path.open("a+", encoding="utf-8")
        except OSError as err:
            raise TrajectoryError(f"{path}: cannot open for appending ({err.strerror})") from None
        with f:
            yield f


def check_appendable(path: str | os.PathLike[str]) -> int:
    """How many records ``path`` holds, after checking that records can be appended to it.

    A missing file is fine (0); its folder must exist. An existing file must be a valid
    trajectory file of this schema (every line, and the sidecar when there is one).

    Raises:
        TrajectoryError: missing folder, another schema, or an invalid line (``file:line: ...``).
    """
    path = Path(path)
    _check_folder(path)
    read_meta(path)
    if not path.exists():
        return 0
    return len(_load(path, skip_invalid=False, accept_old=False))  # old lines: write a new file


def append_trajectories(
    path: str | os.PathLike[str], records: Iterable[TrajectoryRecord], meta: dict[str, Any]
) -> int:
    """Append ``records`` to a trajectory file (``recommend --log``) and rewrite its sidecar.

    Creates the file and sidecar when absent. The existing file is validated first, so records
    are never appended to a file that would not load. The new lines go out in one write under a
    lock; the sidecar is replaced atomically and keeps the first ``created`` (``updated`` says
    when the last append happened; ``command``/``config`` are the last append's).

    Returns:
        The record count after appending.

    Raises:
        TrajectoryError: as ``check_appendable``.
    """
    path = Path(path)
    lines = [r.to_json() + "\n" for r in records]
    _check_folder(path)
    read_meta(path)  # before the file is created: another schema is refused untouched
    with _locked(path) as f:
        previous = read_meta(path)
        f.seek(0)
        existing = _validate_lines(path, f, skip_invalid=False)
        end = f.seek(0, os.SEEK_END)
        if end > 0:
            f.seek(end - 1)
            if f.read(1) != "\n":
                lines.insert(0, "\n")  # a hand-edited file without a final newline
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())
        count = len(existing) + sum(1 for line in lines if line != "\n")
        if previous is None and existing:
            previous = {}  # a log without a sidecar: the sidecar starts now
        _write_atomic(meta_path(path), json.dumps(_sidecar(meta, count, previous), indent=2))
    return count


class LoadedTrajectories(list[TrajectoryRecord]):
    """``load_trajectories``' result: a plain list of records, plus what was skipped.

    Attributes:
        path: the file read.
        skipped: invalid lines left out (only with ``skip_invalid=True``; else 0).
        problems: one ``"file:line: what is wrong"`` per skipped line.
    """

    def __init__(
        self, records: Iterable[TrajectoryRecord], path: Path, problems: list[str]
    ) -> None:
        super().__init__(records)
        self.path = path
        self.problems = problems
        self.skipped = len(problems)


def _parse_line(line: str, *, accept_old: bool) -> TrajectoryRecord:
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


def _validate_lines(
    path: Path, f: IO[str], *, skip_invalid: bool, accept_old: bool = False
) -> LoadedTrajectories:
    records: list[TrajectoryRecord] = []
    problems: list[str] = []
    try:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(_parse_line(line, accept_old=accept_old))
            except ValidationError as err:
                problem = f"{path}:{number}: {_one_line(err)}"
                if not skip_invalid:
                    raise TrajectoryError(problem) from None
                problems.append(problem)
    except UnicodeDecodeError as err:
        raise TrajectoryError(f"{path}: not UTF-8 text ({err.reason})") from None
    return LoadedTrajectories(records, path, problems)


def load_trajectories(
    path: str | os.PathLike[str], *, skip_invalid: bool = False
) -> LoadedTrajectories:
    """Read and validate every line of a trajectory file.

    Args:
        path: the ``.jsonl`` file.
        skip_invalid: leave invalid lines out (counted in ``result.skipped``, described in
            ``result.problems``, and logged) instead of raising on the first one.

    Returns:
        A ``LoadedTrajectories``: a ``list[TrajectoryRecord]`` in file order with ``skipped``
        and ``problems`` attributes. Blank lines are ignored.

    Raises:
        TrajectoryError: the file is missing or unreadable, its sidecar names another schema, or
            (unless ``skip_invalid``) a line is not a valid v3 record (or v1/v2 record, converted
            to v3 on read): ``"file.jsonl:3: ..."``.
    """
    return _load(path, skip_invalid=skip_invalid, accept_old=True)


def _load(
    path: str | os.PathLike[str], *, skip_invalid: bool, accept_old: bool
) -> LoadedTrajectories:
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(f"{path}: no such trajectory file")
    read_meta(path, readable=accept_old)
    try:
        with path.open(encoding="utf-8") as f:
            result = _validate_lines(path, f, skip_invalid=skip_invalid, accept_old=accept_old)
    except OSError as err:
        raise TrajectoryError(f"{path}: cannot read ({err.strerror})") from None
    if result.skipped:
        logger.warning("%s: skipped %d invalid line(s)", path, result.skipped)
    return result
