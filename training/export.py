"""Export agent trajectories over a data split: the raw material of SFT and GRPO.

    queryagent-train export --data data/amazon-scientific --split train --limit 2000 \
        --out runs/train-trajectories.jsonl [--model ID_OR_PATH] [--seed 0] [--batch-size 16] \
        [--max-refinements 2] [--home DIR]

Runs the full agent (the graph, micro-batched drafter, the evaluation's catalog collection) on
every selected example through ``graphs.offline.runner.OfflineRunner`` with the memory cut just
before its target (no leakage: the profile only sees the items the shopper had before), builds
each run's record from the graph's output (``graphs.record.record_from_output``), fills
``target`` (held-out item and its HEM ground-truth query) and writes the JSONL file plus its
``.meta.json`` sidecar atomically. ``valid`` / ``test`` take the leave-one-out targets, like
``queryagent-train eval``; ``train`` takes every ``history -> next item`` row of the training
split (``before`` = the row's position in the full sequence). Examples whose target has no
category have no ground-truth query and are skipped (counted in the sidecar), as in the
evaluation. Output: ``wrote N trajectories to FILE (S skipped: no category)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agent.catalog import Catalog
from agent.context import Context
from agent.drafting import HFDrafter
from graphs.offline.runner import OfflineRunner, offline_ranking
from graphs.record import Target, TrajectoryError, TrajectoryWriter
from memory_store import SPLITS, Dataset, load_dataset
from training.evaluation.baselines import QueryOracle
from training.evaluation.protocol import example_position, open_eval_catalog, select_examples
from training.evaluation.specs import RETRIEVE_K, EvalConfig, EvalError
from training.queries import common_root

EXPORT_BEAMS = 4  # the drafting role's candidates per round (its earlier default)


@dataclass
class ExportConfig(EvalConfig):
    """What an export ran with (written into the sidecar's ``config``); any split."""

    split: str = "train"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise EvalError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.limit is not None and self.limit < 1:
            raise EvalError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise EvalError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_refinements < 0:
            raise EvalError(
                f"--max-refinements must be >= 0 (0 = single turn), got {self.max_refinements}"
            )


@dataclass
class ExportResult:
    path: Path
    records: int
    skipped_no_category: int
    wall_s: float


def export_trajectories(
    dataset: Dataset,
    config: ExportConfig,
    out: str | Path,
    *,
    catalog: Catalog | None = None,
    drafter: Any = None,
    ranking: Any = None,
    command: str | None = None,
    progress: bool = True,
) -> ExportResult:
    """Run the agent over ``config.split`` of ``dataset`` and write the trajectories to ``out``.

    Args:
        dataset: the loaded data set.
        config: split, sample, model and batching.
        out: the ``.jsonl`` file (its folder must exist); ``<out>.meta.json`` is written beside.
        catalog: the catalog to search (default: the evaluation's collection for this data set).
        drafter: the drafter (default: ``HFDrafter(config.model)``).
        ranking: the catalog's fitted models (default: ``graphs.offline.runner.offline_ranking``).
        command: recorded in the sidecar (default: this process's argv).
        progress: show a tqdm bar.

    Raises:
        EvalError: a bad split or an example that does not line up with its sequence.
        TrajectoryError: the output folder does not exist.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if not out.parent.is_dir():  # before any model or catalog work
        raise TrajectoryError(f"{out}: folder {out.parent} does not exist")
    oracle = QueryOracle(dataset, common_root(p.category for p in dataset.products.values()))
    pairs, skipped = select_examples(
        dataset, config.split, config.limit, config.seed, oracle, splits=SPLITS
    )
    # Positions first: a misaligned example fails before any model work.
    runs = [(ex, truth, example_position(dataset, ex, config.split)) for ex, truth in pairs]
    if catalog is None:
        catalog = open_eval_catalog(dataset, config.home)
    if drafter is None:
        drafter = HFDrafter(config.model, home=config.home, batch_size=config.batch_size)
    # The whole data set in memory (ingested as `queryagent ingest` does); each run's profile is
    # cut at its ``before``.
    runner = OfflineRunner.from_dataset(
        dataset,
        catalog=catalog,
        drafter=drafter,
        # fitted on the sequences cut before what this split holds out (graphs.offline.runner)
        ranking=ranking
        if ranking is not None
        else offline_ranking(dataset, catalog, config.split, config.home),
        # The drafting role, whose turns these trajectories record (the default agent drafts
        # none: its model writes the query text, ``agent.writing``).
        context=Context(
            max_refinements=config.max_refinements,
            seed=config.seed,
            top_k=RETRIEVE_K,
            beams=EXPORT_BEAMS,
            write_query=False,
        ),
        model=config.model or getattr(drafter, "name", None),
        batch_size=config.batch_size,
    )
    inputs = [{"user_id": ex.user_id, "before": pos} for ex, _, pos in runs]
    targets = [
        Target(item_id=ex.target, title=dataset.products[ex.target].title, query=truth)
        for ex, truth, _ in runs
    ]
    meta = {
        "command": command if command is not None else " ".join(sys.argv),
        "config": asdict(config),
        "catalog": _catalog_meta(catalog),
        "data_name": dataset.name,
        "split": config.split,
        "skipped_no_category": skipped,
    }
    bar = tqdm(total=len(runs), desc=f"export {config.split}", unit="run", disable=not progress)
    try:
        with TrajectoryWriter(out, meta) as writer:
            # Outputs come back in input order: record i is run i, with target i.
            for _, _, records in runner.iter_chunks(inputs, records=True, targets=targets):
                writer.write(records)
                bar.update(len(records))
    finally:
        bar.close()
    return ExportResult(out, writer.count, skipped, time.perf_counter() - t0)


def _catalog_meta(catalog: Any) -> dict[str, Any]:
    return {
        "kind": type(catalog).__name__,
        "location": getattr(catalog, "location", None),
        "collection": getattr(catalog, "collection_name", None),
        "products": catalog.count(),
    }


def _export(args: argparse.Namespace) -> int:
    config = ExportConfig.from_args(args)  # validates the flags before the data set loads
    try:
        if not args.out.parent.is_dir():  # before the data set loads
            raise TrajectoryError(f"{args.out}: folder {args.out.parent} does not exist")
        dataset = load_dataset(args.data)
        result = export_trajectories(dataset, config, args.out)
    except TrajectoryError as exc:  # reported like the other user errors of queryagent-train
        raise EvalError(str(exc)) from exc
    print(
        f"wrote {result.records} trajectories to {result.path} "
        f"({result.skipped_no_category} skipped: no category; {result.wall_s:.1f} s)"
    )
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``export`` on ``queryagent-train``'s subparsers."""
    ex = subparsers.add_parser(
        "export", help="run the agent over a data split and write its trajectories (JSONL)"
    )
    ex.add_argument(
        "--data",
        type=Path,
        required=True,
        help="data set folder (UniSRec files or products.jsonl + sequences.jsonl)",
    )
    # Checked by ExportConfig rather than argparse ``choices``: a bad value is one line, exit 2.
    ex.add_argument(
        "--split", default="train", metavar="{train,valid,test}", help="data split (default train)"
    )
    ex.add_argument(
        "--out", type=Path, required=True, help="trajectory file (.jsonl; .meta.json beside it)"
    )
    ex.add_argument(
        "--limit", type=int, default=None, help="export this many examples (a seeded sample)"
    )
    ex.add_argument("--seed", type=int, default=0, help="sample and sampling seed")
    ex.add_argument(
        "--model",
        default=None,
        help="drafter: Hugging Face id, local folder or adapter (default: the shipped adapter)",
    )
    ex.add_argument(
        "--home", type=Path, default=None, help="QueryAgent home (catalog, converted models)"
    )
    ex.add_argument(
        "--batch-size", type=int, default=16, help="concurrent runs whose model calls are batched"
    )
    ex.add_argument(
        "--max-refinements",
        type=int,
        default=Context.max_refinements,
        help="refinement budget per run (0 = single turn)",
    )
    ex.set_defaults(func=_export)
