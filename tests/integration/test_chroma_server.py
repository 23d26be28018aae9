"""The catalog on a real Chroma server (``chroma run`` on a free loopback port, see
``tests/helpers/servers.py``), reached through ``QUERYAGENT_CHROMA_HOST``/``_PORT`` as a user would:
ingest, recommend and eval; the same answers as the embedded client; a server that is down is one
line before any model work; a restart mid-run is retried with backoff, then reported."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.catalog import CatalogError, ChromaCatalog
from graphs.cli import main
from memory_store import load_dataset
from tests.helpers.servers import ChromaServer, free_port

pytestmark = pytest.mark.integration

QUERIES = ["glass beaker set", "pla 3d printer filament", "duct tape", "nitrile gloves"]


@pytest.fixture()
def server_env(chroma_server: ChromaServer, monkeypatch: pytest.MonkeyPatch) -> ChromaServer:
    for name, value in chroma_server.env.items():
        monkeypatch.setenv(name, value)
    return chroma_server


def test_ingest_and_recommend_through_the_server(
    server_env: ChromaServer,
    tiny_recbole_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    assert main(["ingest", "--data", str(tiny_recbole_dir), "--home", str(home)]) == 0
    assert not (home / "chroma").exists()  # the catalog went to the server
    capsys.readouterr()
    code = main(
        ["recommend", "--user", "A1TINYUSER01", "--json", "--model", str(tiny_model_dir),
         "--home", str(home), "--max-refinements", "0"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["products"]) == 10 and out["products"][0]["rank"] == 1


def test_server_answers_as_the_embedded_client(
    chroma_server: ChromaServer, ingested_home: Path, tiny_recbole_dir: Path
) -> None:
    tiny = load_dataset(tiny_recbole_dir)
    remote = ChromaCatalog(host=chroma_server.host, port=chroma_server.port, collection="same")
    remote.upsert(tiny.products.values(), progress=False)
    local = ChromaCatalog(home=ingested_home)
    assert remote.count() == local.count() == len(tiny.products)
    for mine, theirs in zip(remote.search_many(QUERIES), local.search_many(QUERIES), strict=True):
        assert [p.item_id for p in mine] == [p.item_id for p in theirs]
        assert [p.score for p in mine] == pytest.approx([p.score for p in theirs], abs=1e-5)
    ids = sorted(tiny.products)
    assert remote.get(ids) == local.get(ids)


def test_eval_through_the_server(
    server_env: ChromaServer, tiny_recbole_dir: Path, tmp_path: Path
) -> None:
    from training.cli import main as train_main

    out = tmp_path / "report.json"
    code = train_main(
        ["eval", "--data", str(tiny_recbole_dir), "--methods", "popular,dense-query",
         "--out", str(out), "--home", str(tmp_path / "home")]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"popular", "dense-query"}
    assert not (tmp_path / "home" / "chroma").exists()


def test_server_down_is_one_line_before_any_model_work(ingested_home: Path, tmp_path: Path) -> None:
    # A model folder that fails as soon as anything tries to load it: had the model come first,
    # the error would be about the model.
    garbage = tmp_path / "garbage-model"
    garbage.mkdir()
    (garbage / "config.json").write_text('{"model_type": "no-such-architecture"}')
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.cli", "recommend", "--user", "A1TINYUSER01",
         "--home", str(ingested_home), "--model", str(garbage)],
        capture_output=True, text=True, timeout=120,
        env={**_environ(), "QUERYAGENT_CHROMA_HOST": "127.0.0.1",
             "QUERYAGENT_CHROMA_PORT": str(free_port())},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "cannot reach the Chroma server" in proc.stderr


def test_restart_mid_run_is_retried_then_reported(
    chroma_server: ChromaServer, tiny_recbole_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tiny = load_dataset(tiny_recbole_dir)
    catalog = ChromaCatalog(
        host=chroma_server.host, port=chroma_server.port, collection="restart", retry_seconds=60
    )
    catalog.upsert(tiny.products.values(), progress=False)
    before = catalog.search_many(QUERIES)

    chroma_server.stop_process()
    restarter = threading.Thread(target=lambda: (time.sleep(1.0), chroma_server.start()))
    restarter.start()
    with caplog.at_level(logging.WARNING, logger="agent.catalog"):
        after = catalog.search_many(QUERIES)  # issued while the server is down
    restarter.join()
    assert after == before
    assert any("Retrying" in r.getMessage() for r in caplog.records)

    # Down for longer than the retry budget: one CatalogError line, not a transport traceback.
    chroma_server.stop_process()
    try:
        impatient = ChromaCatalog.__new__(ChromaCatalog)
        impatient.__dict__.update(catalog.__dict__)
        impatient.retry_seconds = 1.0
        with pytest.raises(CatalogError, match="did not answer query") as err:
            impatient.search("duct tape")
        assert "\n" not in str(err.value)
    finally:
        chroma_server.start()


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
