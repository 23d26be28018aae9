"""Issue 25, faults on a schedule, the serving and evaluation jobs: ``precompute`` and ``eval``.

The same harness as ``test_faults.py`` (``tests.reliability.workers killed N ...``: SIGKILL just
before the ``N``-th write point, ``N`` drawn by a seed from an uninterrupted run's count):

- ``queryagent precompute --no-model`` over a home ingested once for this module (real Chroma,
  the tiny set; ``--batch-size 2`` so the 7 shoppers are stored in 4 chunks): after the kill
  every shopper's stored recommendation is either absent (``precompute`` selects it again) or
  equal to an uninterrupted run's, and ``recommend --cached`` serves it as current; rerunning
  precompute computes exactly the absent ones and converges to the uninterrupted run's stored
  results (their digest, less ``computed_at``).
- ``queryagent-train eval --methods popular,markov,ranker`` (model-free) on the tiny set: after
  the kill every cache line is whole and the loader reads it; a rerun of the same command
  reports the uninterrupted run's per-method figures (less the timings). A row cut short the way
  the kernel cuts a write when a fatal signal arrives (a short ``write``) is also survived.

``SEEDS`` run by default; ``-m fuzz`` adds ``FUZZ_SEEDS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graphs.cli import main
from graphs.serving.results import RECOMMENDATIONS_NAMESPACE
from memory_store import load_dataset, open_store
from tests.reliability.test_faults import killed
from tests.reliability.workers import TINY
from training.evaluation.cache import OutcomeCache
from training.evaluation.metrics import UserOutcome
from training.evaluation.specs import MethodSpec

REPO = Path(__file__).resolve().parents[2]
SEEDS = [0, 1]
FUZZ_SEEDS = list(range(10, 16))
PRECOMPUTE = ("precompute", "--no-model", "--batch-size", "2")
EVAL_METHODS = "popular,markov,ranker"
TIMINGS = {"wall_s", "latency_s"}  # what differs between two identical runs


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set ingested once for the module by ``queryagent ingest`` (Chroma, fitted models),
    in its own process so no client of this one holds the home's files open when it is copied.
    ``--no-model``: the jobs below run without a language model, so none is loaded to learn its
    weight (a third of the time)."""
    tmp = tmp_path_factory.mktemp("faults-jobs-home")
    home = tmp / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.cli", "ingest", "--no-model", "--data", str(TINY),
         "--home", str(home)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "QUERYAGENT_HOME": str(tmp / "unused")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home


# --------------------------------------------------------------------------- precompute


def stored_results(home: Path) -> dict[str, dict]:
    """Every stored recommendation (shopper id -> value), less when it was computed."""
    store = open_store(home)
    items = store.search(RECOMMENDATIONS_NAMESPACE, limit=1000)
    results = {
        item.key: {k: v for k, v in item.value.items() if k != "computed_at"} for item in items
    }
    store.conn.close()  # type: ignore[attr-defined]
    return results


def results_digest(results: dict[str, dict]) -> str:
    return hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()


def precompute(n: int, tmp: Path, home: Path) -> tuple[int, int | None]:
    return killed(n, tmp, "queryagent", *PRECOMPUTE, "--home", str(home))


@pytest.fixture(scope="module")
def precompute_baseline(ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("faults-precompute")
    clean = tmp / "clean-home"
    shutil.copytree(ingested, clean)
    _, points = precompute(0, tmp, clean)
    results = stored_results(clean)
    users = load_dataset(TINY).users
    assert sorted(results) == sorted(users)  # the baseline computed every shopper
    return {"points": points, "results": results, "digest": results_digest(results), "tmp": tmp}


def _precompute_fault(
    ingested: Path, b: dict, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    n = random.Random(seed).randint(1, b["points"])
    home = b["tmp"] / f"home-{seed}"
    shutil.copytree(ingested, home)
    code, _ = precompute(n, b["tmp"], home)
    assert code == -9, f"seed {seed}: precompute was not killed at point {n}"

    after = stored_results(home)
    for user, value in after.items():  # what is stored is whole and what a full run stores
        assert value == b["results"][user], f"seed {seed} (point {n}): {user}"
    capsys.readouterr()
    for user in after:  # ...and `recommend --cached` serves it as current (no model needed)
        rec = ["recommend", "--home", str(home), "--user", user, "--cached", "--json"]
        assert main(rec) == 0
        served = json.loads(capsys.readouterr().out)
        assert served["cached"] is True and served["memory_changed_since"] is False
        assert served["query"] == b["results"][user]["query"]
        assert served["products"] == b["results"][user]["products"]

    # the rerun computes exactly the shoppers left without a result, and converges
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.cli", *PRECOMPUTE, "--home", str(home)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    total = len(b["results"])
    wanted = f"precomputed {total - len(after)} of {total} selected shoppers ({len(after)} up to"
    assert wanted in proc.stdout, f"seed {seed} (point {n}): {proc.stdout}"
    assert results_digest(stored_results(home)) == b["digest"], f"seed {seed} (point {n})"


@pytest.mark.integration
@pytest.mark.parametrize("seed", SEEDS)
def test_killed_precompute_serves_whole_results_then_converges(
    ingested: Path, precompute_baseline: dict, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _precompute_fault(ingested, precompute_baseline, seed, capsys)


@pytest.mark.fuzz
@pytest.mark.parametrize("seed", FUZZ_SEEDS)
def test_killed_precompute_serves_whole_results_then_converges_fuzz(
    ingested: Path, precompute_baseline: dict, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _precompute_fault(ingested, precompute_baseline, seed, capsys)


# --------------------------------------------------------------------------- eval


def evaluate(n: int, tmp: Path, home: Path, out: Path) -> tuple[int, int | None]:
    return killed(
        n, tmp, "queryagent-train", "eval", "--data", str(TINY), "--home", str(home),
        "--methods", EVAL_METHODS, "--batch-size", "2", "--out", str(out),
    )  # fmt: skip


def figures(report: Path) -> dict[str, dict]:
    """Each method's figures in a report, less its timings."""
    methods = json.loads(report.read_text())["methods"]
    return {
        label: {
            "distinct_ratio": m["distinct_ratio"],
            "metrics": {k: v for k, v in m["metrics"].items() if k not in TIMINGS},
        }
        for label, m in methods.items()
    }


def cache_rows(cache_dir: Path) -> dict[str, set[str]]:
    """Each cache file's users; fails on a line the loader would have to skip."""
    rows: dict[str, set[str]] = {}
    for path in sorted(cache_dir.glob("*.jsonl")):
        header, *lines = path.read_text().splitlines()
        assert isinstance(json.loads(header), dict), path
        rows[path.stem] = {UserOutcome(**json.loads(line)).user_id for line in lines}
    return rows


@pytest.fixture(scope="module")
def eval_baseline(ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted eval. Its home (a copy of the ingested one) is then shared by the seeds:
    the catalog and the evaluation's fitted models are in it, so only the report and its cache
    are written by the runs killed."""
    tmp = tmp_path_factory.mktemp("faults-eval")
    home = tmp / "home"
    shutil.copytree(ingested, home)
    clean = tmp / "clean.json"
    _, points = evaluate(0, tmp, home, clean)
    rows = cache_rows(clean.with_suffix(".cache"))
    assert set(rows) == set(EVAL_METHODS.split(",")) and all(len(r) == 6 for r in rows.values())
    return {"points": points, "figures": figures(clean), "rows": rows, "home": home, "tmp": tmp}


def cut_last_row(cache_dir: Path, rng: random.Random) -> None:
    """Cut the last row of the fullest cache file short, as a short ``write`` does when a fatal
    signal arrives mid-copy (Linux checks for one between pages of a write to a file)."""
    path = max(sorted(cache_dir.glob("*.jsonl")), key=lambda p: len(p.read_bytes()))
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    if len(lines) < 2:
        return
    last = lines[-1]
    path.write_bytes(data[: len(data) - len(last) + rng.randint(1, len(last) - 2)])


def _eval_fault(b: dict, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, b["points"])
    out = b["tmp"] / f"r-{seed}.json"
    code, _ = evaluate(n, b["tmp"], b["home"], out)
    assert code == -9, f"seed {seed}: eval was not killed at point {n}"
    cache_dir = out.with_suffix(".cache")
    if cache_dir.exists():
        cache_rows(cache_dir)  # every line whole: the kill cut none
        cut_last_row(cache_dir, rng)
        cache = OutcomeCache(cache_dir)
        for path in cache_dir.glob("*.jsonl"):  # the loader reads past a cut line
            header = json.loads(path.read_text().splitlines()[0])
            cache.load(MethodSpec(path.stem), header)

    _, _ = evaluate(0, b["tmp"], b["home"], out)  # the rerun of the same command
    assert figures(out) == b["figures"], f"seed {seed} (point {n})"
    # every user's row is in the cache as the loader reads it (a row appended after the cut
    # one was glued to it and lost before training.evaluation.cache.appender ended that line)
    cache = OutcomeCache(cache_dir)
    loaded = {}
    for path in sorted(cache_dir.glob("*.jsonl")):
        header = json.loads(path.read_text().splitlines()[0])
        loaded[path.stem] = set(cache.load(MethodSpec(path.stem), header))
    assert loaded == b["rows"], f"seed {seed} (point {n}): the cache lost a row"


@pytest.mark.integration
@pytest.mark.parametrize("seed", SEEDS)
def test_killed_eval_resumes_to_the_same_figures(eval_baseline: dict, seed: int) -> None:
    _eval_fault(eval_baseline, seed)


@pytest.mark.fuzz
@pytest.mark.parametrize("seed", FUZZ_SEEDS)
def test_killed_eval_resumes_to_the_same_figures_fuzz(eval_baseline: dict, seed: int) -> None:
    _eval_fault(eval_baseline, seed)


def test_cut_last_row_cuts_inside_the_row(tmp_path: Path) -> None:
    """The helper that simulates a short write really leaves a cut row (else the eval check
    above could not fail on a cache that loses rows after one)."""
    (tmp_path / "m.jsonl").write_text('{"k": 1}\n{"user_id": "U1", "x": 12345}\n')
    cut_last_row(tmp_path, random.Random(0))
    text = (tmp_path / "m.jsonl").read_text()
    assert re.fullmatch(r'\{"k": 1\}\n\{[^\n]*', text)  # the row's start, no newline
    assert len(text) < len('{"k": 1}\n{"user_id": "U1", "x": 12345}')
