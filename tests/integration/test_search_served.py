"""The store's search behind every caller: ``queryagent ingest --search``, ``recommend``,
``events add`` and ``queryagent-train eval`` on real Chroma with the real MiniLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.catalog import ChromaCatalog
from agent.ranking import load_served
from agent.search import FusedSearch, search_dir, search_of
from graphs.cli import main

pytestmark = pytest.mark.integration

USER = "A1TINYUSER01"


def _recommend(home: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    argv = ["recommend", "--user", USER, "--json", "--model", str(model), "--home", str(home)]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_ingest_serves_the_fused_search_by_default(
    ingested_home: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = load_served(ingested_home)
    assert models.meta["search"] == "fused"
    catalog = ChromaCatalog(home=ingested_home)
    search = search_of(models.meta, models.folder, catalog)
    assert isinstance(search, FusedSearch) and FusedSearch.exists(search_dir(ingested_home))
    out = _recommend(ingested_home, tiny_model_dir, capsys)
    shown = [p["item_id"] for p in out["products"]]
    # What recommend shows is the fused search's page for the query it shows (``query_text``:
    # the model's text, or the intent)...
    assert shown == [p.item_id for p in search.search(out["query_text"], k=len(shown))]
    # ... which is not the dense search's page for it on this catalog (else this test could not
    # tell them apart).
    dense = [p.item_id for p in catalog.search(out["query_text"], k=len(shown))]
    assert shown != dense


def test_ingest_search_dense_keeps_the_earlier_search(
    tmp_path: Path, tiny_recbole_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    argv = ["ingest", "--data", str(tiny_recbole_dir), "--home", str(home), "--no-model"]
    assert main([*argv, "--search", "dense"]) == 0
    assert "dense search" in capsys.readouterr().out
    assert load_served(home).meta["search"] == "dense"
    assert not FusedSearch.exists(search_dir(home))
    out = _recommend(home, tiny_model_dir, capsys)
    shown = [p["item_id"] for p in out["products"]]
    dense = ChromaCatalog(home=home).search(out["query_text"], k=len(shown))
    assert shown == [p.item_id for p in dense]
    # Switching back refits the ranking models on the fused search's results.
    assert main([*argv, "--search", "fused"]) == 0
    assert "ranking models fitted" in capsys.readouterr().out
    assert load_served(home).meta["search"] == "fused"


def test_ingest_refuses_an_unknown_search_in_one_line(
    tmp_path: Path, tiny_recbole_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ingest", "--data", str(tiny_recbole_dir), "--home", str(tmp_path / "h")]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--search", "bm25"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'bm25'" in err
    assert not (tmp_path / "h").exists()


def test_events_add_counts_into_the_fused_search_prior(
    ingested_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    shutil.copytree(ingested_home, home)
    folder = search_dir(home)
    before = json.loads((folder / "popularity.json").read_text())
    item = sorted(before)[0]
    argv = ["events", "add", "--user", "NEWSHOPPER", "--item", item, "--home", str(home)]
    assert main(argv) == 0 and main(argv) == 0
    after = json.loads((folder / "popularity.json").read_text())
    assert after[item] == before[item] + 2
    assert {k: v for k, v in after.items() if k != item} == {
        k: v for k, v in before.items() if k != item
    }
    meta = json.loads((folder / "search.meta.json").read_text())
    assert meta["purchases"] == sum(after.values())


def test_eval_oracle_query_row_is_the_search_given_the_right_query(
    tmp_path: Path, tiny_recbole_dir: Path
) -> None:
    from training.cli import main as train_main

    out = tmp_path / "report.json"
    argv = ["eval", "--data", str(tiny_recbole_dir), "--methods", "oracle-query,last-category"]
    assert train_main([*argv, "--out", str(out), "--home", str(tmp_path / "home")]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["search"] == "fused"
    oracle = report["methods"]["oracle-query"]["metrics"]
    assert oracle["q_em"]["mean"] == 1.0
    assert oracle["i_hit@10_right"]["mean"] == oracle["i_hit@10"]["mean"]
    last = report["methods"]["last-category"]["metrics"]
    # Cons@10 / Q_EM: I_Hit@10 among the shoppers whose query was right.
    if last["q_em"]["mean"] > 0:
        ratio = last["cons@10"]["mean"] / last["q_em"]["mean"]
        assert last["i_hit@10_right"]["mean"] == pytest.approx(ratio)
    # The evaluation's search was fitted on the sequences cut before the test targets.
    (fitted,) = (tmp_path / "home" / "search").iterdir()
    assert json.loads((fitted / "search.meta.json").read_text())["kind"] == "fused"
