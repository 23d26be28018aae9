"""The memory on a real PostgreSQL server: a throwaway cluster (``initdb`` in a temp folder, a free
loopback port; see ``tests/helpers/servers.py``), reached through ``QUERYAGENT_STORE_URL`` exactly
as a user would. The tiny data set, the tiny local LM and real Chroma keep it to seconds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graphs.cli import main
from memory_store import (
    PROFILES_NAMESPACE,
    IngestIncompleteError,
    StoreError,
    UserMemory,
    load_dataset,
    open_store,
)
from tests.helpers.servers import free_port

pytestmark = pytest.mark.integration

FILAMENT_USER = "A1TINYUSER01"


def _close(store: object) -> None:
    conn = getattr(store, "conn", None)
    if conn is not None:
        conn.close()


def test_memory_round_trips_through_postgres(postgres_url: str, tiny_recbole_dir: Path) -> None:
    tiny = load_dataset(tiny_recbole_dir)
    store = open_store(url=postgres_url)
    assert type(store).__name__ == "PostgresStore"
    stats = UserMemory(store).ingest_dataset(tiny, progress=False)
    assert stats.users == len(tiny.users)
    profile = UserMemory(store).profile(FILAMENT_USER, before=3)
    _close(store)

    # A second connection (another process, in real use) sees the same memory.
    reopened = UserMemory(open_store(url=postgres_url))
    assert reopened.ingest_state() == {
        "generation": 1,
        "complete": True,
        "data": tiny.name,
        "users": len(tiny.users),
    }
    for user in tiny.users:
        assert [e.item_id for e in reopened.events(user)] == tiny.sequences[user]
    assert reopened.store.get(PROFILES_NAMESPACE, f"{FILAMENT_USER}@3") is not None
    assert reopened.profile(FILAMENT_USER, before=3) == profile
    # The same profile as the SQLite store builds from the same data.
    sqlite = UserMemory(open_store(url="sqlite:///:memory:"))
    sqlite.ingest_dataset(tiny, progress=False)
    assert sqlite.profile(FILAMENT_USER, before=3) == profile
    _close(reopened.store)


def test_interrupted_ingest_is_refused_on_postgres(
    postgres_url: str, tiny_recbole_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = load_dataset(tiny_recbole_dir)
    memory = UserMemory(open_store(url=postgres_url))
    real_add = UserMemory.add_events
    calls = []

    def killed_after_first_chunk(self, events, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # what a kill looks like to the code that was running
        return real_add(self, events, **kwargs)

    monkeypatch.setattr(UserMemory, "add_events", killed_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        memory.ingest_dataset(tiny, progress=False, users_per_batch=2)
    monkeypatch.undo()

    written, unwritten = tiny.users[:2], tiny.users[2:]
    for user in written:
        memory.check_ingested(user)
    for user in unwritten:
        with pytest.raises(IngestIncompleteError, match="ingest was interrupted"):
            memory.profile(user)
    memory.ingest_dataset(tiny, progress=False)  # the advice: run it again
    for user in tiny.users:
        memory.check_ingested(user)
        assert memory.n_events(user) == len(tiny.sequences[user])
    _close(memory.store)


def test_cli_ingest_and_recommend_on_postgres(
    postgres_url: str,
    ingested_home: Path,
    tiny_recbole_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A fresh home with the catalog only: the memory must come from PostgreSQL (an empty SQLite
    # memory would answer "unknown user").
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(ingested_home / "chroma", home / "chroma")
    monkeypatch.setenv("QUERYAGENT_STORE_URL", postgres_url)
    assert main(["ingest", "--data", str(tiny_recbole_dir), "--home", str(home)]) == 0
    capsys.readouterr()
    code = main(
        ["recommend", "--user", FILAMENT_USER, "--json", "--model", str(tiny_model_dir),
         "--home", str(home), "--max-refinements", "0"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user_id"] == FILAMENT_USER and out["query"] and len(out["products"]) == 10
    # The run read and cached the shopper's profile in PostgreSQL.
    store = open_store(url=postgres_url)
    assert store.get(PROFILES_NAMESPACE, f"{FILAMENT_USER}@5") is not None
    _close(store)


def test_unreachable_postgres_is_one_line_exit_2(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(StoreError, match="cannot open the PostgreSQL memory store"):
        open_store(url=url)
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.cli", "recommend", "--user", "X", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "QUERYAGENT_STORE_URL": url.replace("postgres@", "postgres:secret@")},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "secret" not in proc.stderr  # the password is not echoed


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_studio_server_store_opens_postgres(
    postgres_url: str, tiny_recbole_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``langgraph dev`` gets its store from ``graphs/studio.py``: the same URL, async API."""
    import asyncio

    from graphs.studio import generate_store
    from memory_store import USERS_NAMESPACE

    store = open_store(url=postgres_url)
    UserMemory(store).ingest_dataset(load_dataset(tiny_recbole_dir), progress=False)
    _close(store)
    monkeypatch.setenv("QUERYAGENT_STORE_URL", postgres_url)

    async def read() -> object:
        async with generate_store() as server_store:
            assert type(server_store).__name__ == "PostgresStore"
            return await server_store.aget(USERS_NAMESPACE, FILAMENT_USER)

    item = asyncio.run(read())
    assert item is not None and item.value["n_events"] == 5  # type: ignore[attr-defined]
