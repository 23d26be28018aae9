"""The next-item model's own figure: HR@10 and NDCG@10 on the ``valid`` split, and its fit time.

    python -m bench.next_item --data data/amazon-scientific --home /tmp/ni-home \
        [--variant NAME ...] [--limit N] [--out bench/results/next_item.json]

The model is fitted as ``agent.ranking.fit`` fits it in the evaluation of ``valid``: on every
sequence cut before its ``valid`` target (``graphs.offline.runner.fit_sequences``), stage A on
those sequences minus their last item, stage B a warm-started refit on the whole cut sequences
(``FitConfig.refit_epochs``). Each ``valid`` shopper's target is then ranked against the whole
catalog from the purchases before it (nothing excluded, as the evaluation's ``sasrec`` baseline
ranks), and HR@10 (ir-measures' Success@10) and NDCG@10 come from the evaluation's own
``training.evaluation.metrics.ranking_metrics``. ``test`` is never looked at.

Each variant is a ``NextItemConfig`` (plus ``refit_epochs`` and text init on/off): stage A's
HR@10 is also taken at a few epochs on the way (``--curve``), so one fit gives the curve over
epochs. Fit time excludes those evaluations. The text vectors are the catalog's stored MiniLM
vectors, read from the home's Chroma collection (``agent.search.CatalogDenseScorer``, as served);
``--embed`` fills the collection when it does not hold the data set. Torch runs on one thread
(the machine is shared); the load average at the start and end of each variant is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.catalog import DEFAULT_COLLECTION, CatalogError, ChromaCatalog
from agent.ranking.fit import FitConfig
from agent.ranking.nextitem import NextItemConfig, NextItemModel
from agent.search import CatalogDenseScorer
from bench import machine
from graphs.offline.runner import fit_sequences
from memory_store import DataError, Dataset, load_dataset, target_position
from memory_store.files import atomic_write
from training.evaluation.metrics import UserOutcome, ranking_metrics

K = 10
OUT = Path(__file__).parent / "results" / "next_item.json"

# A variant: "before" (the configuration before text init) or "key=value,..." over
# NextItemConfig's fields plus refit (stage-B epochs) and text (1: text init), e.g.
# "text=1,epochs=10,batch_size=128,lr=0.005,refit=2".
BEFORE = "text=0,epochs=40,batch_size=32,lr=0.002,dim=64,refit=5"


def parse_variant(spec: str) -> tuple[dict[str, Any], int, bool]:
    """(NextItemConfig overrides, stage-B refit epochs, text init) of a variant spec."""
    fields = NextItemConfig.__dataclass_fields__
    overrides: dict[str, Any] = {}
    refit, text = FitConfig().refit_epochs, False
    for part in (BEFORE if spec == "before" else spec).split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key == "refit":
            refit = int(value)
        elif key == "text":
            text = bool(int(value))
        elif key in fields:
            overrides[key] = (
                float(value) if key in ("lr", "dropout", "weight_decay") else int(value)
            )
        else:
            raise ValueError(f"unknown variant field {key!r} in {spec!r}")
    return overrides, refit, text


def score(model: NextItemModel, rows: Sequence[tuple[str, list[str], str]]) -> dict[str, float]:
    """Mean HR@10 and NDCG@10 of each row's target in the model's full-catalog top 10."""
    outcomes = []
    for start in range(0, len(rows), 1024):
        chunk = rows[start : start + 1024]
        probs = model.predict([h for _, h, _ in chunk])
        top = np.argpartition(-probs, K, axis=1)[:, :K]
        for (user, _, target), p, t in zip(chunk, probs, top, strict=True):
            ranked = t[np.argsort(-p[t], kind="stable")]
            retrieved = [model.item_ids[i] for i in ranked]
            outcomes.append(UserOutcome(user, target, "", None, retrieved))
    per_user = ranking_metrics(outcomes)
    return {
        "hr@10": round(float(np.mean([m["i_hit@10"] for m in per_user.values()])), 4),
        "ndcg@10": round(float(np.mean([m["ndcg@10"] for m in per_user.values()])), 4),
    }


def valid_rows(dataset: Dataset) -> list[tuple[str, list[str], str]]:
    """(user, purchases before the ``valid`` target, target) for every ``valid`` shopper."""
    out = []
    for ex in dataset.examples("valid"):
        position = target_position(dataset, ex, "valid")
        out.append((ex.user_id, list(dataset.sequences[ex.user_id][:position]), ex.target))
    return out


def code_version() -> str:
    """The checkout's commit (``git describe --always --dirty``), or "unknown" outside git."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_variant(
    name: str,
    sequences: Mapping[str, Sequence[str]],
    items: Sequence[str],
    vectors: np.ndarray | None,
    rows: Sequence[tuple[str, list[str], str]],
    curve: Sequence[int],
) -> dict[str, Any]:
    overrides, refit_epochs, text = parse_variant(name)
    cfg = replace(NextItemConfig(), **overrides)
    load_start, code = load(), code_version()
    cut = {u: list(s[:-1]) for u, s in sequences.items() if len(s) >= 2}  # as fit.py's stage A
    points: dict[int, dict[str, float]] = {}
    evaluating = [0.0]

    def on_epoch(epoch: int, model: NextItemModel) -> None:
        if epoch in curve and epoch < cfg.epochs:
            t = time.perf_counter()
            points[epoch] = score(model, rows)
            evaluating[0] += time.perf_counter() - t
            print(f"  {name}: stage A epoch {epoch}: {points[epoch]}", flush=True)

    t = time.perf_counter()
    model_a = NextItemModel.fit(
        cut, items, cfg, item_vectors=vectors if text else None, on_epoch=on_epoch
    )
    fit_a = time.perf_counter() - t - evaluating[0]
    points[cfg.epochs] = score(model_a, rows)
    t = time.perf_counter()
    model_b = NextItemModel.fit(
        {u: list(s) for u, s in sequences.items()},
        items,
        replace(cfg, epochs=refit_epochs),
        init=model_a,
    )
    fit_b = time.perf_counter() - t
    result = {
        "code": code,
        "config": asdict(cfg),
        "refit_epochs": refit_epochs,
        "text_init": text,
        **score(model_b, rows),
        "stage_a_curve": {str(k): v for k, v in sorted(points.items())},
        "fit_s": round(fit_a + fit_b, 1),
        "fit_a_s": round(fit_a, 1),
        "fit_b_s": round(fit_b, 1),
        "s_per_epoch": round((fit_a + fit_b) / (cfg.epochs + refit_epochs), 2),
        "load_avg_start": load_start,
        "load_avg_end": load(),
    }
    print(
        f"{name}: HR@10 {result['hr@10']:.4f} NDCG@10 {result['ndcg@10']:.4f} "
        f"fit {result['fit_s']} s (load {load_start} -> {result['load_avg_end']})",
        flush=True,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.next_item", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=Path("data/amazon-scientific"))
    parser.add_argument("--home", type=Path, required=True, help="QueryAgent home (its Chroma)")
    parser.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help="the catalog's Chroma collection"
    )
    parser.add_argument(
        "--variant", action="append", help='repeatable: "before" or "key=value,..." (module doc)'
    )
    parser.add_argument("--curve", default="10,20,30", help="stage-A epochs also evaluated")
    parser.add_argument("--limit", type=int, default=None, help="valid shoppers (default: all)")
    parser.add_argument(
        "--embed", action="store_true", help="fill the collection when it lacks the data set"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file to write (merged)")
    args = parser.parse_args(argv)
    import torch  # heavy: only the fits need it

    torch.set_num_threads(1)  # the machine is shared; figures are for one thread
    try:
        dataset = load_dataset(args.data)
        catalog = ChromaCatalog(home=args.home, collection=args.collection)
        if catalog.count() != len(dataset.products):
            if not args.embed:
                raise CatalogError(
                    f"the collection {args.collection!r} at {catalog.location} holds "
                    f"{catalog.count()} products, the data set {len(dataset.products)}: run "
                    "`queryagent ingest --data ...` into that home, or pass --embed"
                )
            catalog.upsert(dataset.products.values())
        items = sorted(dataset.products)  # fit.py's item order
        vectors = CatalogDenseScorer(catalog).item_matrix(items)
        sequences = fit_sequences(dataset, "valid")
        rows = valid_rows(dataset)[: args.limit]
        for spec in args.variant or []:
            parse_variant(spec)
    except (DataError, CatalogError, OSError, ValueError) as exc:
        print(f"next_item: error: {exc}", file=sys.stderr)
        return 2
    curve = [int(x) for x in args.curve.split(",") if x.strip()]
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report.update(
        {
            "what": "next-item model: HR@10 / NDCG@10 of each valid target, full catalog ranked",
            "machine": machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "data": str(args.data),
            "shoppers": len(rows),
            "items": len(items),
            "default_fit": {
                "nextitem": asdict(FitConfig().nextitem),
                "refit_epochs": FitConfig().refit_epochs,
            },
        }
    )
    report.setdefault("variants", {})
    for name in args.variant or ["before"]:
        result = run_variant(name, sequences, items, vectors, rows, curve)
        result["command"] = "python -m bench.next_item " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        # Merged into the file as it is now (another run may have added variants meanwhile).
        stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
        report["variants"] = {**stored.get("variants", {}), name: result}
        atomic_write(args.out, json.dumps(report, indent=2) + "\n")  # after each variant
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
