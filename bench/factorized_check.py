"""The factorized check's exponent g, measured: the ranker's pick with and without it.

The check orders a shopper's candidates by the ranker's score plus g times the log chance that a
right query's products hold the next item (``agent.ranking.ranker``, ``RankerConfig.hit_gain``).
Both parts are fitted once per split by the evaluation (``Evaluator.ranking``: the sequences cut
before the split's targets, the evaluation's search); this script re-picks each shopper's query
for several g from the same fitted parts, so the rows differ only in g, and compares each with
g = 0 (the ranker alone) on Q_EM and Cons@10, with paired sign tests (scipy's ``binomtest``).
Choose g on ``valid``; report ``test``::

    python -m bench.factorized_check --data data/amazon-scientific --split valid --home HOME
    python -m bench.factorized_check --data data/amazon-scientific --split test --home HOME

Writes ``bench/results/factorized_check.json`` (one entry per split and search, with the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from memory_store import load_dataset
from memory_store.files import atomic_write
from memory_store.queries import normalize_query
from training.evaluation.runner import RETRIEVE_K, EvalConfig, Evaluator

RESULTS = Path(__file__).resolve().parent / "results" / "factorized_check.json"
GAINS = (0.0, 0.1, 0.25, 0.5, 1.0)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _sign_test(better: int, worse: int) -> float:
    return float(binomtest(better, better + worse).pvalue) if better + worse else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="valid", choices=["valid", "test"])
    parser.add_argument("--search", default="fused", choices=["fused", "dense"])
    parser.add_argument("--home", default=None)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    config = EvalConfig(
        data=args.data, split=args.split, limit=args.limit, home=args.home, search=args.search
    )
    # No method runs through the evaluator's cache here: a throwaway folder for it.
    cache = tempfile.mkdtemp(prefix="factorized-check-")
    evaluator = Evaluator(dataset, config, cache_dir=Path(cache))
    models = evaluator.ranking()
    ranker = models.ranker
    if ranker is None or ranker.hit_booster is None:
        print("the fitted check has no second model (too few right-query rows): nothing to do")
        return 1
    search = evaluator.search()
    picks: dict[float, list[str | None]] = {g: [] for g in GAINS}
    for ex, _truth in evaluator.pairs:
        history = evaluator._history(ex)
        [probs] = models.next_item_probs([history])
        queries = [c.query for c in models.recall(history, probs)]
        if not queries:
            for g in GAINS:
                picks[g].append(None)
            continue
        x = models.features(history, queries, probs)
        raw = np.asarray(ranker.booster.predict(x))  # type: ignore[attr-defined]
        log_p = np.log(np.maximum(ranker.hit_probability(x), 1e-6))
        for g in GAINS:
            picks[g].append(queries[int(np.argmax(raw + g * log_p))])
    distinct = sorted({q for qs in picks.values() for q in qs if q})
    pages = dict(zip(distinct, search.search_many(distinct, k=RETRIEVE_K), strict=True))
    rows: dict[float, dict[str, np.ndarray]] = {}
    for g, qs in picks.items():
        em, cons = [], []
        for (ex, truth), q in zip(evaluator.pairs, qs, strict=True):
            right = bool(q) and normalize_query(q or "") == truth
            shown = {p.item_id for p in pages.get(q or "", [])}
            em.append(float(right))
            cons.append(float(right and ex.target in shown))
        rows[g] = {"q_em": np.array(em), "cons@10": np.array(cons)}
    out = {}
    for g in GAINS:
        entry: dict[str, object] = {}
        for metric in ("q_em", "cons@10"):
            a, b = rows[g][metric], rows[0.0][metric]
            better, worse = int((a > b).sum()), int((a < b).sum())
            entry[metric] = round(float(a.mean()), 4)
            entry[f"{metric} vs g=0"] = {
                "better": better,
                "worse": worse,
                "p": round(_sign_test(better, worse), 4),
            }
        out[str(g)] = entry
    report = {
        "split": args.split,
        "search": args.search,
        "shoppers": len(evaluator.pairs),
        "shipped_gain": ranker.hit_gain,
        "gains": out,
        "machine": f"{_cpu()}, {os.cpu_count()} cores",
        "command": "python -m bench.factorized_check "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    previous[f"{args.split}/{args.search}"] = report
    atomic_write(RESULTS, json.dumps(previous, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
