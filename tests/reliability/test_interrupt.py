"""Issue 25, defect 5: Ctrl-C during ``queryagent-train eval --methods agent``.

What aborted (reproduced on the bundled data with the shipped adapter, at 17dbbb9): the first
SIGINT lands while the main thread waits in ``graph.batch``; the thread pool then waits for the
chunk's running graphs (minutes on the bundled data). A second Ctrl-C ends that wait, the command
prints its line and returns 130, and Python's shutdown joins the pool's threads again; a third one
ends that join too, and the interpreter finalizes while the drafter's batching thread is inside a
torch forward pass: ``pthread_exit`` unwinds through a C++ ``noexcept`` frame, "terminate called
without an active exception", exit 134. A single SIGINT gave one line and 130 in every phase
tried (Chroma upsert, catalog fit, model weight, model load, drafting).

Here the same thread kinds on the tiny fixture: the real ``MicroBatchingDrafter`` daemon thread
does seconds of native torch work before each batch (what the real model's forward pass costs on
a CPU), the graphs run in LangGraph's thread pool, and the test presses Ctrl-C three times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The command as its own process (``training.cli`` from PYTHONPATH, so the old code can be run
# against this test), each drafter batch preceded by native torch work on the batching thread.
CHILD = """
import os, pathlib, sys, time, torch
from agent.drafting import batching
real = batching.MicroBatchingDrafter._serve
def serve(self, options, requests):
    pathlib.Path(os.environ["INTERRUPT_MARK"]).touch()  # in torch from now on: press Ctrl-C
    a, end = torch.ones(1000, 1000), time.monotonic() + 15
    while time.monotonic() < end:  # long enough that the Ctrl-Cs land inside, on any machine
        a = (a @ a).clamp_(max=1.0)  # the GIL is released inside each op, as in a forward pass
    real(self, options, requests)
batching.MicroBatchingDrafter._serve = serve
from training.cli import main
sys.argv = ["queryagent-train", *sys.argv[1:]]
sys.exit(main())
"""

LINE = (
    "queryagent-train: interrupted; the shoppers done so far are cached: the same command resumes"
)


@pytest.mark.slow
@pytest.mark.integration
def test_repeated_ctrl_c_during_eval_agent_is_one_line_130_and_the_cache_stays_whole(
    tmp_path: Path, tiny_recbole_dir: Path, tiny_model_dir: Path
) -> None:
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or str(REPO))
    env["QUERYAGENT_HOME"] = str(tmp_path / "home")
    mark = tmp_path / "in-torch"
    env["INTERRUPT_MARK"] = str(mark)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "eval",
         "--data", str(tiny_recbole_dir), "--methods", f"agent@{tiny_model_dir}",
         "--out", str(out), "--batch-size", "4", "--home", str(tmp_path / "home")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: __import__("resource").setrlimit(
            __import__("resource").RLIMIT_CORE, (0, 0)),
    )  # fmt: skip
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    err = b""
    deadline = time.monotonic() + 240
    # Until the batching thread is inside its torch work (the graphs wait on it).
    while not mark.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        err += proc.stderr.read() or b""
    assert proc.poll() is None and mark.exists(), err.decode(errors="replace")[-2000:]
    time.sleep(0.5)
    for _ in range(3):  # Ctrl-C, and again while the command waits for its running graphs
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
    _, rest = proc.communicate(timeout=120)
    text = (err + rest).decode(errors="replace")
    assert proc.returncode == 130, (proc.returncode, text[-3000:])
    assert "terminate called" not in text and "Traceback" not in text, text[-3000:]
    assert text.count("queryagent-train:") == 1 and LINE + "\n" in text, text[-3000:]
    for cache in out.with_suffix(".cache").glob("*.jsonl"):
        for row in cache.read_text().splitlines():
            json.loads(row)  # whole lines only
