"""Speed of the recommendation agent on the bundled data set (CPU figures go in the README).

    python -m bench.recommend [--users 20] [--home DIR] [--skip-ingest] [--out FILE.json]

    python -m bench.recommend --users 32 --batch-sizes 1,8,32 --home DIR --skip-ingest

    python -m bench.recommend --users 32 --home DIR --skip-ingest --sections graph_batch \
        --out bench/results/recommend_graph_batch.json

Measures: the ingest time of the bundled catalog and memory (into a fresh home unless --home
is given); ``recommend`` latency p50/p95 over N shoppers run one by one (model already loaded),
with the profile split of those runs (seconds per run inside the language model, the catalog,
the learned check and the store, per node, and the graph's own overhead); and the throughput
of the same N shoppers run together through ``graphs.offline.runner.OfflineRunner`` (``graph.batch``
and the micro-batching drafter) at each batch size. Writes JSON and a plot (latency
distribution, throughput vs batch size) beside it. ``graph_batch``: the README's Python API
itself (``build_graph(default_deps(...))``) with the model only writing the query text
(``WRITE_ONLY``: the intent from the ranker, no beams, no vote): ``graph.invoke`` for each of
the N shoppers one at a time, then one ``graph.batch`` of the same N, their wall times and ratio,
and where the batch's time went (its model calls, their sizes). Timings are wall clock on
whatever machine runs it, with the load average beside them; name the machine next to the
figures (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from agent.context import Context
from agent.drafting.hf import inference_dtype_name
from agent.prompts import STOP
from agent.ranking.fit import CatalogModels
from bench import machine
from graphs.cli import BUNDLED_DATA
from graphs.cli import main as cli_main
from graphs.offline.runner import OfflineRunner
from graphs.query_agent import build_graph, default_deps
from memory_store import load_dataset, open_store
from memory_store.files import atomic_path, atomic_write


def percentile(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


class Stopwatch:
    """Seconds spent inside the wrapped object's methods (the drafter's model calls, the
    catalog's searches), summed per run; every other attribute passes through."""

    def __init__(self, inner: Any, methods: tuple[str, ...], totals: dict[str, float], key: str):
        self._inner, self._methods, self._totals, self._key = inner, methods, totals, key
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._methods:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                with self._lock:
                    self._totals[self._key] += time.perf_counter() - t0

        return timed


def profiled_run(graph: Any, user: str, ctx: Context, totals: dict[str, float]) -> dict:
    """One run through ``stream(updates)``: each node's wall time (update to update) added to
    ``totals['node:<name>']``; returns the final state's fields the bench reports."""
    t0 = last = time.perf_counter()
    refinements = 0
    for update in graph.stream({"user_id": user}, context=ctx, stream_mode="updates"):
        now = time.perf_counter()
        for node in update:
            totals[f"node:{node}"] += now - last
            if node == "refine_query":
                refinements += 1
        last = now
    return {"wall_s": time.perf_counter() - t0, "refinements": refinements}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the shared cores were."""
    return [round(x, 2) for x in os.getloadavg()]


# The path measured by ``graph_batch``: the model only writes the query text (issue 27).
WRITE_ONLY = Context(beams=0, model_vote=False, write_query=True)
SECTIONS = ("sequential", "offline", "graph_batch")
CHECK_METHODS = ("next_item_probs", "recall", "features", "score")


def graph_batch(deps: Any, store: Any, users: list[str], ctx: Context) -> dict:
    """One at a time (``graph.invoke`` per shopper) against one ``graph.batch`` of the same
    shoppers, through ``build_graph(deps)`` as the README builds it (``deps``: ``default_deps``,
    whose drafter is micro-batched). The model's calls are timed inside the micro-batcher (the
    drafter it wraps, behind a ``Stopwatch``): how many, how many prompts each, their seconds."""
    totals: dict[str, float] = defaultdict(float)
    batcher = deps.drafter
    inner = batcher.drafter
    batcher.drafter = Stopwatch(inner, ("generate", "beams", "score"), totals, "model")
    graph = build_graph(deps).compile(store=store)
    # Warm-up (not timed): the model's and the embedder's first loads, the shared prompt start.
    for user in users[-2:]:
        graph.invoke({"user_id": user}, context=ctx)
    users = users[:-2]
    row: dict[str, Any] = {
        "users": len(users),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
    }

    totals.clear()
    sizes_before = len(batcher.batch_sizes)
    latencies = []
    written: list[Any] = []  # the write prompts, for model_split
    t0 = time.perf_counter()
    for user in users:
        t1 = time.perf_counter()
        out = graph.invoke({"user_id": user}, context=ctx)
        latencies.append(time.perf_counter() - t1)
        written += [t.messages for t in out.get("texts") or [] if t.turn == 0]
    one_wall = time.perf_counter() - t0
    one_calls = batcher.batch_sizes[sizes_before:]
    row["one_at_a_time"] = {
        "wall_s": round(one_wall, 2),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "model_s": round(totals["model"], 2),
        "model_calls": len(one_calls),
        "waits": batcher.waits,  # batches that waited the window: 0 for a lone caller
    }

    totals.clear()
    sizes_before = len(batcher.batch_sizes)
    waits_before = batcher.waits
    t0 = time.perf_counter()
    # max_concurrency: LangGraph's batch otherwise runs min(32, CPUs + 4) graphs at a time.
    outs = graph.batch(
        [{"user_id": u} for u in users], {"max_concurrency": len(users)}, context=ctx
    )
    batch_wall = time.perf_counter() - t0
    calls = batcher.batch_sizes[sizes_before:]
    row["batch"] = {
        "wall_s": round(batch_wall, 2),
        "model_s": round(totals["model"], 2),
        "model_calls": len(calls),
        "prompts_per_call": calls,
        "waits": batcher.waits - waits_before,
        "texts_written": sum(len(o.get("texts") or []) for o in outs),
    }
    row["ratio"] = round(one_wall / batch_wall, 2)
    batcher.drafter = inner
    row["model_split"] = model_split(inner, written, ctx)
    row["load_avg_after"] = load_average()
    return row


def model_split(drafter: Any, prompts: list[Any], ctx: Context, n: int = 8) -> dict:
    """Where a text's model time goes: ``n`` write prompts one at a time and as one batch,
    with one new token (the prompt's prefill and a step) and with ``ctx.max_new_tokens``; the
    difference is the decoding. Each timing gets prompts of its own (``prompts[:n]`` for one
    token, ``prompts[n:2n]`` for the rest), so none reuses its own prompt kept by another."""
    options = {"temperature": ctx.temperature, "top_p": ctx.top_p, "stop": STOP}
    first, second = prompts[:n], prompts[n : 2 * n]
    if len(prompts) < 2 * n + 2:
        return {}

    def timed(call: Any) -> float:
        t0 = time.perf_counter()
        call()
        return round(time.perf_counter() - t0, 2)

    # The batch's rows kept so far hold these very prompts (graph.batch ran them): a fresh store
    # for the split, holding only the prompts' shared start (a batch of two others keeps it).
    kept = getattr(drafter, "prefixes", None)
    if kept is not None:
        drafter.prefixes = type(kept)()
        drafter.generate(prompts[2 * n : 2 * n + 2], max_new_tokens=1, **options)
    out: dict[str, Any] = {"prompts": n}
    for label, batch in (("one_at_a_time_s", False), ("one_batch_s", True)):
        row = {}
        for tokens, group in ((1, first), (ctx.max_new_tokens, second)):
            if batch:
                row[f"max_new_tokens={tokens}"] = timed(
                    lambda g=group, k=tokens: drafter.generate(g, max_new_tokens=k, **options)
                )
            else:
                row[f"max_new_tokens={tokens}"] = timed(
                    lambda g=group, k=tokens: [
                        drafter.generate([p], max_new_tokens=k, **options) for p in g
                    ]
                )
        out[label] = row
    if kept is not None:
        drafter.prefixes = kept
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated")
    parser.add_argument("--home", type=Path, default=None, help="reuse an ingested home")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/recommend.json"))
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    args = parser.parse_args()
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    import torch  # local: heavy; only its thread count is recorded, when the bench runs

    home = args.home or Path(tempfile.mkdtemp(prefix="qa-bench-"))
    result: dict = {
        "machine": machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "home": str(home),
    }
    if not args.skip_ingest:
        t0 = time.perf_counter()
        assert cli_main(["ingest", "--home", str(home)]) == 0
        result["ingest_s"] = round(time.perf_counter() - t0, 1)

    dataset = load_dataset(BUNDLED_DATA)
    result["catalog"] = {"data": str(BUNDLED_DATA), "products": len(dataset.products)}
    # Two more for graph_batch's warm-up (the first N are the same shoppers as without them).
    sampled = random.Random(args.seed).sample(
        [u for u in dataset.users if dataset.sequences.get(u)], args.users + 2
    )
    users = sampled[: args.users]
    deps = default_deps(args.model, home=str(home))
    assert deps.drafter is not None  # default_deps always builds one
    result["model"] = str(deps.drafter.name)
    result["dtype"] = inference_dtype_name()
    store = open_store(home)
    ctx = Context()
    result["context"] = {k: v for k, v in vars(ctx).items() if not k.startswith("_")}

    if "sequential" in sections:
        # Sequential, profiled: the drafter's, the catalog's and the check's calls are timed.
        totals: dict[str, float] = defaultdict(float)
        timed = replace(
            deps,
            drafter=Stopwatch(deps.drafter, ("generate", "beams", "score"), totals, "model"),
            catalog=Stopwatch(deps.catalog, ("search", "search_many"), totals, "catalog"),
            ranking=cast(  # a timing proxy that passes every attribute through
                CatalogModels,
                Stopwatch(deps.ranking, CHECK_METHODS, totals, "check"),
            ),
        )
        graph = build_graph(timed).compile(store=store)
        profiled_run(graph, users[0], ctx, totals)  # warm-up: model, embedding model
        totals.clear()
        runs = [profiled_run(graph, user, ctx, totals) for user in users]
        latencies = [r["wall_s"] for r in runs]
        wall = sum(latencies)
        nodes = sum(v for k, v in totals.items() if k.startswith("node:"))
        inside = totals["model"] + totals["catalog"] + totals["check"]
        result["sequential"] = {
            "users": len(users),
            "p50_s": round(percentile(latencies, 50), 3),
            "p95_s": round(percentile(latencies, 95), 3),
            "mean_s": round(statistics.mean(latencies), 3),
            "users_per_min": round(60 * len(users) / wall, 1),
            "mean_refinements": round(statistics.mean(r["refinements"] for r in runs), 2),
        }
        # Seconds per run; the shares are of the whole wall time.
        split = {
            "model_s": totals["model"],
            "catalog_s": totals["catalog"],
            "check_s": totals["check"],
            "other_node_work_s": max(0.0, nodes - inside),
            "graph_overhead_s": max(0.0, wall - nodes),
        }
        result["profile"] = {
            "per_run_s": {k: round(v / len(users), 4) for k, v in split.items()},
            "share": {k.removesuffix("_s"): round(v / wall, 4) for k, v in split.items()},
            "nodes_per_run_s": {
                k.removeprefix("node:"): round(v / len(users), 4)
                for k, v in sorted(totals.items())
                if k.startswith("node:")
            },
        }
        # Refinement prompts reuse their draft prompt's keys/values (agent.drafting.RowPrefixes).
        kept = getattr(deps.drafter, "prefixes", None)
        if kept is not None:
            result["row_prefixes"] = {"hits": kept.hits, "reused_tokens": kept.reused_tokens}
        print(json.dumps({"sequential": result["sequential"], "profile": result["profile"]}))

    if "offline" in sections:
        # The offline path (graphs.offline.runner): graph.batch over the shoppers, micro-batched
        # drafter.
        result["batched"] = []
        for size in batch_sizes:
            runner = OfflineRunner(
                store=store,
                catalog=deps.catalog,
                drafter=deps.drafter,
                ranking=deps.ranking,
                context=ctx,
                batch_size=size,
            )
            t0 = time.perf_counter()
            runner.run([{"user_id": u} for u in users])
            took = time.perf_counter() - t0
            row = {
                "batch_size": size,
                "users": len(users),
                "wall_s": round(took, 1),
                "users_per_min": round(60 * len(users) / took, 1),
            }
            sizes = getattr(runner.drafter, "batch_sizes", None)
            if sizes:
                row["mean_prompts_per_model_call"] = round(statistics.mean(sizes), 1)
            result["batched"].append(row)
            print(json.dumps(row), flush=True)
    if "graph_batch" in sections:
        # The README's API: graph.invoke one at a time vs graph.batch, the model only writing.
        result["graph_batch"] = {
            "context": {k: v for k, v in vars(WRITE_ONLY).items() if not k.startswith("_")},
            **graph_batch(deps, store, sampled, WRITE_ONLY),
        }
        print(json.dumps(result["graph_batch"]), flush=True)
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    if "sequential" in sections and "offline" in sections:
        plot(result, latencies, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))


def plot(result: dict, latencies: list[float], path: Path) -> None:
    """Latency distribution of the sequential runs; throughput against batch size."""
    import matplotlib  # local: heavy, and only the plot needs it

    matplotlib.use("Agg")  # no display: set before pyplot is imported
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.hist(latencies, bins=min(20, max(5, len(latencies) // 2)))
    left.set_xlabel("seconds per recommendation (one shopper)")
    left.set_ylabel("runs")
    sizes = [r["batch_size"] for r in result["batched"]]
    rates = [r["users_per_min"] for r in result["batched"]]
    right.plot(sizes, rates, marker="o")
    right.set_xscale("log", base=2)
    right.set_xlabel("batch size (graph.batch)")
    right.set_ylabel("shoppers per minute")
    fig.suptitle(f"{result['model']} on {result['machine']} ({result['cpus']} CPUs)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
