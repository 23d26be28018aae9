"""``queryagent ingest``: a data set into the catalog, the memory and the fitted ranking models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.catalog import ChromaCatalog
from agent.context import Context
from agent.model_identity import check_model
from agent.nodes import learned_model_weight
from agent.search import DEFAULT_SEARCH, SEARCH_MODES
from graphs.cli.common import BUNDLED_DATA
from graphs.offline.ingest import ingest, served_fit
from graphs.query_agent import default_deps
from graphs.safe_text import safe
from graphs.validators import check_replacing, ingest_note, model_arg
from memory_store import load_dataset, open_store
from memory_store.paths import queryagent_home

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = sub.add_parser("ingest", help="load a data set into the catalog and the memory")
    ingest.add_argument(
        "--data",
        type=Path,
        default=BUNDLED_DATA,
        help="data set folder (default: bundled Amazon Scientific)",
    )
    ingest.add_argument(
        "--replace",
        action="store_true",
        help="allow a data set without products or purchases to replace a home's catalog",
    )
    ingest.add_argument(
        "--refit",
        action="store_true",
        help="refit the catalog's ranking models even when the data did not change",
    )
    ingest.add_argument(
        "--search",
        choices=SEARCH_MODES,
        default=DEFAULT_SEARCH,
        help="the catalog's search: 'fused' (BM25 over category, title and brand + MiniLM + a "
        "popularity prior, fitted now; the default) or 'dense' (MiniLM alone, the earlier "
        "search); recommendations and the ranking models use it",
    )
    ingest.add_argument(
        "--model",
        type=model_arg,
        default=None,
        help="the model whose weight in the check is learned on this catalog now (default: "
        "$QUERYAGENT_MODEL, else the shipped drafter)",
    )
    ingest.add_argument(
        "--no-model",
        action="store_true",
        help="do not learn a model's weight now (a model learns it on its first recommendation)",
    )
    ingest.add_argument(
        "--home",
        type=Path,
        default=None,
        help="QueryAgent home (default: $QUERYAGENT_HOME or ~/.queryagent)",
    )
    ingest.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.no_model:
        check_model(args.model)  # a --model that cannot load: one line before anything is written
    dataset = load_dataset(args.data)  # validates everything before anything is written
    if dataset.notes:  # what the loader changed (a category path cut, escape codes removed)
        print(f"queryagent: note: {safe(ingest_note(dataset.notes))}", file=sys.stderr)
    check_replacing(dataset, args.home, replace=args.replace)
    catalog = ChromaCatalog.from_env(home=args.home)
    # served_fit: everything the check learns from this catalog's own sequences (agent.ranking):
    # its query vocabulary and what each query retrieves, transitions, the next-item model and
    # the ranker.
    result = ingest(
        dataset,
        open_store(args.home),
        catalog,
        fit=served_fit(args.home, force=args.refit, search=args.search),
    )
    weight_note = ""
    if not args.no_model and Context().model_vote:  # the vote is off by default (issue 27)
        weight_note = _learn_model_weight(args, result.models)
    print(
        f"ingested {dataset.name}: {result.products} products in the catalog "
        f"({result.products_written} new or changed, {result.catalog_s:.1f} s), "
        f"{result.users} shoppers and {result.events} events into memory; "
        f"{len(result.models.vocab.queries)} catalog queries, {args.search} search, ranking models "
        f"{'fitted' if result.fitted else 'unchanged'} ({result.fit_s:.1f} s); "
        f"{result.seconds:.1f} s in all; home {queryagent_home(args.home)}"
    )
    if weight_note:
        print(weight_note)
    return 0


def _learn_model_weight(args: argparse.Namespace, models: Any) -> str:
    """Learn the served model's weight in the check on this catalog now, so the first
    recommendation does not (``agent.nodes.learned_model_weight``)."""
    drafter = default_deps(args.model, home=args.home).drafter
    assert drafter is not None  # default_deps always builds one
    learned = learned_model_weight(drafter, models)
    if learned is None:
        return ""
    if not learned.rows:
        return "model weight in the check: 0 (no held-out rows: the catalog is too small)"
    return f"model {drafter.name}: {learned.describe()}"
