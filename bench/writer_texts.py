"""Which short text for the right intent shows the next purchase: the room a writer has.

    python -m bench.writer_texts --data data/amazon-scientific --home DIR [--limit 2000] \
        [--out bench/results/writer_texts.json]

For ``valid`` shoppers whose next purchase has a category, the intent is that purchase's category
query (what a right check picks), and each row is a fixed rule for the text the shopper would
see, searched with the writer's search (``training.writer.heldout.writer_search``: the fused
search fitted before the ``valid`` targets). Figures: hit@10 (the purchase in the text's top 10),
the writer's rank term and the share of the top 10 in the intent's category, each a mean over
shoppers with a 95% bootstrap interval; ``best of the rules`` takes each shopper's best rule
(an upper bound for a writer that picks among them), and ``led by the purchase's own brand`` is
an oracle (it reads the answer). The home needs the data set's evaluation catalog (made by
``queryagent-train eval`` or the writer's trainers; embedded here when missing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench import machine
from memory_store import DataError, load_dataset
from memory_store.files import atomic_write
from memory_store.queries import normalize_query
from training.rewards import text_category_share, text_rank_reward
from training.writer.heldout import interval, writer_search
from training.writer.rows import item_queries, leaf_text

OUT = Path(__file__).parent / "results" / "writer_texts.json"
DEPTH = 100


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.writer_texts", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=Path("data/amazon-scientific"))
    parser.add_argument("--home", type=Path, default=None, help="QueryAgent home")
    parser.add_argument("--limit", type=int, default=2000, help="valid shoppers (seeded sample)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        dataset = load_dataset(args.data)
    except DataError as exc:
        print(f"writer_texts: error: {exc}", file=sys.stderr)
        return 2
    queries = item_queries(dataset)
    examples = [ex for ex in dataset.examples("valid") if ex.target in queries]
    rng = np.random.default_rng(0)
    if args.limit and args.limit < len(examples):
        examples = [examples[i] for i in sorted(rng.choice(len(examples), args.limit, False))]
    search = writer_search(dataset, str(args.home) if args.home else None)

    def brand(item: str) -> str:
        product = dataset.products.get(item)
        return normalize_query(product.brand) if product is not None else ""

    rules: dict[str, list[str]] = {}
    for ex in examples:
        intent = queries[ex.target]
        leaf = leaf_text(intent)
        counts = Counter(b for i in ex.history if (b := brand(i)))
        favourite = counts.most_common(1)[0][0] if counts else ""
        same = [b for i in ex.history if queries.get(i) == intent and (b := brand(i))]
        texts = {
            "the intent (its own text)": intent,
            "its last three words": leaf,
            "its last two words": leaf_text(intent, 2),
            "last three words led by the favourite brand": f"{favourite} {leaf}".strip(),
            "the intent and the favourite brand": f"{intent} {favourite}".strip(),
            "last three words led by the brand last bought in this category": (
                f"{same[-1] if same else ''} {leaf}".strip()
            ),
            "led by the purchase's own brand (oracle)": f"{brand(ex.target)} {leaf}".strip(),
        }
        for name, text in texts.items():
            rules.setdefault(name, []).append(text)
    per_rule: dict[str, dict[str, np.ndarray]] = {}
    for name, texts in rules.items():
        distinct = sorted(set(texts))
        found = dict(zip(distinct, search.search_many(distinct, k=DEPTH), strict=True))
        hit, rank, share = [], [], []
        for ex, text in zip(examples, texts, strict=True):
            ids = [p.item_id for p in found[text]]
            hit.append(float(ex.target in ids[:10]))
            rank.append(text_rank_reward(ex.target, ids, DEPTH))
            share.append(text_category_share(ids, queries[ex.target], queries))
        per_rule[name] = {
            "hit@10": np.asarray(hit),
            "rank": np.asarray(rank),
            "share": np.asarray(share),
        }
    fair = [r for name, r in per_rule.items() if "oracle" not in name]
    per_rule["best of the rules (per shopper, not the oracle)"] = {
        k: np.max(np.stack([r[k] for r in fair]), axis=0) for k in ("hit@10", "rank", "share")
    }
    report = {
        "what": "hit@10, rank term and category share of fixed text rules for the right intent",
        "command": "python -m bench.writer_texts "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "data": str(args.data),
        "split": "valid",
        "shoppers": len(examples),
        "rules": {
            name: {k: interval(v) for k, v in figures.items()} for name, figures in per_rule.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(report, indent=2) + "\n")
    for name, figures in report["rules"].items():
        print(
            f"{name:70s} hit@10 {figures['hit@10']['mean']:.3f}  rank {figures['rank']['mean']:.3f}"
        )
    print(f"wrote {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
