"""A bad ``$QUERYAGENT_MODEL`` must not break every command with a traceback at import time.

Every ``queryagent`` command imports ``graphs.query_agent`` (its module-level Studio graph builds
the default drafter, which resolves the model named by the environment). Before the fix a model
folder that does not exist raised ``DrafterError`` while the module was imported, so even
``events add`` printed a traceback and exited 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["events", "add", "--user", "U", "--item", "I"], ["--help"]])
def test_bad_model_variable_is_one_line_not_a_traceback(tmp_path: Path, argv: list[str]) -> None:
    env = {
        **os.environ,
        "QUERYAGENT_MODEL": str(tmp_path / "no-such-model"),
        "QUERYAGENT_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        [sys.executable, "-m", "graphs.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert "Traceback" not in run.stderr, run.stderr
    if argv == ["--help"]:
        assert run.returncode == 0 and "queryagent" in run.stdout
    else:
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("queryagent: error:")


def test_studio_graph_reports_the_bad_model_when_it_runs(tmp_path: Path) -> None:
    code = (
        "import graphs.query_agent as q\n"
        "from agent.drafting import DrafterError\n"
        "try:\n"
        "    q.graph.builder  # the module imported: the graph exists\n"
        "    q._studio_deps().drafter.draft\n"
        "except DrafterError as exc:\n"
        "    print('deferred:', exc)\n"
    )
    env = {**os.environ, "QUERYAGENT_MODEL": str(tmp_path / "nope"), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "deferred:" in run.stdout and "no model folder" in run.stdout
