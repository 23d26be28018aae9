"""Issue 25: each defect the probes found, reproduced; every test here failed on the old code.

Defect 1 (events lost across processes) is ``test_concurrent_processes.py``; the fuzzed input
layer is ``test_fuzz_inputs.py``, the kills on a schedule ``test_faults.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from graphs.offline.ingest import ingest
from memory_store import (
    ModelsOutOfDateError,
    UserMemory,
    load_dataset,
    open_store,
)

ESCAPES = "\x1b[2J\x1b[31mRED\x1b]0;pwned\x07"


# --------------------------------------------------------------- 2: a kill during the fit is seen


def test_ingest_stopped_during_the_fit_refuses_every_shopper(
    tmp_path: Path, tiny_recbole_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A re-ingest killed while fitting: the memory is written, the models are the old data's.
    The completion mark covers the fit, so ``recommend`` says what to rerun (one line, exit 2)
    instead of serving the previous catalog's models; a finished ingest clears it."""
    from graphs.cli import main

    dataset = load_dataset(tiny_recbole_dir)
    home = tmp_path / "home"
    store = open_store(home)
    fitted: list[int] = []
    ingest(dataset, store, progress=False, fit=lambda d, c: (fitted.append(1), False))

    def killed(dataset: object, catalog: object) -> tuple[object, bool]:
        raise KeyboardInterrupt  # where SIGKILL lands: after the memory, before the models

    with pytest.raises(KeyboardInterrupt):
        ingest(dataset, store, progress=False, fit=killed)
    store.conn.close()  # type: ignore[attr-defined]

    user = next(u for u in dataset.users if dataset.sequences[u])
    code = main(["recommend", "--user", user, "--home", str(home)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "the catalog's models are out of date; run `queryagent ingest`" in err
    memory = UserMemory(open_store(home))
    with pytest.raises(ModelsOutOfDateError):
        memory.profile(user)

    ingest(dataset, memory.store, progress=False, fit=lambda d, c: (fitted.append(1), True))
    memory.check_ingested(user)  # the rerun converges: served again
    assert memory.profile(user).n_events == len(dataset.sequences[user])
    assert memory.ingest_state() == {
        "generation": 3,
        "data": dataset.name,
        "users": len(dataset.users),
        "complete": True,
    }


# --------------------------------------------------------------- 3: escape codes in text output


def test_text_output_neutralizes_terminal_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    from graphs.cli import _print_text

    result = {
        "user_id": f"U{ESCAPES}",
        "query": "duct tape",
        "fit": 0.5,
        "refinements": 0,
        "source": "model",
        "latency_s": 0.1,
        "products": [
            {"rank": 1, "title": f"Tape {ESCAPES}", "brand": f"B{ESCAPES}", "score": 0.9},
        ],
    }
    _print_text(result, SimpleNamespace(latent_identity=f"Buys mostly {ESCAPES}\nforged line"))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J\\x1b[31mRED" in out  # visible, as the data holds it
    assert len(out.splitlines()) == 3  # no forged line


def test_error_lines_neutralize_escapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from graphs.cli import main

    folder = tmp_path / f"data{ESCAPES}"
    code = main(["ingest", "--data", str(folder), "--home", str(tmp_path / "h"), "--no-model"])
    err = capsys.readouterr().err
    assert code == 2 and "\x1b" not in err and err.count("\n") == 1, err


# --------------------------------------------------------------- helpers


def write_jsonl(folder: Path, products: list[dict], sequences: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "products.jsonl").write_text("".join(json.dumps(p) + "\n" for p in products))
    (folder / "sequences.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sequences))
    return folder
