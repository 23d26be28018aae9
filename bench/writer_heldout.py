"""Writers compared on the same held-out shoppers, paired: is one text better than another?

    python -m bench.writer_heldout --data data/amazon-scientific --home DIR \
        --models models/smollm2-writer,/path/to/grpo-adapter [--limit 500] \
        [--out bench/results/writer_heldout.json]

The GRPO run's held-out curve (``queryagent-train write-grpo``) gives each point its own
interval; two points' intervals can overlap while the same shoppers' rewards differ steadily.
This scores each model's greedy text for the same ``--limit`` fixed ``valid`` shoppers (the GRPO
run's held-out rows: ``writer_rows(dataset, "valid", limit, seed=0)``) with the run's reward
terms (``training.writer.heldout.score_texts``), beside the intent's own text, and pairs every
model with the first: the mean per-shopper difference of the weighted reward with its 95%
bootstrap interval, and how many shoppers it is better / worse for with a two-sided sign test.
The home needs the data set's evaluation catalog (the writer's trainers make it; embedded here
when missing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import machine
from memory_store import DataError, load_dataset
from memory_store.files import atomic_write
from training.common import TrainingError, load_start_model
from training.rewards import TextResults
from training.writer.heldout import OpenWriterSearch, greedy_texts, interval, score_texts
from training.writer.rows import item_queries, writer_rows

OUT = Path(__file__).parent / "results" / "writer_heldout.json"


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """``b`` against ``a`` over the same shoppers: the mean difference with its interval, and
    the better / worse counts with scipy's exact two-sided sign (binomial) test."""
    from scipy.stats import binomtest  # slow to import; only this needs it

    diff = np.asarray(b) - np.asarray(a)
    better, worse = int((diff > 1e-9).sum()), int((diff < -1e-9).sum())
    p = binomtest(better, better + worse).pvalue if better + worse else 1.0
    return {"difference": interval(diff), "better": better, "worse": worse, "p": round(p, 4)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.writer_heldout", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=Path("data/amazon-scientific"))
    parser.add_argument("--home", default=None, help="QueryAgent home")
    parser.add_argument("--models", required=True, help="comma list; the first is the reference")
    parser.add_argument("--limit", type=int, default=500, help="held-out valid shoppers")
    parser.add_argument("--depth", type=int, default=100, help="results read by the rank term")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    started = time.perf_counter()
    try:
        dataset = load_dataset(args.data)
    except DataError as exc:
        print(f"writer_heldout: error: {exc}", file=sys.stderr)
        return 2
    rows, _ = writer_rows(dataset, "valid", limit=args.limit, seed=0)
    queries = item_queries(dataset)
    results = TextResults(OpenWriterSearch(str(args.data), args.home), depth=args.depth)
    intent = score_texts(rows, [r.intent for r in rows], results, queries)
    scored: dict[str, dict[str, Any]] = {}
    for name in models:
        try:
            _, model, tokenizer = load_start_model(name, args.home)
        except TrainingError as exc:
            print(f"writer_heldout: error: {exc}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        texts = greedy_texts(model, tokenizer, rows)
        scored[name] = score_texts(rows, texts, results, queries)
        scored[name]["seconds"] = round(time.perf_counter() - t0, 1)
        scored[name]["examples"] = [
            {"intent": r.intent, "text": t} for r, t in list(zip(rows, texts, strict=True))[:5]
        ]
    reference = scored[models[0]]["per_row"]
    report = {
        "machine": machine(),
        "data": str(args.data),
        "shoppers": len(rows),
        "reference": models[0],
        "intent": {k: v for k, v in intent.items() if k != "per_row"},
        "models": {
            name: {
                **{k: v for k, v in s.items() if k != "per_row"},
                "against_reference": paired(reference, s["per_row"]),
                "against_intent": paired(intent["per_row"], s["per_row"]),
            }
            for name, s in scored.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(report, indent=2) + "\n")
    for name, s in report["models"].items():
        d = s["against_reference"]
        print(
            f"{name}: reward {s['reward']['mean']} [{s['reward']['low']}, {s['reward']['high']}], "
            f"against {models[0]} {d['difference']['mean']:+.4f} "
            f"[{d['difference']['low']:+.4f}, {d['difference']['high']:+.4f}], "
            f"{d['better']} better / {d['worse']} worse (p {d['p']})"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
