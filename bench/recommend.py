"""Speed of the recommendation agent on the bundled data set (CPU figures go in the README).

    python -m bench.recommend [--users 20] [--home DIR] [--skip-ingest] [--out FILE.json]

Measures: the ingest time of the bundled catalog and memory (into a fresh home unless --home
is given), ``recommend`` latency p50/p95 over N shoppers run one by one (model already loaded),
and the throughput of the same N shoppers run together through ``graphs.runner.OfflineRunner``
(``graph.batch`` and the micro-batching drafter). Timings are wall clock on whatever machine runs
it; name the machine next to the figures. Expected on the 2-core CPU dev machine: see README
"Performance".
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from agent.context import Context
from graphs.cli import BUNDLED_DATA
from graphs.cli import main as cli_main
from graphs.query_agent import build_graph, default_deps
from graphs.runner import OfflineRunner
from memory_store import load_dataset, open_store
from memory_store.files import atomic_write


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--home", type=Path, default=None, help="reuse an ingested home")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/recommend.json"))
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="qa-bench-"))
    result: dict = {
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "home": str(home),
    }
    if not args.skip_ingest:
        t0 = time.perf_counter()
        assert cli_main(["ingest", "--home", str(home)]) == 0
        result["ingest_s"] = round(time.perf_counter() - t0, 1)

    dataset = load_dataset(BUNDLED_DATA)
    users = random.Random(args.seed).sample(
        [u for u in dataset.users if dataset.sequences.get(u)], args.users
    )
    deps = default_deps(args.model, home=str(home))
    result["model"] = str(deps.drafter.name)
    store = open_store(home)
    ctx = Context()
    graph = build_graph(deps).compile(store=store)
    graph.invoke({"user_id": users[0]}, context=ctx)  # warm-up: model load, embedding model load

    latencies, refinements = [], []
    for user in users:
        t0 = time.perf_counter()
        out = graph.invoke({"user_id": user}, context=ctx)
        latencies.append(time.perf_counter() - t0)
        refinements.append(out["refinements"])
    result["sequential"] = {
        "users": len(users),
        "p50_s": round(percentile(latencies, 50), 2),
        "p95_s": round(percentile(latencies, 95), 2),
        "mean_refinements": round(statistics.mean(refinements), 2),
    }
    print(json.dumps(result["sequential"]), flush=True)

    # The offline path (graphs.runner): one graph.batch over all shoppers, micro-batched drafter.
    runner = OfflineRunner(
        store=store,
        catalog=deps.catalog,
        drafter=deps.drafter,
        ranking=deps.ranking,
        context=ctx,
        batch_size=len(users),
    )
    batching = runner.drafter
    t0 = time.perf_counter()
    runner.run([{"user_id": u} for u in users])
    wall = time.perf_counter() - t0
    result["batched"] = {
        "users": len(users),
        "wall_s": round(wall, 1),
        "users_per_min": round(60 * len(users) / wall, 1),
    }
    # The micro-batcher wraps free-generation drafters; a grounded drafter's beams run one
    # shopper at a time under its lock, so there is no batch size to report.
    sizes = getattr(batching, "batch_sizes", None)
    if sizes:
        result["batched"]["mean_prompts_per_model_call"] = round(statistics.mean(sizes), 1)
    result["sequential"]["users_per_min"] = round(60 * len(users) / sum(latencies), 1)
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
