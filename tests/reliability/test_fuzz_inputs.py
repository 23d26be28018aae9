"""Issue 25, the fuzzed input layer: data folders (both formats), event files, CLI arguments.

Hypothesis generates inputs from valid ones by mutation (lines replaced by random text, fields
given wrong types, ids with ``.``/NUL/escape codes, BOMs, CRLF, duplicates, unknown ids, huge or
non-finite times). Every case must end in success or one clean line: a ``DataError`` /
``EventsError`` whose text is one line, or exit 2 with one line on stderr; never another
exception (a traceback for a user). After a refusal the store is byte-identical.

Each property runs ``CI_EXAMPLES`` examples in the default run and ``FUZZ_EXAMPLES`` in its
``fuzz``-marked twin (``pytest -m fuzz tests/reliability/test_fuzz_inputs.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphs.serving.events import EventsError, add_purchases, read_events
from memory_store import DataError, UserMemory, events_namespace, load_dataset, open_store
from tests.helpers.fakes import FakeCatalog

REPO = Path(__file__).resolve().parents[2]
TINY_JSONL = REPO / "tests" / "fixtures" / "tiny-jsonl"
TINY_RECBOLE = REPO / "tests" / "fixtures" / "tiny-recbole"
CI_EXAMPLES = 40
FUZZ_EXAMPLES = 1000

NASTY_TEXT = st.sampled_from(
    ["", " ", ".", "a.b", "a\x00b", "\x1b[2J\x1b[31mRED", "\ufeff", "\r", "\t", "é", "💥", "\\",
     '"', "{}", "[]", "null", "1e400", "NaN", "-1", "0", "B000TINY01", "A1TINYUSER01", "x" * 300]
)  # fmt: skip
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=40))
JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT,
    st.integers(min_value=10**300, max_value=10**400),
)  # fmt: skip
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=8,
)


def _settings(n: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,  # no example database written into the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def one_line(text: str) -> None:
    assert text and "\n" not in text.strip() and "Traceback" not in text, repr(text)


# --------------------------------------------------------------------------- mutations


@st.composite
def mutated_lines(draw: st.DrawFn, lines: list[str], record: bool) -> list[str]:
    """``lines`` with a few mutations: a line replaced, dropped, duplicated, a field changed."""
    lines = list(lines)
    for _ in range(draw(st.integers(0, 3))):
        if not lines:
            lines.append(draw(TEXT))
            continue
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["text", "drop", "dup", "field", "bytes", "crlf", "bom"]))
        if kind == "text":
            lines[i] = draw(TEXT)
        elif kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "field" and record:
            try:
                value = json.loads(lines[i])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and value:
                key = draw(st.sampled_from(sorted(value) + ["extra"]))
                value[key] = draw(JSON_VALUE)
                lines[i] = json.dumps(value)
        elif kind == "field":  # a tab-separated column changed
            cols = lines[i].split("\t")
            cols[draw(st.integers(0, len(cols) - 1))] = draw(TEXT)
            lines[i] = "\t".join(cols)
        elif kind == "bytes":
            lines[i] = draw(st.binary(max_size=30)).decode("latin-1")
        elif kind == "crlf":
            lines[i] += "\r"
        elif kind == "bom":
            lines[i] = "\ufeff" + lines[i]
    return lines


def write_lines(path: Path, lines: list[str], raw_bytes: bool = False) -> None:
    text = "".join(line + "\n" for line in lines)
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))


def check_loaded(folder: Path) -> None:
    """``load_dataset`` returns a consistent data set or raises one ``DataError`` line."""
    try:
        dataset = load_dataset(folder)
    except DataError as err:
        one_line(str(err))
        return
    for item_id, product in dataset.products.items():
        assert item_id.strip() and product.item_id == item_id
        for text in (product.title, product.category, product.brand):
            assert "\x1b" not in text and "\x00" not in text
    for user, items in dataset.sequences.items():
        assert user.strip() and "." not in user and "\x00" not in user
        assert all(item in dataset.products for item in items)
    assert all("\n" not in note for note in dataset.notes)


# --------------------------------------------------------------------------- data folders


def _jsonl_lines(name: str) -> list[str]:
    return (TINY_JSONL / name).read_text().splitlines()


@st.composite
def jsonl_folder(draw: st.DrawFn) -> dict[str, list[str]]:
    return {
        name: draw(mutated_lines(_jsonl_lines(name), record=True))
        for name in ("products.jsonl", "sequences.jsonl")
    }


@st.composite
def recbole_folder(draw: st.DrawFn) -> dict[str, list[str]]:
    files = {f.name: f.read_text().splitlines() for f in TINY_RECBOLE.iterdir()}
    files.pop("README.md", None)
    target = draw(st.sampled_from(sorted(files)))
    files[target] = draw(mutated_lines(files[target], record=False))
    if draw(st.booleans()):
        other = draw(st.sampled_from(sorted(files)))
        files[other] = draw(mutated_lines(files[other], record=False))
    return files


def _check_folder(files: dict[str, list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        for name, lines in files.items():
            write_lines(folder / name, lines)
        check_loaded(folder)


@_settings(CI_EXAMPLES)
@given(files=jsonl_folder())
def test_jsonl_folders_load_or_give_one_line(files: dict[str, list[str]]) -> None:
    _check_folder(files)


@pytest.mark.fuzz
@_settings(FUZZ_EXAMPLES)
@given(files=jsonl_folder())
def test_jsonl_folders_load_or_give_one_line_fuzz(files: dict[str, list[str]]) -> None:
    _check_folder(files)


@_settings(CI_EXAMPLES)
@given(files=recbole_folder())
def test_recbole_folders_load_or_give_one_line(files: dict[str, list[str]]) -> None:
    _check_folder(files)


@pytest.mark.fuzz
@_settings(FUZZ_EXAMPLES)
@given(files=recbole_folder())
def test_recbole_folders_load_or_give_one_line_fuzz(files: dict[str, list[str]]) -> None:
    _check_folder(files)


# --------------------------------------------------------------------------- event files


@pytest.fixture(scope="module")
def events_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store holding the tiny data set (copied afresh for each example)."""
    db = tmp_path_factory.mktemp("events-store") / "memory.sqlite"
    store = open_store(url=f"sqlite:///{db}")
    UserMemory(store).ingest_dataset(load_dataset(TINY_RECBOLE), progress=False)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
    store.conn.close()  # type: ignore[attr-defined]
    return db


ITEMS = [json.loads(line)["item_id"] for line in _jsonl_lines("products.jsonl")]
EVENT = st.fixed_dictionaries(
    {
        "user_id": st.one_of(st.sampled_from(["A1TINYUSER01", "NEW1"]), TEXT),
        "item_id": st.one_of(st.sampled_from(ITEMS), TEXT),
    },
    optional={"time": st.one_of(JSON_SCALAR, st.sampled_from(["2026-11-30T16:00:00Z", "soon"]))},
)
EVENT_LINE = st.one_of(
    EVENT.map(json.dumps), EVENT.map(json.dumps), JSON_VALUE.map(json.dumps), TEXT
)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith(".lock")
    }


def _check_events(store_file: Path, lines: list[str]) -> None:
    catalog = FakeCatalog(load_dataset(TINY_RECBOLE).products.values())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(store_file, folder / "memory.sqlite")
        events = folder / "events.jsonl"
        write_lines(events, lines)
        before = _digest(folder)
        store = open_store(url=f"sqlite:///{folder / 'memory.sqlite'}")
        try:
            try:
                parsed = read_events(events)
                n_before = {
                    line.user_id: UserMemory(store).n_events(line.user_id)
                    if UserMemory(store).known(line.user_id)
                    else 0
                    for _, line in parsed
                }
                add_purchases(store, catalog, parsed)
            except EventsError as err:
                one_line(str(err))
                store.conn.close()  # type: ignore[attr-defined]
                after = {
                    k: v for k, v in _digest(folder).items() if not k.endswith(("-wal", "-shm"))
                }
                assert after == {
                    k: v for k, v in before.items() if not k.endswith(("-wal", "-shm"))
                }
                _assert_unchanged_rows(store_file, folder / "memory.sqlite")
                return
            memory = UserMemory(store)
            added: dict[str, int] = {}
            for _, line in parsed:
                added[line.user_id] = added.get(line.user_id, 0) + 1
            for user, n in added.items():
                assert memory.n_events(user) == n_before[user] + n
                keys = sorted(i.key for i in store.search(events_namespace(user), limit=10_000))
                assert keys == [f"{s:08d}" for s in range(n_before[user] + n)]
        finally:
            try:
                store.conn.close()  # type: ignore[attr-defined]
            except sqlite3.Error:
                pass


def _assert_unchanged_rows(original: Path, copy: Path) -> None:
    """The store's rows after a refusal are the original's, row for row."""

    def rows(path: Path) -> list[tuple]:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute(
                "SELECT prefix, key, value, created_at, updated_at FROM store ORDER BY 1, 2"
            ).fetchall()

    assert rows(original) == rows(copy)


@_settings(CI_EXAMPLES)
@given(lines=st.lists(EVENT_LINE, min_size=0, max_size=6))
def test_event_files_record_or_give_one_line(events_store: Path, lines: list[str]) -> None:
    _check_events(events_store, lines)


@pytest.mark.fuzz
@_settings(FUZZ_EXAMPLES)
@given(lines=st.lists(EVENT_LINE, min_size=0, max_size=12))
def test_event_files_record_or_give_one_line_fuzz(events_store: Path, lines: list[str]) -> None:
    _check_events(events_store, lines)


# --------------------------------------------------------------------------- CLI arguments

NUMBER_TEXT = st.one_of(
    st.integers(-5, 5).map(str), st.sampled_from(["1e300", "inf", "-1e20", "nan", "", "x", "0x10",
                                                  "99999999999999999999999"]),
    TEXT,
)  # fmt: skip


@st.composite
def cli_argv(draw: st.DrawFn, home: str, missing: str) -> tuple[str, list[str]]:
    """A command line that ends before any slow work: the data folder and the home are empty
    or missing, so every check runs and nothing is ingested or served."""
    cli = draw(st.sampled_from(["queryagent", "queryagent-train"]))
    if cli == "queryagent":
        command = draw(st.sampled_from(["recommend", "precompute", "ingest", "bogus"]))
        argv = [command, "--home", home]
        if command == "recommend":
            argv += ["--user", draw(TEXT)]
        if command == "ingest":
            argv += ["--data", missing, "--no-model"]
        if command == "precompute":
            argv += ["--no-model", "--users", missing]
        flags = {
            "recommend": ["--max-refinements", "--seed", "--model"],
            "precompute": [
                "--since",
                "--batch-size",
                "--ray-actors",
                "--max-refinements",
                "--seed",
            ],
            "ingest": ["--model"],
            "bogus": ["--nope"],
        }[command]
    else:
        command = draw(st.sampled_from(["eval", "outcomes"]))
        if command == "eval":
            argv = ["eval", "--data", missing, "--home", home]
            flags = ["--batch-size", "--max-refinements", "--limit", "--shard-id", "--shard-num",
                     "--split", "--methods", "--seed", "--model"]  # fmt: skip
        else:
            argv = ["outcomes", "--from-trajectories", missing, "--home", home]
            flags = ["--out", "--replay-limit", "--replay-model", "--replay-max-refinements"]
    for flag in draw(st.lists(st.sampled_from(flags), max_size=3)):
        argv.append(f"{flag}={draw(NUMBER_TEXT)}")
    return cli, argv


def _check_cli(cli: str, argv: list[str], home: Path) -> None:
    from graphs.cli import main as queryagent
    from training.cli import main as queryagent_train

    main = queryagent if cli == "queryagent" else queryagent_train
    db = home / "memory.sqlite"
    before = db.read_bytes()
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code  # type: ignore[assignment]
    text = err.getvalue()
    assert code in (0, 2), (argv, code, text)
    if code == 2:
        one_line(text)
        assert db.read_bytes() == before, argv  # nothing written by a refused command


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose store holds the tiny data set (no catalog: commands stop before it)."""
    home = tmp_path_factory.mktemp("cli-home")
    store = open_store(home)
    UserMemory(store).ingest_dataset(load_dataset(TINY_RECBOLE), progress=False)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
    store.conn.close()  # type: ignore[attr-defined]
    return home


@_settings(CI_EXAMPLES)
@given(data=st.data())
def test_cli_arguments_succeed_or_give_one_line(cli_home: Path, data: st.DataObject) -> None:
    missing = str(cli_home.parent / "no-such-data")
    cli, argv = data.draw(cli_argv(str(cli_home), missing))
    _check_cli(cli, argv, cli_home)


@pytest.mark.fuzz
@_settings(FUZZ_EXAMPLES)
@given(data=st.data())
def test_cli_arguments_succeed_or_give_one_line_fuzz(cli_home: Path, data: st.DataObject) -> None:
    missing = str(cli_home.parent / "no-such-data")
    cli, argv = data.draw(cli_argv(str(cli_home), missing))
    _check_cli(cli, argv, cli_home)
