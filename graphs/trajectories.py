"""Trajectory files: the versioned record of what the agent did, and the recorder that makes it.

A trajectory is one graph run: the profile the run recalled, every draft and refinement (the
chain of retrieval) with the token ids recorded when they were generated, what each query
retrieved and how well that fit, and the final recommendation. Training (SFT, GRPO) and analysis
read these files, so the schema is versioned (``SCHEMA``) and frozen: a line written as v1 stays
loadable as v1 (``tests/fixtures/trajectories-v1.jsonl`` guards that). A change that breaks it is
a new schema id, not an edit of these models.

The recorder is a LangChain callback handler, attached through the run config; the graph and the
nodes know nothing about it::

    from graphs.trajectories import TrajectoryRecorder, write_trajectories
    recorder = TrajectoryRecorder(model="smollm2-135m-instruct")
    graph.invoke({"user_id": "A1SWWHE1L3XR3V"}, config={"callbacks": [recorder]})
    graph.batch(inputs, config={"callbacks": [recorder], "max_concurrency": 8})  # one recorder
    write_trajectories("runs/demo.jsonl", recorder.records, {"command": "...", "config": {...}})

What LangGraph 1.2 gives a callback handler (checked empirically, not documented as an API):
the graph run is a chain run with ``parent_run_id=None`` whose ``inputs`` are the caller's input
dict and whose ``outputs`` are the ``OutputState`` dict; each node is a child chain run named
after the node, ``parent_run_id`` = the graph run, ``tags=["graph:step:<n>"]`` and ``metadata``
with ``langgraph_node`` and ``langgraph_step`` (the superstep), plus the config's metadata (the
``thread_id`` when the config has one); its ``outputs`` are the node's returned update. A
router (``route_after_check``) is a grandchild run that inherits its node's metadata. The
drafter is not a LangChain model, so there are no ``on_llm_*`` events: each draft/refine node run
is one model call, and its ``current`` update holds the prompt, completion and token ids.

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
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memory_store.files import atomic_path, atomic_write

__all__ = [
    "SCHEMA",
    "LoadedTrajectories",
    "TrajectoryError",
    "TrajectoryRecord",
    "TrajectoryRecorder",
    "TrajectoryStep",
    "TrajectoryWriter",
    "append_trajectories",
    "check_appendable",
    "code_version",
    "load_trajectories",
    "meta_path",
    "read_meta",
    "write_trajectories",
]

logger = logging.getLogger(__name__)

SCHEMA = "queryagent.trajectory/v1"

# Nodes whose update holds a generated attempt in ``current``.
GENERATION_NODES = {"draft_query": "draft", "refine_query": "refine"}


class TrajectoryError(Exception):
    """A trajectory file is missing, malformed or of another schema (one line for a CLI)."""


# -------------------------------------------------------------------------------------------
# Schema v1. Self-contained on purpose: it does not reuse agent.records, so a change there cannot
# silently change what a v1 file means; the recorder fails loudly instead (see ``errors``).


class _Strict(BaseModel):
    # strict: no silent coercion ("3" is not an int); extra="forbid": an unknown key is an error.
    model_config = ConfigDict(extra="forbid", strict=True)


class Message(_Strict):
    """One chat message of a prompt."""

    role: str
    content: str


class RetrievedItem(_Strict):
    """A product a query retrieved, in catalog rank order; ``score`` is a similarity."""

    item_id: str
    title: str
    category: str
    brand: str
    rank: int = Field(ge=1)
    score: float


class ProductFit(_Strict):
    """How one retrieved product fits the profile (each part in [0, 1])."""

    item_id: str
    category_match: float
    brand_match: float
    similarity: float
    score: float
    fits: bool


class Consistency(_Strict):
    """The consistency check's report on an attempt's top products (agent.records)."""

    score: float
    products: list[ProductFit]
    feedback: str


class TrajectoryStep(_Strict):
    """One model call of the chain of retrieval: a draft or a refinement, and what it found.

    ``prompt_token_ids`` / ``completion_token_ids`` are the ids recorded at generation time (never
    re-tokenized: decoding and encoding again does not round-trip). A completion that is not a
    query is kept as data: ``query`` is None, ``error`` says why, ``retrieved`` is empty.
    """

    node: str = Field(description="LangGraph node that made the call: draft_query, refine_query")
    step: int = Field(ge=0, description="LangGraph superstep of that node")
    turn: int = Field(ge=0, description="0 for the draft, then 1, 2, ... for refinements")
    kind: Literal["draft", "refine"]
    messages: list[Message]
    completion: str
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    query: str | None
    error: str | None
    retrieved: list[RetrievedItem]
    consistency: Consistency | None


class FinalAnswer(_Strict):
    """What the run recommended (the graph's output)."""

    query: str | None
    source: str | None = Field(description="'model', or 'fallback' when no attempt parsed")
    consistency: float | None
    product_ids: list[str]


class Target(_Strict):
    """The held-out next item of an example from a data split, and its ground-truth query."""

    item_id: str
    title: str
    query: str | None = Field(description="HEM ground-truth query; None when it has no category")


class TrajectoryRecord(_Strict):
    """One graph run. See the module docstring; one JSON line in a trajectory file."""

    schema_: Literal["queryagent.trajectory/v1"] = Field(alias="schema")
    run_id: str = Field(description="the graph run's LangChain run id")
    thread_id: str | None
    user_id: str
    before: int | None = Field(description="memory cut: the profile saw the first `before` events")
    model: str | None = Field(description="the drafter's model id or path")
    created: str = Field(description="ISO-8601 time the run started (UTC)")
    memory_recalled: bool = Field(description="recall_memory ran (Fetch_Memory)")
    profile: dict[str, Any] = Field(description="the UserProfile snapshot the run used")
    steps: list[TrajectoryStep]
    final: FinalAnswer
    target: Target | None = None

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

    def to_json(self) -> str:
        """The record as one JSON line (without the newline)."""
        return self.model_dump_json(by_alias=True)


# -------------------------------------------------------------------------------------------
# Recorder


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class _Run:
    """What the recorder has seen of one graph run so far."""

    run_id: str
    inputs: dict[str, Any]
    thread_id: str | None
    created: str
    memory_recalled: bool = False
    profile: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if hasattr(value, "__dataclass_fields__"):  # an InputState passed as the input
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return {}


class TrajectoryRecorder(BaseCallbackHandler):
    """Records each graph run it sees as a ``TrajectoryRecord``.

    Attach it through the run config (``config={"callbacks": [recorder]}``) of ``invoke``,
    ``batch`` or ``stream`` on the compiled graph; the graph must be the outermost runnable (its
    run is the root, ``parent_run_id=None``). One recorder may serve many concurrent runs
    (``graph.batch``): runs are kept apart by their root run id, found by following
    ``parent_run_id``, and all state is behind a lock.

    Args:
        model: the drafter's model id or path, written into every record.
        on_record: called (outside the lock, in the thread that finished the run) with each
            completed record, e.g. to advance a progress bar.
        keep: keep completed records in ``records`` (turn off for long exports that ``drain``).

    Attributes:
        records: completed runs, in completion order (not input order under ``batch``).
        errors: one line per run that ended but could not be recorded (schema mismatch), so a
            caller can tell "no record" from "no run". A failed graph run is counted in
            ``failed_runs`` and leaves no record.
    """

    # Handle events in the calling thread, in order: under ``ainvoke``/``abatch`` a sync handler
    # would otherwise run in an executor and could see a run's end before its last node's end.
    run_inline = True

    def __init__(
        self,
        *,
        model: str | None = None,
        on_record: Callable[[TrajectoryRecord], None] | None = None,
        keep: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.on_record = on_record
        self.keep = keep
        self.records: list[TrajectoryRecord] = []
        self.errors: list[str] = []
        self.failed_runs = 0
        self._lock = threading.Lock()
        self._runs: dict[UUID, _Run] = {}
        self._root_of: dict[UUID, UUID] = {}  # every live run under a recorded root -> the root
        self._nodes: dict[UUID, tuple[str, int]] = {}  # node run -> (node name, superstep)

    def drain(self) -> list[TrajectoryRecord]:
        """The completed records so far, removed from ``records``."""
        with self._lock:
            done, self.records = self.records, []
        return done

    # -- callbacks ------------------------------------------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        with self._lock:
            if parent_run_id is None:
                thread_id = metadata.get("thread_id")
                self._runs[run_id] = _Run(
                    run_id=str(run_id),
                    inputs=dict(_as_dict(inputs)),
                    thread_id=str(thread_id) if thread_id is not None else None,
                    created=_now(),
                )
                self._root_of[run_id] = run_id
                return
            root = self._root_of.get(parent_run_id)
            if root is None:
                return  # under a run that started before the recorder was attached
            self._root_of[run_id] = root
            node = metadata.get("langgraph_node")
            # A node run is a direct child of the graph run; a router below it inherits the same
            # metadata but is a grandchild, so it is not mistaken for the node.
            if parent_run_id == root and node is not None and kwargs.get("name", node) == node:
                self._nodes[run_id] = (str(node), int(metadata.get("langgraph_step", 0)))

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        record = None
        with self._lock:
            root = self._root_of.pop(run_id, None)
            if root is None:
                return
            node = self._nodes.pop(run_id, None)
            if run_id == root:
                record = self._finish(self._runs.pop(root), outputs)
            elif node is not None and root in self._runs and isinstance(outputs, dict):
                self._apply(self._runs[root], node[0], node[1], outputs)
            if record is not None and self.keep:
                self.records.append(record)
        if record is not None and self.on_record is not None:
            self.on_record(record)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            root = self._root_of.pop(run_id, None)
            self._nodes.pop(run_id, None)
            if root is not None and run_id == root:
                self._runs.pop(root, None)
                self.failed_runs += 1

    # -- assembly (called with the lock held) ---------------------------------------------------
    @staticmethod
    def _apply(run: _Run, node: str, step: int, update: dict[str, Any]) -> None:
        if node == "recall_memory":
            run.memory_recalled = True
            run.profile = dict(update.get("profile") or {})
        elif node in GENERATION_NODES and isinstance(update.get("current"), dict):
            attempt = update["current"]
            run.steps.append(
                {
                    "node": node,
                    "step": step,
                    "turn": attempt.get("turn"),
                    "kind": attempt.get("kind"),
                    "messages": attempt.get("messages"),
                    "completion": attempt.get("completion"),
                    "prompt_token_ids": list(attempt.get("prompt_token_ids") or []),
                    "completion_token_ids": list(attempt.get("completion_token_ids") or []),
                    "query": attempt.get("query"),
                    "error": attempt.get("error"),
                    "retrieved": [],
                    "consistency": None,
                }
            )
        elif node == "check_consistency":
            # The closed attempt: what its query retrieved (all top_k) and the fit report.
            for attempt in update.get("attempts") or []:
                for pending in reversed(run.steps):
                    key = (attempt.get("turn"), attempt.get("kind"))
                    if (pending["turn"], pending["kind"]) == key:
                        pending["retrieved"] = list(attempt.get("products") or [])
                        pending["consistency"] = attempt.get("consistency")
                        break

    def _finish(self, run: _Run, outputs: Any) -> TrajectoryRecord | None:
        out = _as_dict(outputs)
        if not run.steps and not run.memory_recalled:
            return None  # not a query-agent run (some other runnable under this recorder)
        try:
            products = out.get("products") or []
            return TrajectoryRecord.model_validate(
                {
                    "schema": SCHEMA,
                    "run_id": run.run_id,
                    "thread_id": run.thread_id,
                    "user_id": out.get("user_id", run.inputs.get("user_id")),
                    "before": run.inputs.get("before"),
                    "model": self.model,
                    "created": run.created,
                    "memory_recalled": run.memory_recalled,
                    "profile": run.profile,
                    "steps": run.steps,
                    "final": {
                        "query": out.get("query"),
                        "source": out.get("source"),
                        "consistency": out.get("consistency"),
                        "product_ids": [p.get("item_id") for p in products],
                    },
                }
            )
        except (ValidationError, AttributeError) as err:
            detail = _one_line(err) if isinstance(err, ValidationError) else str(err)
            message = f"run {run.run_id}: cannot record as {SCHEMA}: {detail}"
            logger.warning(message)
            self.errors.append(message)
            return None


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


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of a trajectory file, or None when it has none.

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
    if meta.get("schema") != SCHEMA:
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
    return len(load_trajectories(path))


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


def _validate_lines(path: Path, f: IO[str], *, skip_invalid: bool) -> LoadedTrajectories:
    records: list[TrajectoryRecord] = []
    problems: list[str] = []
    try:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(TrajectoryRecord.model_validate_json(line))
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
            (unless ``skip_invalid``) a line is not a valid v1 record: ``"file.jsonl:3: ..."``.
    """
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(f"{path}: no such trajectory file")
    read_meta(path)
    try:
        with path.open(encoding="utf-8") as f:
            result = _validate_lines(path, f, skip_invalid=skip_invalid)
    except OSError as err:
        raise TrajectoryError(f"{path}: cannot read ({err.strerror})") from None
    if result.skipped:
        logger.warning("%s: skipped %d invalid line(s)", path, result.skipped)
    return result
