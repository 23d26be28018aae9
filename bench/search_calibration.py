"""The catalog search's own figure: I_Hit@10 given the RIGHT query (issue 26's calibration).

    python -m bench.search_calibration --data data/amazon-scientific --home /tmp/search-home \
        [--limit N] [--out bench/results/search_calibration.json]

For every shopper of a split whose target has a category, the query is the target's own
category query (the HEM ground truth, ``training.queries``) and the figure is whether the target
is among the search's top 10. Each split is run as the evaluation runs it: the search is fitted
(``agent.search.fit_search``) on the sequences cut before that split's targets
(``graphs.offline.runner.fit_sequences``), so the popularity prior counts only earlier purchases,
and the blend's weights are tuned on each shopper's last purchase before the targets: on
``test`` that is the ``valid`` target (tuning), so the ``test`` figure is reported, never tuned
on. ``valid``'s own row is tuned one position earlier.

Rows: today's dense search (Chroma's query), each part alone, the partial blends, the fused
default, the issue's reference (the query's category items by popularity), and the same query
with the target's brand named (the issue's oracle row; dense vs fused). 95% percentile-bootstrap
intervals over shoppers. The catalog's vectors are read from the home's Chroma collection (made
by ``queryagent ingest``; ``--embed`` fills it when it does not hold the data set).

Measured (bench/results/search_calibration.json; 2-core Intel Xeon VM, CPU only, 21 min under a
load average of 10), I_Hit@10 given the right query, all shoppers:
  valid (8,210): dense (today) 0.420 [0.410, 0.430] -> fused 0.738 [0.729, 0.747]
  test (8,226):  dense (today) 0.415 [0.404, 0.425] -> fused 0.721 [0.712, 0.731]
  test reference, the query's category items by popularity: 0.727 [0.718, 0.737]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.catalog import DEFAULT_COLLECTION, CatalogError, ChromaCatalog
from agent.search import CatalogDenseScorer, FusionWeights, fit_search
from agent.search.fusion import top_k
from bench import machine
from graphs.offline.runner import fit_sequences
from memory_store import DataError, load_dataset
from memory_store.files import atomic_write
from memory_store.queries import normalize_query
from training.evaluation.runner import select_examples
from training.queries import QueryOracle, common_root

K = 10
OUT = Path(__file__).parent / "results" / "search_calibration.json"


def interval(hits: np.ndarray, *, seed: int = 0, resamples: int = 1000) -> dict[str, float]:
    """Mean and 95% percentile-bootstrap interval over shoppers."""
    mean = float(hits.mean()) if len(hits) else float("nan")
    if len(hits) < 2:
        return {"mean": round(mean, 4), "low": round(mean, 4), "high": round(mean, 4)}
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), size=(resamples, len(hits)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(mean, 4), "low": round(float(low), 4), "high": round(float(high), 4)}


def shown(tops: dict[str, set[str]], rows: Sequence[tuple[str, str]]) -> np.ndarray:
    """Per (query, target) row, 1 when the target is in the query's top 10."""
    return np.asarray([target in tops[query] for query, target in rows], dtype=float)


def run_split(
    dataset: Any, catalog: ChromaCatalog, dense: CatalogDenseScorer, split: str, limit: int | None
) -> dict[str, Any]:
    started = time.perf_counter()
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    pairs, skipped = select_examples(dataset, split, limit, 0, oracle)
    rows = [(query, ex.target) for ex, query in pairs]
    search = fit_search(dataset.products, fit_sequences(dataset, split), dense)
    fitted_s = time.perf_counter() - started
    ids = search.item_ids
    queries = sorted({q for q, _ in rows})
    parts = search.parts(queries)
    parts["dense"] = dense.scores(queries, ids)  # even if a fit ever gave dense no weight

    def blend_tops(weights: FusionWeights, qs: list[str], p: dict[str, np.ndarray]) -> dict:  # type: ignore[type-arg]
        return {
            q: {ids[j] for j in top.tolist()}
            for q, top in zip(qs, top_k(weights.fuse(p), K), strict=True)
        }

    w = search.weights
    variants: dict[str, dict[str, set[str]]] = {}
    today = catalog.search_many(queries, k=K)
    variants["dense: Chroma's query (today's search, --search dense)"] = {
        q: {r.item_id for r in res} for q, res in zip(queries, today, strict=True)
    }
    variants["dense alone, every product scored"] = blend_tops(
        FusionWeights.only("dense"), queries, parts
    )
    variants["bm25 category field alone"] = blend_tops(
        FusionWeights.only("category"), queries, parts
    )
    variants["bm25 fields (category, title, brand)"] = blend_tops(
        replace(w, dense=0.0, popularity=0.0), queries, parts
    )
    variants["popularity alone"] = blend_tops(FusionWeights.only("popularity"), queries, parts)
    variants["bm25 fields + dense"] = blend_tops(replace(w, popularity=0.0), queries, parts)
    variants["bm25 fields + popularity"] = blend_tops(replace(w, dense=0.0), queries, parts)
    variants["fused (default): bm25 fields + dense + popularity"] = blend_tops(w, queries, parts)
    # The reference row: the query's own category items, most purchased first (ties by id).
    counts = search.popularity.counts
    by_query: dict[str, list[str]] = {}
    for item_id in ids:
        q = oracle.of_item(item_id)
        if q:
            by_query.setdefault(q, []).append(item_id)
    variants["reference: the query's category items by popularity"] = {
        q: set(sorted(by_query.get(q, []), key=lambda i: (-counts.get(i, 0), i))[:K])
        for q in queries
    }
    figures = {name: interval(shown(tops, rows)) for name, tops in variants.items()}

    # The same query with the target's brand named (issue 26's oracle row), where it has one.
    branded = [
        (f"{q} {normalize_query(dataset.products[t].brand)}", t)
        for q, t in rows
        if normalize_query(dataset.products[t].brand)
    ]
    bq = sorted({q for q, _ in branded})
    bparts = search.parts(bq)
    bparts["dense"] = dense.scores(bq, ids)
    branded_figures = {
        "dense alone": interval(
            shown(blend_tops(FusionWeights.only("dense"), bq, bparts), branded)
        ),
        "fused (default)": interval(shown(blend_tops(w, bq, bparts), branded)),
    }
    return {
        "shoppers": len(rows),
        "skipped_no_category": skipped,
        "distinct_queries": len(queries),
        "fit": {
            "weights": w.to_json(),
            "tuning": search.meta.get("tuning"),
            "seconds": round(fitted_s, 1),
        },
        "i_hit_at_10_given_the_right_query": figures,
        "with_the_targets_brand_named": {"shoppers": len(branded), **branded_figures},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search_calibration", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--data", type=Path, default=Path("data/amazon-scientific"), help="data-set folder"
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="QueryAgent home holding the catalog"
    )
    parser.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help="the catalog's Chroma collection"
    )
    parser.add_argument("--splits", default="valid,test", help="comma-separated: valid, test")
    parser.add_argument("--limit", type=int, default=None, help="shoppers per split (default: all)")
    parser.add_argument(
        "--embed", action="store_true", help="fill the collection when it lacks the data set"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        dataset = load_dataset(args.data)
        catalog = ChromaCatalog(home=args.home, collection=args.collection)
        held = catalog.count()
        if held != len(dataset.products):
            if not args.embed:
                raise CatalogError(
                    f"the collection {args.collection!r} at {catalog.location} holds {held} "
                    f"products, the data set {len(dataset.products)}: run `queryagent ingest "
                    "--data ...` into that home, or pass --embed"
                )
            catalog.upsert(dataset.products.values())
        dense = CatalogDenseScorer(catalog)
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        results = {split: run_split(dataset, catalog, dense, split, args.limit) for split in splits}
    except (DataError, CatalogError, OSError) as exc:
        print(f"search_calibration: error: {exc}", file=sys.stderr)
        return 2
    report = {
        "what": "I_Hit@10 given the right query (the target's own category query)",
        "command": "python -m bench.search_calibration "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "data": str(args.data),
        "collection": args.collection,
        "k": K,
        "splits": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write(args.out, json.dumps(report, indent=2) + "\n")
    for split, result in results.items():
        print(f"{split}: {result['shoppers']} shoppers, weights {result['fit']['weights']}")
        for name, fig in result["i_hit_at_10_given_the_right_query"].items():
            print(f"  {fig['mean']:.3f} [{fig['low']:.3f}, {fig['high']:.3f}]  {name}")
        for name, fig in result["with_the_targets_brand_named"].items():
            if isinstance(fig, dict):
                low, high = fig["low"], fig["high"]
                print(f"  {fig['mean']:.3f} [{low:.3f}, {high:.3f}]  brand named: {name}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
