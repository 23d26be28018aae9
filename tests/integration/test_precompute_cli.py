"""``queryagent precompute`` and ``recommend --cached`` end to end: real Chroma, real MiniLM, the
tiny local causal LM, a SQLite home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphs.cli import main
from graphs.serving.results import RECOMMENDATIONS_NAMESPACE, get_recommendation
from memory_store import open_store

pytestmark = pytest.mark.integration


@pytest.fixture()
def home(tmp_path: Path, tiny_recbole_dir: Path) -> Path:
    home = tmp_path / "home"
    assert main(["ingest", "--data", str(tiny_recbole_dir), "--home", str(home)]) == 0
    return home


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_precompute_then_cached_serve(home: Path, tiny_model_dir: Path, tmp_path, capsys) -> None:
    users = tmp_path / "users.txt"
    users.write_text("A1TINYUSER01\nA1TINYUSER04\n")
    common = ["--home", str(home), "--model", str(tiny_model_dir), "--max-refinements", "0"]
    assert main(["precompute", "--users", str(users), *common]) == 0
    assert "precomputed 2 of 2 selected shoppers (0 up to date" in capsys.readouterr().out
    stored = get_recommendation(open_store(home), "A1TINYUSER01")
    assert stored is not None and stored["model"] == str(tiny_model_dir)
    from agent.model_identity import model_digest

    assert stored["model_digest"] == model_digest(str(tiny_model_dir))  # its files' digest
    assert stored["memory"] == {"n_events": 5, "revision": 0} and stored["catalog_version"]

    # a re-run: nothing to do
    assert main(["precompute", "--users", str(users), *common]) == 0
    assert "precomputed 0 of 2 selected shoppers (2 up to date" in capsys.readouterr().out
    # --since: every registry entry was written at ingest, before 2999 and after 2000
    assert main(["precompute", "--since", "2999-01-01T00:00:00", *common]) == 0
    assert "precomputed 0 of 0 selected" in capsys.readouterr().out
    assert main(["precompute", "--since", "2000-01-01", *common]) == 0
    assert "precomputed 5 of 7 selected shoppers (2 up to date" in capsys.readouterr().out

    rec = ["recommend", "--home", str(home), "--model", str(tiny_model_dir), "--cached"]
    assert main([*rec, "--user", "A1TINYUSER01", "--json"]) == 0
    cached = _json(capsys)
    assert cached["cached"] is True and cached["query"] == stored["query"]
    assert cached["age"].endswith("ago") and cached["memory_changed_since"] is False
    assert main([*rec, "--user", "A1TINYUSER01"]) == 0
    assert "cached: computed " in capsys.readouterr().out


def test_cached_on_a_shopper_never_computed_computes_and_stores(
    home: Path, tiny_model_dir: Path, capsys
) -> None:
    store = open_store(home)
    assert get_recommendation(store, "A1TINYUSER03") is None
    rec = ["recommend", "--home", str(home), "--model", str(tiny_model_dir), "--cached"]
    args = [*rec, "--user", "A1TINYUSER03", "--max-refinements", "0"]
    assert main([*args, "--json"]) == 0
    first = _json(capsys)
    assert first["cached"] is False and first["attempts"]  # a real run
    stored = get_recommendation(open_store(home), "A1TINYUSER03")
    assert stored is not None and stored["query"] == first["query"]
    assert main([*args, "--json"]) == 0
    second = _json(capsys)
    assert second["cached"] is True and second["query"] == first["query"]
    assert len(open_store(home).search(RECOMMENDATIONS_NAMESPACE, limit=10)) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday': not a time"),
        (["--engine", "spark"], "--engine must be one of local, ray"),
        (["--users", "/nonexistent/users.txt"], "cannot read"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_precompute_requests_are_one_line_exit_2(
    home: Path, flags: list[str], message: str, capsys
) -> None:
    assert main(["precompute", "--home", str(home), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_listed_shopper_is_one_line(home: Path, tmp_path: Path, capsys) -> None:
    users = tmp_path / "users.txt"
    users.write_text("A1TINYUSER01\nNOBODY\n")
    assert main(["precompute", "--home", str(home), "--users", str(users)]) == 2
    assert "unknown shopper(s) 'NOBODY'" in capsys.readouterr().err
    assert open_store(home).search(RECOMMENDATIONS_NAMESPACE, limit=10) == []  # nothing written
