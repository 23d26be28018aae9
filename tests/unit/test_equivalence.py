"""bench/equivalence.py: the before/after comparison reads both versions' output shapes."""

from __future__ import annotations

import json
from pathlib import Path

from bench.equivalence import main, summarize

OLD = {  # before the check's score was named ``fit``
    "query": "q1",
    "consistency": 0.25,
    "source": "memory",
    "refinements": 0,
    "attempts": [{"query": "q1", "consistency": {"score": 0.25, "feedback": ""}}],
    "products": [{"item_id": "B1"}],
}
NEW = {
    "query": "q1",
    "fit": 0.25,
    "source": "memory",
    "refinements": 0,
    "attempts": [{"query": "q1", "check": {"fit": 0.25, "feedback": ""}}],
    "products": [{"item_id": "B1"}],
}


def _write(path: Path, outputs: dict[str, dict]) -> Path:
    results = {k: summarize(o) for k, o in outputs.items()}
    path.write_text(json.dumps({"results": results}))
    return path


def test_old_and_new_names_compare_equal(tmp_path: Path, capsys) -> None:
    assert summarize(OLD) == summarize(NEW)
    a = _write(tmp_path / "a.json", {"U1@3": OLD})
    b = _write(tmp_path / "b.json", {"U1@3": NEW})
    assert main(["compare", str(a), str(b)]) == 0
    assert (
        "1 shoppers: 1 same final query, 1 same attempt queries, 1 same fit scores; 0 differ"
        in (capsys.readouterr().out)
    )
    c = _write(tmp_path / "c.json", {"U1@3": {**NEW, "fit": 0.5}})
    assert main(["compare", str(a), str(c)]) == 1
