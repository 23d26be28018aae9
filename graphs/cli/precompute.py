"""``queryagent precompute``: every shopper's recommendation computed ahead and stored beside the
memory (``graphs.serving.precompute``); ``--log FILE`` logs each computed run as ``recommend
--log`` does, ``--no-model`` runs recall and the learned check without a language model."""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from agent.catalog import ChromaCatalog
from agent.context import Context
from agent.ranking import load_served
from graphs.cli.common import CliError, agent_options
from graphs.query_agent import Deps, default_deps
from graphs.record import TrajectoryRecord, append_trajectories, check_appendable
from graphs.serving.precompute import parse_since, precompute, read_users_file
from graphs.validators import positive_int
from memory_store import open_store
from memory_store.paths import queryagent_home

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pre = sub.add_parser(
        "precompute",
        parents=[agent_options()],
        help="compute and store every shopper's recommendation (nearline; resumable)",
        description="Runs the agent for every shopper (or those listed, or those whose memory "
        "changed since a time) and stores each recommendation beside the memory with the model, "
        "catalog and code versions; shoppers whose stored result is up to date are skipped, so "
        "an interrupted run resumes and a re-run after new events only recomputes those.",
    )
    pre.add_argument(
        "--users", type=Path, default=None, metavar="FILE", help="shopper ids, one a line"
    )
    pre.add_argument(
        "--since",
        default=None,
        metavar="TIMESTAMP",
        help="only shoppers whose memory was written at or after this time (ISO-8601, naive = "
        "UTC, or Unix seconds; compared with the store's write time of their registry entry, "
        "i.e. when their newest events were ingested)",
    )
    pre.add_argument(
        "--engine",
        default="local",
        metavar="{local,ray}",
        help="local: in this process (default); ray: Ray Data actor pool (pip install '.[ray]')",
    )
    pre.add_argument(
        "--ray-actors",
        type=positive_int,
        default=1,
        help="actors in the Ray pool (each loads the model)",
    )
    pre.add_argument(
        "--batch-size",
        type=int,  # precompute() refuses < 1 in one line ("--batch-size must be >= 1")
        default=16,
        help="shoppers per model call and per stored chunk",
    )
    pre.add_argument(
        "--force", action="store_true", help="recompute shoppers whose result is up to date"
    )
    pre.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="also append each computed run's trajectory to FILE (JSONL, schema v3), as "
        "`recommend --log` does",
    )
    pre.add_argument(
        "--no-model",
        action="store_true",
        help="no language model: recall and the learned check only (the `ranker` ablation; "
        "milliseconds a shopper)",
    )
    pre.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    users = read_users_file(args.users) if args.users is not None else None
    since = parse_since(args.since) if args.since is not None else None
    try:
        context = Context(
            max_refinements=args.max_refinements, seed=args.seed, write_query=args.write_query
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    home = str(args.home) if args.home is not None else None
    if args.log is not None:
        if args.engine != "local":
            raise CliError("--log needs --engine local (the records are built in this process)")
        check_appendable(args.log)  # before any run: a bad log path costs nothing
    if args.no_model and args.model is not None:
        raise CliError("--no-model and --model exclude each other")
    store = open_store(args.home)
    factory = (
        partial(_model_free_deps, home)
        if args.no_model
        else partial(default_deps, args.model, home)
    )
    t0 = time.perf_counter()
    result = precompute(
        store,
        users=users,
        since=since,
        context=context,
        batch_size=args.batch_size,
        force=args.force,
        engine=args.engine,
        deps_factory=factory,
        store_opener=partial(open_store, home),
        ray_actors=args.ray_actors,
        log=_precompute_log(args, home) if args.log is not None else None,
        model="none" if args.no_model else None,
    )
    logged = f"; {len(result.computed)} trajectories appended to {args.log}" if args.log else ""
    print(
        f"precomputed {len(result.computed)} of {result.selected} selected shoppers "
        f"({result.up_to_date} up to date; engine {result.engine}; "
        f"{time.perf_counter() - t0:.1f} s){logged}; home {queryagent_home(args.home)}"
    )
    return 0


def _model_free_deps(home: str | None) -> Any:
    """Recall and the learned check without a language model (the ``ranker`` ablation)."""
    return Deps(drafter=None, catalog=ChromaCatalog.from_env(home=home), ranking=load_served(home))


def _precompute_log(args: argparse.Namespace, home: str | None) -> Any:
    """Appends each computed chunk's trajectory records to ``--log`` (with its sidecar)."""
    meta = {
        "command": " ".join(sys.argv),
        "config": {
            "model": "none" if args.no_model else args.model,
            "max_refinements": args.max_refinements,
            "seed": args.seed,
            "home": str(queryagent_home(home)),
        },
    }

    def log(records: list[TrajectoryRecord]) -> None:
        append_trajectories(args.log, records, meta)

    return log
