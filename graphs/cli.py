"""``queryagent``: ingest a data set, recommend a query for a shopper.

    queryagent ingest [--data DIR] [--home DIR]
    queryagent recommend --user ID [--json] [--model ID_OR_PATH] [--home DIR] [--log FILE]

Argument parsing uses the standard library's argparse (maintained, no extra dependency).
Errors a user can cause (unknown user, bad data file, an id the store cannot key by, an oversized
input, empty or unreachable catalog, an interrupted ingest, a ``--model`` that cannot load, an
unwritable home, a store URL that names no database, a log file that is not a trajectory file or
whose folder is missing) print one line and exit 2. ``recommend`` checks the store, the shopper,
the catalog and the model folder in that order, before any model is loaded. ``--log FILE``
appends the run's trajectory (``graphs.trajectories``, schema v1) to FILE and updates
``FILE.meta.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.context import Context
from agent.nodes import CATALOG_NAMESPACE, CATALOG_STATS_KEY
from graphs.trajectories import (
    TrajectoryError,
    TrajectoryRecorder,
    append_trajectories,
    check_appendable,
)
from memory_store import (
    DataError,
    HomeError,
    StoreError,
    UnknownUserError,
    UserMemory,
    load_dataset,
    open_store,
)
from memory_store.paths import queryagent_home

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

BUNDLED_DATA = Path(__file__).resolve().parent.parent / "data" / "amazon-scientific"
EXIT_USAGE = 2


class CliError(Exception):
    """A user-caused problem: reported as one line, exit code 2."""


def _ingest(args: argparse.Namespace) -> int:
    from agent.catalog import ChromaCatalog

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)  # validates everything before anything is written
    catalog = ChromaCatalog.from_env(home=args.home)
    n_written = catalog.upsert(dataset.products.values())
    t_catalog = time.perf_counter() - t0
    store = open_store(args.home)
    memory = UserMemory(store)
    memory.ingest_dataset(dataset)
    counts = Counter(p.category for p in dataset.products.values() if p.category)
    popular = [_query_of(c) for c, _ in counts.most_common(10)]
    store.put(
        CATALOG_NAMESPACE,
        CATALOG_STATS_KEY,
        {"popular_categories": popular, "data": str(dataset.root)},
    )
    # Everything the check learns from this catalog's own sequences (agent.ranking): its query
    # vocabulary and what each query retrieves, transitions, the next-item model and the ranker.
    from agent.ranking import fit_served

    t_fit = time.perf_counter()
    models, fitted = fit_served(
        dataset.products, dataset.sequences, catalog.search_many, args.home, force=args.refit
    )
    t_fit = time.perf_counter() - t_fit
    elapsed = time.perf_counter() - t0
    n_events = sum(len(s) for s in dataset.sequences.values())
    print(
        f"ingested {dataset.name}: {len(dataset.products)} products in the catalog "
        f"({n_written} new or changed, {t_catalog:.1f} s), "
        f"{len(dataset.users)} shoppers and {n_events} events into memory; "
        f"{len(models.vocab.queries)} catalog queries, ranking models "
        f"{'fitted' if fitted else 'unchanged'} ({t_fit:.1f} s); {elapsed:.1f} s in all; "
        f"home {queryagent_home(args.home)}"
    )
    return 0


def _query_of(category: str) -> str:
    from memory_store import category_name

    return " ".join(category_name(category).lower().split())


def _recommend(args: argparse.Namespace) -> int:
    from agent.catalog import ChromaCatalog
    from agent.model_identity import check_model
    from graphs.query_agent import build_graph, default_deps

    store = open_store(args.home)
    memory = UserMemory(store)
    memory.check_ingested(args.user)  # a killed ingest is not a cold-start shopper
    if not memory.known(args.user):
        raise CliError(
            f"unknown user {args.user!r}: not in the ingested data set "
            "(use an id from the first column of the data set's user2index file; "
            "run `queryagent ingest` first)"
        )
    try:
        context = Context(max_refinements=args.max_refinements, seed=args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.log is not None:
        check_appendable(args.log)  # before the model runs: a bad log path costs nothing
    # The catalog answers (server up, collection filled) before the model loads: a Chroma server
    # that is down costs a second, not a model load and a draft.
    ChromaCatalog.from_env(home=args.home).check()
    check_model(args.model)
    deps = default_deps(args.model, home=args.home)
    _load_model(deps.drafter, args.model)
    graph = build_graph(deps).compile(store=store, name="QueryAgent")
    recorder = TrajectoryRecorder(model=deps.drafter.name)
    config: RunnableConfig = {"callbacks": [recorder]} if args.log is not None else {}
    t0 = time.perf_counter()
    result = graph.invoke({"user_id": args.user}, config, context=context)
    result["latency_s"] = round(time.perf_counter() - t0, 3)
    if args.log is not None:
        _log(args, recorder, deps.catalog)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_text(result, memory.profile(args.user))
        if args.log is not None:
            print(f"  trajectory appended to {args.log}")
    return 0


def _load_model(drafter: Any, model: str | None) -> None:
    """Load the drafter's weights now, so a model that cannot load is one line, not a traceback
    from inside the graph. Loading a user-named folder fails in many library-specific ways
    (OSError, ValueError, JSON and safetensors errors), all of them the user's to fix."""
    from agent.drafting import DrafterError

    while getattr(type(drafter), "model", None) is None:  # a wrapper (GroundedHFDrafter)
        inner = getattr(drafter, "drafter", None)
        if inner is None:
            return  # a drafter without lazy weights (scripted)
        drafter = inner
    try:
        drafter.model  # noqa: B018 (the property loads the weights)
    except DrafterError:
        raise
    except Exception as exc:
        name = model or getattr(drafter, "name", "the default model")
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CliError(f"cannot load the model {name}: {type(exc).__name__}: {first}") from None


def _log(args: argparse.Namespace, recorder: TrajectoryRecorder, catalog: Any) -> None:
    if not recorder.records:  # a recorder bug or a schema mismatch, not a user error
        raise RuntimeError(
            "the run left no trajectory record: " + "; ".join(recorder.errors or ["no run seen"])
        )
    meta = {
        "command": " ".join(sys.argv),
        "config": {
            "user": args.user,
            "model": args.model or getattr(recorder, "model", None),
            "max_refinements": args.max_refinements,
            "seed": args.seed,
            "home": str(queryagent_home(args.home)),
        },
        "catalog": {
            "location": getattr(catalog, "location", None),
            "collection": getattr(catalog, "collection_name", None),
        },
    }
    append_trajectories(args.log, recorder.records, meta)


def _print_text(result: dict[str, Any], profile: Any) -> None:
    print(f"shopper {result['user_id']}: {profile.latent_identity}")
    score = result.get("consistency")
    score_text = f"{score:.2f}" if score is not None else "n/a"
    print(
        f"  recommended query: {result.get('query')!r}  (consistency {score_text}, "
        f"{result.get('refinements', 0)} refinements, source {result.get('source')}, "
        f"{result['latency_s']:.1f} s)"
    )
    for p in result.get("products", [])[:5]:
        print(f"    {p['rank']:>2}. {p['title'][:80]}  [{p['brand'] or '-'}]  {p['score']:.3f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="queryagent", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="load a data set into the catalog and the memory")
    ingest.add_argument(
        "--data",
        type=Path,
        default=BUNDLED_DATA,
        help="data set folder (default: bundled Amazon Scientific)",
    )
    ingest.add_argument(
        "--refit",
        action="store_true",
        help="refit the catalog's ranking models even when the data did not change",
    )
    ingest.add_argument(
        "--home",
        type=Path,
        default=None,
        help="QueryAgent home (default: $QUERYAGENT_HOME or ~/.queryagent)",
    )
    ingest.set_defaults(func=_ingest)

    rec = sub.add_parser("recommend", help="recommend the next search query for a shopper")
    rec.add_argument("--user", required=True, help="shopper id (first column of user2index)")
    rec.add_argument("--json", action="store_true", help="print the graph's output as JSON")
    rec.add_argument(
        "--model",
        default=None,
        help="drafter: Hugging Face id, local folder or adapter (default: $QUERYAGENT_MODEL, else "
        "the shipped trained adapter models/smollm2-sft)",
    )
    rec.add_argument("--home", type=Path, default=None, help="QueryAgent home")
    rec.add_argument(
        "--max-refinements",
        type=int,
        default=Context.max_refinements,
        help="most refine rounds (0 = single turn)",
    )
    rec.add_argument("--seed", type=int, default=None, help="sampling seed")
    rec.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append the run's trajectory to FILE (JSONL, schema v1; FILE.meta.json beside it)",
    )
    rec.set_defaults(func=_recommend)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from agent.catalog import CatalogError
    from agent.drafting import DrafterError
    from agent.model_identity import ModelSourceError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (
        CliError,
        DataError,
        UnknownUserError,
        StoreError,
        HomeError,
        CatalogError,
        TrajectoryError,
        DrafterError,
        ModelSourceError,
    ) as exc:
        print(f"queryagent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
