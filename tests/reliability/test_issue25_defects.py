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
REPO = Path(__file__).resolve().parents[2]


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
    from graphs.cli.recommend import _print_text

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


# --------------------------------------------------------------- 4: unbounded category paths


def test_an_absurd_category_is_cut_at_load_with_a_note(tmp_path: Path) -> None:
    from memory_store.datasets import DEFAULT_MAX_CATEGORY_CHARS

    huge = " ".join(f"word{i}" for i in range(10_000))
    data = write_jsonl(
        tmp_path / "data",
        [{"item_id": "A", "title": "Tape", "category": huge}, {"item_id": "B", "title": "Glue"}],
        [{"user_id": "U1", "items": ["A", "B", "A"]}],
    )
    dataset = load_dataset(data)
    category = dataset.products["A"].category
    assert 0 < len(category) <= DEFAULT_MAX_CATEGORY_CHARS and huge.startswith(category)
    assert not category.endswith(" ") and category.split()[-1].startswith("word")
    assert len(dataset.notes) == 1 and "\n" not in dataset.notes[0]
    assert "products.jsonl:1" in dataset.notes[0] and "cut to" in dataset.notes[0]


def test_prompts_are_bounded_whatever_the_memory_holds() -> None:
    from agent.prompts import MEMORY_BYTES, MEMORY_LINE_BYTES, draft_messages, grounded_messages
    from memory_store import BehaviorEvent, build_profile

    huge = " ".join(f"level{i}" for i in range(10_000))  # stored before the load-time cut
    events = [
        BehaviorEvent(user_id="U", seq=i, item_id=f"I{i}", title="t" * 5000, category=huge)
        for i in range(40)
    ]
    profile = build_profile("U", events)
    assert len(profile.to_text()) > 10 * MEMORY_BYTES  # the unbounded rendering
    for messages in (draft_messages(profile), grounded_messages(profile)):
        memory = messages[-1]["content"]
        assert len(memory.encode()) <= MEMORY_BYTES
        assert all(len(line.encode()) <= MEMORY_LINE_BYTES for line in memory.splitlines())
    cold = build_profile("C", [])
    memory = draft_messages(cold, [huge] * 5)[-1]["content"]
    assert len(memory.encode()) <= MEMORY_BYTES


# --------------------------------------------------------------- 5: Ctrl-C: test_interrupt.py


# --------------------------------------------------------------- 6: the low ones


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "--data", "x", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
        (["eval", "--data", "x", "--batch-size", "-1"], "--batch-size: must be >= 1, got -1"),
        (["eval", "--data", "x", "--max-refinements", "-1"], "--max-refinements: must be >= 0"),
        (["eval", "--data", "x", "--model", ""], "empty model name"),
    ],
)
def test_train_cli_bad_numbers_are_one_line_before_any_work(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and needle in err, err


@pytest.mark.parametrize("since", ["1e300", "inf", "-1e20", "nan"])
def test_precompute_since_out_of_range_is_one_line(
    since: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from graphs.cli import main

    code = main(["precompute", f"--since={since}", "--home", str(tmp_path / "h"), "--no-model"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--since" in err, err


@pytest.mark.parametrize("argv", [["recommend", "--user", "U", "--model", ""],
                                  ["ingest", "--model", " "],
                                  ["precompute", "--batch-size", "0"]])  # fmt: skip
def test_queryagent_bad_arguments_are_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from graphs.cli import main

    # argparse refuses some arguments (SystemExit(2)); the command refuses others by
    # returning 2. Either way the user sees one line and exit status 2.
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "error:" in err, err


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, -1e20, 10**400, "1e400"])
def test_event_times_out_of_range_are_refused(value: object) -> None:
    from graphs.serving.events import EventsError, parse_time

    with pytest.raises(EventsError, match="time"):
        parse_time(value, "f.jsonl:1")  # type: ignore[arg-type]
    assert parse_time(1.7e9, "f.jsonl:1") == 1.7e9
    assert parse_time("2026-11-30T16:00:00Z", "f.jsonl:1") == 1796054400.0


def test_events_file_with_nan_writes_nothing(tmp_path: Path, tiny_dataset) -> None:
    from graphs.serving.events import EventsError, add_purchases, read_events
    from tests.helpers.fakes import FakeCatalog

    item = sorted(tiny_dataset.products)[0]
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\ufeff" + json.dumps({"user_id": "U1", "item_id": item, "time": 1.7e9}) + "\n"
        + f'{{"user_id": "U1", "item_id": "{item}", "time": NaN}}\n'
    )  # fmt: skip
    db = tmp_path / "memory.sqlite"
    store = open_store(url=f"sqlite:///{db}")
    lines = read_events(events)  # the BOM is not part of line 1
    with pytest.raises(EventsError, match="events.jsonl:2"):
        add_purchases(store, FakeCatalog(tiny_dataset.products.values()), lines)
    assert not UserMemory(store).known("U1")


def test_outcomes_never_overwrites_its_input_nor_creates_a_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"waiting": "for a purchase"}\n')
    before = runs.read_bytes()
    code = main(["outcomes", "--from-trajectories", str(runs), "--out", str(runs)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--from-trajectories file" in err, err
    assert runs.read_bytes() == before
    new_home = tmp_path / "no-such-home"
    code = main(["outcomes", "--from-trajectories", str(runs), "--out",
                 str(tmp_path / "joined.jsonl"), "--home", str(new_home)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "no such folder" in err and not new_home.exists(), err


def test_home_files_are_made_private_after_a_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import stat

    from graphs.cli import main

    home = tmp_path / "home"
    for sub in ("ranking/served", "chroma/1234", "hf-hub/models--x"):
        (home / sub).mkdir(parents=True)
        (home / sub).chmod(0o777)
        (home / sub / "data.bin").write_bytes(b"x")
        (home / sub / "data.bin").chmod(0o666)
    home.chmod(0o755)  # a folder the user made: its own mode is theirs to choose
    main(["precompute", "--since", "not a time", "--home", str(home), "--no-model"])
    capsys.readouterr()
    for path in home.rglob("*"):
        assert stat.S_IMODE(os.lstat(path).st_mode) & 0o077 == 0, path
    assert stat.S_IMODE(home.stat().st_mode) == 0o755


def test_store_url_at_chromas_database_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from memory_store import StoreError

    chroma = tmp_path / "chroma.sqlite3"
    with sqlite3.connect(chroma) as conn:
        conn.execute("CREATE TABLE collections (id TEXT)")
        conn.execute("CREATE TABLE embeddings (id INTEGER)")
    conn.close()
    before = chroma.read_bytes()
    with pytest.raises(StoreError, match="another program's database"):
        open_store(url=f"sqlite:///{chroma}")
    assert chroma.read_bytes() == before
    assert not (tmp_path / "chroma.sqlite3-wal").exists()


def test_empty_data_into_a_full_home_is_refused(
    tmp_path: Path, tiny_dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    from graphs.cli import main
    from graphs.validators import check_replacing

    home = tmp_path / "home"
    store = open_store(home)
    ingest(tiny_dataset, store, progress=False)
    store.conn.close()  # type: ignore[attr-defined]
    db = home / "memory.sqlite"
    before = db.read_bytes()
    empty = write_jsonl(tmp_path / "empty", [], [])
    code = main(["ingest", "--data", str(empty), "--home", str(home), "--no-model"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "add --replace" in err, err
    assert db.read_bytes() == before
    check_replacing(load_dataset(empty), home, replace=True)  # asked for: allowed
    check_replacing(load_dataset(empty), tmp_path / "new-home", replace=False)  # nothing to lose


def test_bom_and_escape_codes_in_a_data_folder(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "data",
        [{"item_id": "A", "title": "Tape", "category": f"Tape {ESCAPES} Duct"},
         {"item_id": "B", "title": "Glue"}],
        [{"user_id": "U1", "items": ["A", "B", "A"]}],
    )  # fmt: skip
    for name in ("products.jsonl", "sequences.jsonl"):
        (data / name).write_bytes(b"\xef\xbb\xbf" + (data / name).read_bytes())
    dataset = load_dataset(data)
    category = dataset.products["A"].category
    assert category == "Tape RED Duct" and "31m" not in category
    assert len(dataset.notes) == 1 and "control characters" in dataset.notes[0]


# --------------------------------------------------------------- helpers


def write_jsonl(folder: Path, products: list[dict], sequences: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "products.jsonl").write_text("".join(json.dumps(p) + "\n" for p in products))
    (folder / "sequences.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sequences))
    return folder
