"""Shared fixtures. Nothing here downloads anything: the Hugging Face hub is switched off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# Exact comparisons (beams against teacher-forced scores, batched against one at a time) run in
# float32; the served default ("auto": bfloat16 where the CPU computes it natively) has its own
# tests (tests/integration/test_drafter_hf.py).
os.environ.setdefault("QUERYAGENT_DTYPE", "float32")

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_recbole_dir() -> Path:
    return FIXTURES / "tiny-recbole"


@pytest.fixture(scope="session")
def tiny_dataset(tiny_recbole_dir: Path):
    from memory_store import load_dataset

    return load_dataset(tiny_recbole_dir)


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test gets its own QueryAgent home unless it sets one itself."""
    monkeypatch.setenv("QUERYAGENT_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM with its tokenizer, built locally (no hub)."""
    from tests.helpers.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def ingested_home(tmp_path_factory: pytest.TempPathFactory, tiny_recbole_dir: Path) -> Path:
    """A QueryAgent home with the tiny data set ingested through the CLI (real Chroma + MiniLM)."""
    from graphs.cli import main

    home = tmp_path_factory.mktemp("ingested-home")
    assert main(["ingest", "--data", str(tiny_recbole_dir), "--home", str(home)]) == 0
    return home


@pytest.fixture()
def store(tiny_dataset):
    """An in-memory LangGraph store holding the tiny data set's shoppers and catalog stats."""
    from langgraph.store.memory import InMemoryStore

    from agent.nodes import CATALOG_NAMESPACE, CATALOG_STATS_KEY
    from memory_store import UserMemory

    store = InMemoryStore()
    UserMemory(store).ingest_dataset(tiny_dataset, progress=False)
    store.put(CATALOG_NAMESPACE, CATALOG_STATS_KEY, {"popular_categories": ["duct tape"]})
    return store


@pytest.fixture(scope="session")
def tiny_models(tiny_dataset):
    """The tiny catalog's fitted ranking models (vocabulary, transitions, next-item model; too
    few rows for a ranker), retrieval from the fake catalog."""
    from agent.ranking.fit import FitConfig, fit_catalog
    from agent.ranking.nextitem import NextItemConfig
    from tests.helpers.fakes import FakeCatalog

    catalog = FakeCatalog(tiny_dataset.products.values())
    return fit_catalog(
        tiny_dataset.products,
        tiny_dataset.sequences,
        catalog.search_many,
        FitConfig(nextitem=NextItemConfig(epochs=3)),
    )


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster (initdb in a temp folder, a free loopback port), stopped
    at the end of the session; skipped with the reason when this machine cannot start one."""
    from tests.helpers.servers import PostgresCluster

    reason = PostgresCluster.skip_reason()
    if reason:
        pytest.skip(reason)
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture()
def postgres_url(postgres_cluster, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database in the session's cluster, one per test."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[-50:]
    return postgres_cluster.create_database(name)


@pytest.fixture(scope="module")
def chroma_server():
    """``chroma run`` on a free loopback port over a temp folder, for one test module."""
    from tests.helpers.servers import ChromaServer

    reason = ChromaServer.skip_reason()
    if reason:
        pytest.skip(reason)
    with ChromaServer() as server:
        yield server


@pytest.fixture()
def no_default_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chroma's built-in embedder downloads an ONNX model: it must never run (a test module
    that builds Chroma collections asks for this with ``pytest.mark.usefixtures``)."""
    from chromadb.utils.embedding_functions import onnx_mini_lm_l6_v2

    def refuse(self: object, input: object) -> None:
        raise AssertionError("Chroma's default (downloading) embedding function was called")

    monkeypatch.setattr(onnx_mini_lm_l6_v2.ONNXMiniLM_L6_V2, "__call__", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
