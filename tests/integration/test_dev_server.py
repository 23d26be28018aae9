"""``langgraph dev`` serves the module-level graph offline, with the CLI's memory and catalog.

Starts the real dev server on a free loopback port (2024 may be taken on these machines), creates
a thread and a run through its REST API, and checks the run recommends exactly what the same
graph recommends in-process over the same QueryAgent home.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent.context import Context
from agent.state import output_json
from graphs.query_agent import build_graph, default_deps
from memory_store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
USER = "A1TINYUSER01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def server(ingested_home: Path, tiny_model_dir: Path, tmp_path: Path):
    port = _free_port()
    env = {
        **os.environ,
        "QUERYAGENT_HOME": str(ingested_home),
        "QUERYAGENT_MODEL": str(tiny_model_dir),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "langgraph"),
            "dev",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--no-browser",
            "--no-reload",
            "--config",
            "langgraph.json",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited: {(tmp_path / 'dev.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("langgraph dev did not answer /ok within 120 s")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_run_through_the_server_api_matches_in_process(
    server: str, ingested_home: Path, tiny_model_dir: Path
) -> None:
    with httpx.Client(base_url=server, timeout=180) as client:
        assistants = client.post("/assistants/search", json={"graph_id": "queryagent"}).json()
        assert assistants and assistants[0]["graph_id"] == "queryagent"
        thread = client.post("/threads", json={}).json()
        run = client.post(
            f"/threads/{thread['thread_id']}/runs/wait",
            json={
                "assistant_id": "queryagent",
                "input": {"user_id": USER},
                "context": {"max_refinements": 1},
            },
        )
        assert run.status_code == 200, run.text
        served = run.json()
        state = client.get(f"/threads/{thread['thread_id']}/state").json()

    graph = build_graph(default_deps(str(tiny_model_dir), home=str(ingested_home))).compile(
        store=open_store(ingested_home)
    )
    local = output_json(graph.invoke({"user_id": USER}, context=Context(max_refinements=1)))

    assert served["query"], served
    assert served["query"] == local["query"]
    assert served["query_text"] == local["query_text"] and served["query_text"]
    assert [p["item_id"] for p in served["products"]] == [p["item_id"] for p in local["products"]]
    assert [a["completion"] for a in served["attempts"]] == [
        a["completion"] for a in local["attempts"]
    ]
    # the typed state reaches the API as the same JSON as the local output's
    assert served["fit"] == local["fit"] and served["profile"] == local["profile"]
    assert [a["check"] for a in served["attempts"]] == [a["check"] for a in local["attempts"]]
    # the server's checkpointer kept the run's state, memory included (not an empty store)
    assert state["values"]["profile"]["user_id"] == USER
    assert state["values"]["profile"]["n_events"] == 5


def test_updates_stream_shows_every_nodes_update(server: str) -> None:
    """Studio's `updates` stream (a LangGraph server filters it to the output schema): every
    node's update arrives, none as null."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    thread = client.threads.create()
    updates: dict[str, list[object]] = {}
    for chunk in client.runs.stream(
        thread["thread_id"],
        "queryagent",
        input={"user_id": USER},
        context={"max_refinements": 0},
        stream_mode="updates",
    ):
        if chunk.event == "updates" and isinstance(chunk.data, dict):
            for node, update in chunk.data.items():
                updates.setdefault(node, []).append(update)
    nodes = (
        "recall_memory",
        "draft_query",
        "recall_candidates",
        "retrieve_products",
        "check_consistency",
        "finalize",
        "write_query",
        "check_text",
        "choose_text",
    )
    for node in nodes:
        assert node in updates, sorted(updates)
        assert all(u for u in updates[node]), (node, updates[node])
    assert updates["recall_memory"][0]["profile"]["user_id"] == USER  # type: ignore[index]
    assert updates["recall_candidates"][0]["pending"]  # type: ignore[index]
    checked = updates["check_consistency"][0]["attempts"]  # type: ignore[index]
    assert all(0 <= a["check"]["fit"] <= 1 for a in checked)
    assert isinstance(updates["finalize"][0]["products"][0]["item_id"], str)  # type: ignore[index]
    # the intent (finalize's query) and the text the shopper sees (choose_text's)
    assert updates["choose_text"][0]["text_source"] in {"model", "intent"}  # type: ignore[index]
    assert updates["choose_text"][0]["query_text"]  # type: ignore[index]
