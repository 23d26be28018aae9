"""Issue 11, probes 1, 2 and 5: ingest never leaves a half state.

A bad id or an oversized input is one line before anything is written; an interrupted ingest is
refused with "run `queryagent ingest` again" instead of serving real shoppers as cold start, and
running it again converges to the same memory as an uninterrupted ingest.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.drafting import BASE_MODEL_ID
from agent.drafting.resolve import MODEL_ENV, SHIPPED_MODEL_DIR
from memory_store import (
    EVENTS_NAMESPACE,
    USERS_NAMESPACE,
    DataError,
    IngestIncompleteError,
    UserMemory,
    load_dataset,
    load_jsonl,
    open_store,
)

REPO = Path(__file__).resolve().parents[2]
TINY_JSONL = REPO / "tests" / "fixtures" / "tiny-jsonl"
BUNDLED = REPO / "data" / "amazon-scientific"


# A checkout without the shipped writer warns on every command (each imports
# graphs.query_agent, whose Studio graph resolves the default model): there, the commands are
# given the base model it falls back to, so stderr holds only what a test checks.
QUIET_MODEL_ENV = (
    {} if (SHIPPED_MODEL_DIR / "adapter_config.json").is_file() else {MODEL_ENV: BASE_MODEL_ID}
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "graphs.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**QUIET_MODEL_ENV, **os.environ, **(env or {})},
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def jsonl_copy(tmp_path: Path, edit_sequence_line: int | None = None, **fields: str) -> Path:
    """The tiny JSON-lines set, with fields of one sequences.jsonl line (1-based) replaced."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "products.jsonl").write_text((TINY_JSONL / "products.jsonl").read_text())
    lines = (TINY_JSONL / "sequences.jsonl").read_text().splitlines()
    if edit_sequence_line is not None:
        record = json.loads(lines[edit_sequence_line - 1])
        record.update(fields)
        lines[edit_sequence_line - 1] = json.dumps(record)
    (data / "sequences.jsonl").write_text("\n".join(lines) + "\n")
    return data


# --------------------------------------------------------------------------- probe 1: bad ids


def test_dotted_user_id_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    data = jsonl_copy(tmp_path, 2, user_id="john.doe")
    home = tmp_path / "home"
    proc = run_cli("ingest", "--data", str(data), "--home", str(home))
    assert_one_line(proc, "sequences.jsonl:2", "'john.doe'")
    assert not (home / "chroma").exists() and not (home / "memory.sqlite").exists()


def test_dotted_user_id_in_user2index_is_refused(tmp_path: Path, tiny_recbole_dir: Path) -> None:
    data = tmp_path / "recbole"
    data.mkdir()
    for f in tiny_recbole_dir.iterdir():
        (data / f.name).write_text(f.read_text())
    lines = (data / "Tiny.user2index").read_text().splitlines()
    lines[2] = "john.doe\t" + lines[2].split("\t")[1]
    (data / "Tiny.user2index").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"Tiny\.user2index:3: user id 'john\.doe' contains '\.'"):
        load_dataset(data)


@pytest.mark.parametrize(
    ("file", "field", "value", "message"),
    [
        ("sequences.jsonl", "user_id", "", "empty user id"),
        ("sequences.jsonl", "user_id", "a\x00b", "NUL"),
        ("products.jsonl", "item_id", " ", "empty item id"),
    ],
)
def test_ids_the_store_cannot_key_by_are_refused(
    tmp_path: Path, file: str, field: str, value: str, message: str
) -> None:
    data = jsonl_copy(tmp_path)
    lines = (data / file).read_text().splitlines()
    record = json.loads(lines[0])
    record[field] = value
    lines[0] = json.dumps(record)
    (data / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{file}:1: .*{message}"):
        load_jsonl(data)


# --------------------------------------------------------------------------- probe 5: sizes


def test_oversized_line_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    data = jsonl_copy(tmp_path)
    with (data / "products.jsonl").open("a") as f:  # 2 MiB title: over the 1 MiB default
        f.write(json.dumps({"item_id": "HUGE", "title": "x" * (2 << 20)}) + "\n")
    home = tmp_path / "home"
    proc = run_cli("ingest", "--data", str(data), "--home", str(home))
    assert_one_line(proc, "products.jsonl:13", "over the limit", "QUERYAGENT_MAX_LINE_BYTES")
    assert not home.exists()


def test_size_limits_are_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = jsonl_copy(tmp_path)
    assert load_jsonl(data).users  # within the defaults
    monkeypatch.setenv("QUERYAGENT_MAX_LINE_BYTES", "40")
    with pytest.raises(DataError, match=r"products\.jsonl:1: line is over the limit of 40 bytes"):
        load_jsonl(data)
    monkeypatch.delenv("QUERYAGENT_MAX_LINE_BYTES")
    monkeypatch.setenv("QUERYAGENT_MAX_FILE_BYTES", "100")
    with pytest.raises(DataError, match=r"products\.jsonl: file is .* over the limit of 100"):
        load_jsonl(data)
    monkeypatch.setenv("QUERYAGENT_MAX_FILE_BYTES", "lots")
    with pytest.raises(DataError, match="QUERYAGENT_MAX_FILE_BYTES: must be a positive number"):
        load_jsonl(data)


# --------------------------------------------------------------------------- probe 2: interrupted


def memory_digest(memory: UserMemory, users: list[str]) -> str:
    """What the memory holds for ``users``: registry counts and every event (no bookkeeping)."""
    digest = hashlib.sha256()
    for user in users:
        entry = memory.store.get(USERS_NAMESPACE, user)
        assert entry is not None, user
        digest.update(json.dumps([user, entry.value["n_events"], entry.value["revision"]]).encode())
        for event in memory.events(user):
            digest.update(event.model_dump_json().encode())
    return digest.hexdigest()


def test_interrupted_ingest_is_refused_then_repaired(
    tmp_path: Path, tiny_recbole_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = load_dataset(tiny_recbole_dir)
    home = tmp_path / "home"
    memory = UserMemory(open_store(home))
    real_add = UserMemory.add_events
    calls: list[int] = []

    def killed_after_first_chunk(self: UserMemory, events, **kwargs) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # the process dies here
        real_add(self, events, **kwargs)

    monkeypatch.setattr(UserMemory, "add_events", killed_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        memory.ingest_dataset(tiny, progress=False, users_per_batch=2)
    monkeypatch.undo()
    memory.store.conn.close()  # type: ignore[attr-defined]

    # A shopper with 5 purchases whose events were never written: not a cold-start shopper.
    unwritten = "A1TINYUSER03"
    assert tiny.sequences[unwritten] and unwritten not in tiny.users[:2]
    proc = run_cli("recommend", "--user", unwritten, "--home", str(home))
    assert_one_line(proc, "ingest was interrupted; run `queryagent ingest` again")

    memory = UserMemory(open_store(home))
    memory.ingest_dataset(tiny, progress=False)
    clean = UserMemory(open_store(url="sqlite:///:memory:"))
    clean.ingest_dataset(tiny, progress=False)
    for user in tiny.users:
        memory.check_ingested(user)
    assert memory_digest(memory, tiny.users) == memory_digest(clean, tiny.users)


@pytest.mark.slow
@pytest.mark.integration
def test_sigkilled_ingest_resumes_to_the_same_digest(tmp_path: Path) -> None:
    """A real kill (SIGKILL) of an ingest of the bundled 8,442 shoppers, part way through."""
    db = tmp_path / "memory.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from memory_store import *; "
         "UserMemory(open_store(url=sys.argv[1])).ingest_dataset("
         "load_dataset(sys.argv[2]), progress=False, users_per_batch=10)",
         f"sqlite:///{db}", str(BUNDLED)],
        cwd=REPO,
    )  # fmt: skip
    try:
        written = 0
        deadline = time.monotonic() + 120
        while written < 500 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
            written = _registered(db)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"

    dataset = load_dataset(BUNDLED)
    memory = UserMemory(open_store(url=f"sqlite:///{db}"))
    state = memory.ingest_state()
    assert state is not None and state["complete"] is False
    refused = [u for u in dataset.users if _refused(memory, u)]
    assert 0 < len(refused) < len(dataset.users)
    shopper = next(u for u in refused if dataset.sequences[u])
    with pytest.raises(IngestIncompleteError, match="run `queryagent ingest` again"):
        memory.profile(shopper)

    memory.ingest_dataset(dataset, progress=False)
    clean = UserMemory(open_store(url=f"sqlite:///{tmp_path / 'clean.sqlite'}"))
    clean.ingest_dataset(dataset, progress=False)
    sample = dataset.users[::50]
    assert memory_digest(memory, sample) == memory_digest(clean, sample)
    assert _count(memory, EVENTS_NAMESPACE) == _count(clean, EVENTS_NAMESPACE) == 59427


def _registered(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as conn:
            row = conn.execute(
                "SELECT count(*) FROM store WHERE prefix = 'queryagent.users'"
            ).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def _refused(memory: UserMemory, user: str) -> bool:
    try:
        memory.check_ingested(user)
    except IngestIncompleteError:
        return True
    return False


def _count(memory: UserMemory, prefix: tuple[str, ...]) -> int:
    conn = memory.store.conn  # type: ignore[attr-defined]
    row = conn.execute(
        "SELECT count(*) FROM store WHERE prefix LIKE ?", (".".join(prefix) + ".%",)
    ).fetchone()
    return int(row[0])
