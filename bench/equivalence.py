"""Same agent, same seed, same shoppers: do two versions of the code recommend the same queries?

A restructuring that should not change behaviour (issue 10) is checked by running the graph from
each version over the same shoppers of a data split and comparing, shopper by shopper, the final
query, every attempt's query (in order) and every fit score (the check's calibrated chance per
attempt, and the recommended one's). ``run`` writes what the code it imports produced;
``compare`` diffs two such files. Run ``run`` once per version with ``PYTHONPATH`` pointing at
that version's checkout (this file needs nothing that differs between them), each on its own copy
of an ingested home (a run caches profiles in the store)::

    cp -a ~/.queryagent /tmp/home-a && cp -a ~/.queryagent /tmp/home-b
    PYTHONPATH=/path/to/before python bench/equivalence.py run --home /tmp/home-a \\
        --users 300 --beams 0 --out /tmp/before.json
    PYTHONPATH=. python bench/equivalence.py run --home /tmp/home-b \\
        --users 300 --beams 0 --out /tmp/after.json
    python bench/equivalence.py compare /tmp/before.json /tmp/after.json

``--beams 0`` is the model-free context (recall, retrieval, the check and finalize; seconds per
hundred shoppers); without it the default context runs (the drafter's constrained beams and
refinements; seconds per shopper on a CPU). ``compare`` prints the counts and exits 1 on any
difference. Expected output (2026-11-30, wt-types against 129d606): ``300 shoppers: 300 same
final query, 300 same attempt queries, 300 same fit scores; 0 differ``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _fit(attempt: Mapping[str, Any]) -> float | None:
    """The check's fit of one attempt, in either version's shape: ``check.fit`` (v3 names) or
    ``consistency.score`` (before the renaming)."""
    check = attempt.get("check") or attempt.get("consistency")
    if not check:
        return None
    return check.get("fit", check.get("score"))


def summarize(output: Mapping[str, Any]) -> dict[str, Any]:
    """What the comparison looks at, from one graph output (JSON values)."""
    attempts = list(output.get("attempts") or [])
    return {
        "query": output.get("query"),
        "fit": output.get("fit", output.get("consistency")),
        "source": output.get("source"),
        "refinements": int(output.get("refinements") or 0),
        "attempt_queries": [a.get("query") for a in attempts],
        "attempt_fits": [_fit(a) for a in attempts],
        "product_ids": [p.get("item_id") for p in output.get("products") or []],
    }


def run(args: argparse.Namespace) -> int:
    os.environ["QUERYAGENT_HOME"] = str(args.home)
    # Local on purpose: the project is imported after QUERYAGENT_HOME is set, from whichever
    # checkout PYTHONPATH names (this file runs against two versions of the code).
    from agent.context import Context
    from graphs.cli import BUNDLED_DATA
    from graphs.query_agent import default_deps
    from memory_store import load_dataset, open_store, target_position
    from memory_store.files import atomic_write

    try:
        from graphs.offline.runner import OfflineRunner
    except ImportError:  # a checkout from before graphs/ had sub-folders (b32cf22)
        from graphs.runner import OfflineRunner  # type: ignore[import-not-found,no-redef]

    dataset = load_dataset(args.data or BUNDLED_DATA)
    examples = dataset.examples(args.split)
    examples = random.Random(args.seed).sample(examples, min(args.users, len(examples)))
    inputs = [
        {"user_id": ex.user_id, "before": target_position(dataset, ex, args.split)}
        for ex in examples
    ]
    deps = default_deps(args.model, home=str(args.home))
    ctx = Context(beams=args.beams) if args.beams is not None else Context()
    runner = OfflineRunner(
        store=open_store(args.home),
        catalog=deps.catalog,
        drafter=deps.drafter,
        ranking=deps.ranking,
        context=ctx,
        batch_size=args.batch_size,
    )
    # Resumable: the file is rewritten after every chunk, and shoppers already in it are skipped
    # (a model run over a few dozen shoppers takes a long while on a loaded CPU).
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text(encoding="utf-8")) if out_path.exists() else {}
    results: dict[str, Any] = dict(previous.get("results") or {})
    todo = [i for i in inputs if _key(i) not in results]
    t0 = time.perf_counter()
    out = {
        "code": sys.modules["agent"].__file__,
        "context": repr(ctx),
        "split": args.split,
        "seed": args.seed,
        "users": len(inputs),
        "wall_s": float(previous.get("wall_s") or 0.0),
        "results": results,
    }
    for start, outputs, _ in runner.iter_chunks(todo, chunk_size=args.chunk):
        chunk = todo[start : start + len(outputs)]
        results.update({_key(i): summarize(o) for i, o in zip(chunk, outputs, strict=True)})
        out["wall_s"] = round(float(previous.get("wall_s") or 0.0) + time.perf_counter() - t0, 1)
        atomic_write(out_path, json.dumps(out, indent=1) + "\n")
        print(f"  {len(results)}/{len(inputs)} ({out['wall_s']:.0f} s)", file=sys.stderr)
    print(f"{len(results)} shoppers in {out['wall_s']} s -> {args.out}")
    return 0


def _key(inputs: Mapping[str, Any]) -> str:
    return f"{inputs['user_id']}@{inputs['before']}"


def compare(args: argparse.Namespace) -> int:
    a = json.loads(Path(args.a).read_text(encoding="utf-8"))["results"]
    b = json.loads(Path(args.b).read_text(encoding="utf-8"))["results"]
    common = [key for key in a if key in b]
    if a.keys() != b.keys():  # an unfinished run: the shoppers both have are compared
        print(f"{len(a.keys() - b.keys())} shoppers only in {args.a}, "
              f"{len(b.keys() - a.keys())} only in {args.b}")  # fmt: skip
    if not common:
        print("no shopper in common")
        return 1
    same = {"final query": 0, "attempt queries": 0, "fit scores": 0}
    differ = []
    for key in common:
        x, y = a[key], b[key]
        same["final query"] += x["query"] == y["query"]
        same["attempt queries"] += x["attempt_queries"] == y["attempt_queries"]
        same["fit scores"] += x["attempt_fits"] == y["attempt_fits"] and x["fit"] == y["fit"]
        if x != y:
            differ.append(key)
    counts = ", ".join(f"{n} same {what}" for what, n in same.items())
    print(f"{len(common)} shoppers: {counts}; {len(differ)} differ")
    for key in differ[:10]:
        print(f"  {key}: {a[key]} != {b[key]}")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the graph over a split's shoppers; write the summaries")
    r.add_argument(
        "--home", type=Path, required=True, help="an ingested home (a copy: it is written)"
    )
    r.add_argument("--data", type=Path, default=None, help="data set folder (default: bundled)")
    r.add_argument("--split", default="test", help="the split whose shoppers run (default test)")
    r.add_argument("--users", type=int, default=300, help="shoppers sampled (default 300)")
    r.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    r.add_argument("--beams", type=int, default=None, help="Context.beams (0: model-free)")
    r.add_argument("--model", default=None, help="drafter (default: the shipped adapter)")
    r.add_argument("--batch-size", type=int, default=16, help="graph runs per model batch")
    r.add_argument(
        "--chunk", type=int, default=64, help="runs per graph.batch (file written after each)"
    )
    r.add_argument("--out", type=Path, required=True, help="the JSON file written")
    r.set_defaults(func=run)
    c = sub.add_parser("compare", help="compare two files written by `run`; exit 1 if they differ")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.set_defaults(func=compare)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
