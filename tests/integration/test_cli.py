"""The ``queryagent`` CLI end to end: real Chroma, real MiniLM, a tiny local causal LM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.catalog import ChromaCatalog
from graphs.cli import main
from memory_store import UserMemory, open_store

pytestmark = pytest.mark.integration


def test_ingest_fills_catalog_and_memory_idempotently(
    ingested_home: Path, tiny_recbole_dir, capsys
) -> None:
    catalog = ChromaCatalog(home=ingested_home)
    assert catalog.count() == 12
    memory = UserMemory(open_store(ingested_home))
    assert memory.known("A1TINYUSER01") and memory.n_events("A1TINYUSER01") == 5
    assert main(["ingest", "--data", str(tiny_recbole_dir), "--home", str(ingested_home)]) == 0
    assert ChromaCatalog(home=ingested_home).count() == 12
    assert UserMemory(open_store(ingested_home)).n_events("A1TINYUSER01") == 5
    assert "12 products" in capsys.readouterr().out


def test_recommend_json(ingested_home: Path, tiny_model_dir: Path, capsys) -> None:
    code = main(
        [
            "recommend",
            "--user",
            "A1TINYUSER01",
            "--json",
            "--model",
            str(tiny_model_dir),
            "--home",
            str(ingested_home),
            "--max-refinements",
            "1",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user_id"] == "A1TINYUSER01"
    # Every candidate is a query of the ingested catalog; the best-scored one is recommended.
    # By default (issue 27) they come from recall, and the model's call is the query text.
    from agent.ranking import load_served

    vocabulary = set(load_served(ingested_home).vocab.queries)
    assert out["query"] in vocabulary
    assert out["source"] in {"memory", "transition", "next-item", "popular"}
    assert {a["query"] for a in out["attempts"]} <= vocabulary
    assert all("model" not in a["sources"] for a in out["attempts"])
    assert out["texts"] and out["texts"][0]["kind"] == "write"
    assert out["texts"][0]["prompt_token_ids"] and out["texts"][0]["completion_token_ids"]
    assert out["refinements"] <= 1
    assert len(out["products"]) == 10 and out["products"][0]["rank"] == 1
    assert {"item_id", "title", "category", "brand", "score"} <= set(out["products"][0])


def test_recommend_cold_start_user(ingested_home: Path, tiny_model_dir: Path, capsys) -> None:
    code = main(
        [
            "recommend",
            "--user",
            "A1TINYUSER04",
            "--model",
            str(tiny_model_dir),
            "--home",
            str(ingested_home),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "New shopper" in text and "recommended query" in text


def _run_cli(*args: str, model: Path) -> subprocess.CompletedProcess[str]:
    # The model named: a checkout without the shipped writer would add its warning line
    # (every command imports graphs.query_agent, whose Studio graph resolves the default).
    env = {**os.environ, "QUERYAGENT_MODEL": str(model)}
    return subprocess.run(
        [sys.executable, "-m", "graphs.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_unknown_user_is_one_line_exit_2(ingested_home: Path, tiny_model_dir: Path) -> None:
    proc = _run_cli(
        "recommend", "--user", "NOBODY", "--home", str(ingested_home), model=tiny_model_dir
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown user 'NOBODY'" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_data_is_one_line_exit_2_and_stores_nothing(
    tmp_path: Path, tiny_recbole_dir: Path, tiny_model_dir: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_recbole_dir.iterdir():
        (bad / f.name).write_text(f.read_text())
    lines = (bad / "Tiny.test.inter").read_text().splitlines()
    lines[3] = "2\t6 8 x\t4"
    (bad / "Tiny.test.inter").write_text("\n".join(lines) + "\n")
    home = tmp_path / "home"
    proc = _run_cli("ingest", "--data", str(bad), "--home", str(home), model=tiny_model_dir)
    assert proc.returncode == 2
    assert "Tiny.test.inter:4" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert not (home / "chroma").exists() and not (home / "memory.sqlite").exists()

    missing = tmp_path / "missing"
    proc = _run_cli("ingest", "--data", str(missing), "--home", str(home), model=tiny_model_dir)
    assert proc.returncode == 2 and "missing" in proc.stderr


def test_recommend_on_a_home_without_fitted_models_is_one_line(
    tmp_path: Path, tiny_recbole_dir: Path, capsys
) -> None:
    """A home ingested before the ranking models existed (or whose models were removed)."""
    import shutil

    from agent.ranking import served_dir

    home = tmp_path / "home"
    assert main(["ingest", "--data", str(tiny_recbole_dir), "--home", str(home)]) == 0
    shutil.rmtree(served_dir(home))
    capsys.readouterr()
    code = main(["recommend", "--user", "A1TINYUSER01", "--home", str(home)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "run `queryagent ingest`" in err, err


def test_recommend_shows_the_intent_and_the_written_query(
    ingested_home: Path, tiny_model_dir: Path, capsys
) -> None:
    """The recommendation's intent (``query``, a catalog query) and the query text the shopper
    sees (``query_text``: the tiny LM's when its products fit, else the intent's own), with
    the products the shown text retrieves through the served search."""
    from agent.ranking import load_served
    from graphs.query_agent import served_search

    args = ["recommend", "--user", "A1TINYUSER01", "--model", str(tiny_model_dir)]
    args += ["--home", str(ingested_home), "--max-refinements", "0"]
    assert main([*args, "--json", "--write-query"]) == 0
    out = json.loads(capsys.readouterr().out)
    ranking = load_served(ingested_home)
    assert out["query"] in set(ranking.vocab.queries)  # the intent
    assert out["text_source"] in {"model", "intent"}
    # The model wrote (a grounded drafter that generates): its text is checked on its products.
    assert out["texts"] and out["texts"][0]["kind"] == "write"
    assert out["texts"][0]["completion_token_ids"] and out["intent_check"] is not None
    assert out["rewrites"] <= 1 and len(out["texts"]) == 1 + out["rewrites"]
    if out["text_source"] == "intent":
        assert out["query_text"] == out["query"]
        assert not any(t["check"] and t["check"]["fits"] for t in out["texts"])
    else:
        fitting = [t for t in out["texts"] if t["check"]["fits"]]
        assert out["query_text"] in [t["text"] for t in fitting]
    search = served_search(ChromaCatalog(home=ingested_home), ranking)
    shown = search.search(out["query_text"], k=10)
    assert [p["item_id"] for p in out["products"]] == [p.item_id for p in shown]

    assert main([*args, "--write-query"]) == 0
    text = capsys.readouterr().out
    # The model's kept text and its intent on two lines; an intent shown as it is on one.
    intent = out["query"]
    assert f"intent: '{intent}'" in text or f"recommended query: '{intent}'" in text

    # By default the model writes too (issue 27); --no-write-query: no model call for the
    # text, the intent is shown.
    assert main([*args, "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["query"] == out["query"] and default["texts"][0]["kind"] == "write"
    assert main([*args, "--json", "--no-write-query"]) == 0
    quiet = json.loads(capsys.readouterr().out)
    assert quiet["query"] == out["query"] and quiet["texts"] == []
    assert quiet["query_text"] == quiet["query"] and quiet["text_source"] == "intent"
