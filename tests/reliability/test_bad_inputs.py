"""Issue 11, probe 4: one line and exit 2, never a traceback, for every bad input a user can give:
``--model`` at a missing folder, at ``../../x``, at a folder of garbage; a read-only home; a store
URL naming no database. Nothing is written. And Ctrl-C: one line and exit 130."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.test_ingest_reliability import (
    QUIET_MODEL_ENV,
    REPO,
    assert_one_line,
    run_cli,
)

USER = "A1TINYUSER01"


@pytest.fixture()
def garbage_folders(tmp_path: Path) -> dict[str, Path]:
    noise = tmp_path / "noise"  # random bytes, no config
    noise.mkdir()
    (noise / "model.safetensors").write_bytes(os.urandom(4096))
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_bytes(os.urandom(256))
    unknown = tmp_path / "unknown-architecture"  # passes the folder check, fails to load
    unknown.mkdir()
    (unknown / "config.json").write_text('{"model_type": "no-such-architecture"}')
    broken = tmp_path / "broken-weights"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(os.urandom(4096))
    return {"noise": noise, "bad-json": bad_json, "unknown": unknown, "broken": broken}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("/no/such/folder", "no such folder"),
        ("../../x", "no such folder"),
        ("noise", "holds no model"),
        ("bad-json", "config.json is not a JSON object"),
        ("unknown", "cannot load"),
        ("broken", "cannot load"),
    ],
)
def test_recommend_with_a_bad_model_is_one_line(
    ingested_home: Path,
    garbage_folders: dict[str, Path],
    model: str,
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from graphs.cli import main

    # In-process (an exception escaping main fails the test as a traceback would), so the six
    # cases share one MiniLM and Chroma; the subprocess path is covered below.
    value = str(garbage_folders[model]) if model in garbage_folders else model
    code = main(["recommend", "--user", USER, "--home", str(ingested_home), "--model", value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_train_cli_with_a_bad_model_is_one_line(
    tmp_path: Path, tiny_recbole_dir: Path, garbage_folders: dict[str, Path]
) -> None:
    for args in (
        ["eval", "--data", str(tiny_recbole_dir), "--methods", "llm-direct@../../x"],
        ["eval", "--data", str(tiny_recbole_dir), "--model", str(garbage_folders["noise"])],
        ["sft", "--data", str(tiny_recbole_dir), "--model", "/no/such/folder"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "training.cli", *args, "--out", str(tmp_path / "out.json")],
            capture_output=True, text=True, timeout=300, cwd=REPO,
            env={**QUIET_MODEL_ENV, **os.environ},
        )  # fmt: skip
        assert_one_line(proc, "model")
        assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.cache").exists()


def test_store_url_that_names_no_database_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(
        "recommend", "--user", USER, "--home", str(tmp_path / "home"),
        env={"QUERYAGENT_STORE_URL": "sqlite:////proc/nope/x.db"},
    )  # fmt: skip
    assert_one_line(proc, "cannot open the memory store", "/proc/nope/x.db")

    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("my notes\n" * 100)
    before = not_a_database.read_bytes()
    proc = run_cli(
        "recommend", "--user", USER, "--home", str(tmp_path / "home"),
        env={"QUERYAGENT_STORE_URL": f"sqlite:///{not_a_database}"},
    )  # fmt: skip
    assert_one_line(proc, "file is not a database")
    assert not_a_database.read_bytes() == before


@pytest.fixture()
def read_only_home(ingested_home: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of an ingested home that this process cannot write.

    As an ordinary user the folder is made 0555; root writes through modes, so as root the copy
    is bind-mounted read-only (skipped where mounting is not allowed)."""
    home = tmp_path / "ro-home"
    shutil.copytree(ingested_home, home)
    if os.geteuid() != 0:
        for path in [home, *home.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        yield home
        for path in [home, *home.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return
    mount = subprocess.run(["mount", "--bind", str(home), str(home)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"running as root and cannot bind-mount read-only: {mount.stderr!r}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(home)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr}")
        yield home
    finally:
        subprocess.run(["umount", str(home)], check=True)


@pytest.mark.integration
def test_read_only_home_is_one_line(read_only_home: Path) -> None:
    with pytest.raises(OSError):
        (read_only_home / "probe").write_text("x")  # the fixture really is read-only
    proc = run_cli("recommend", "--user", USER, "--home", str(read_only_home))
    assert_one_line(proc, str(read_only_home))
    ingest = run_cli(
        "ingest", "--data", str(REPO / "tests" / "fixtures" / "tiny-jsonl"),
        "--home", str(read_only_home / "sub"),
    )  # fmt: skip
    assert_one_line(ingest, "cannot create the folder")


def _interrupt(*args: object, **kwargs: object) -> int:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("cli", "patched", "argv", "needle"),
    [
        ("graphs.cli.ingest", "run", ["ingest"], "run `queryagent ingest` again"),
        ("graphs.cli.recommend", "run", ["recommend", "--user", USER], "queryagent: interrupted"),
        ("training.cli", "_eval", ["eval", "--data", "x"], "the same command resumes"),
        ("training.grpo", "main", ["grpo"], "add --resume to continue"),
        ("training.sft", "main", ["sft"], "add --resume to continue"),
    ],
)
def test_ctrl_c_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli: str,
    patched: str,
    argv: list[str],
    needle: str,
) -> None:
    """Ctrl-C during a command: one line saying what is kept and how to go on, exit 130 (128 +
    SIGINT), no traceback. The command's body raises the interrupt as Python does on SIGINT."""
    import importlib

    monkeypatch.setattr(importlib.import_module(cli), patched, _interrupt)
    main = importlib.import_module(cli.split(".")[0] + ".cli").main  # graphs.cli, training.cli
    try:
        code = main(argv)
    except KeyboardInterrupt:  # escaping, it would stop the whole pytest run
        pytest.fail("the interrupt escaped main (a traceback for the user)")
    assert code == 130
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
