"""``queryagent``: ingest a data set, recommend a query for a shopper.

    queryagent ingest [--data DIR] [--home DIR]
    queryagent recommend --user ID [--json] [--model ID_OR_PATH] [--home DIR]
                         [--log FILE | --cached]
    queryagent precompute [--users FILE] [--since TIMESTAMP] [--home DIR] [--model M | --no-model]
                          [--engine local|ray] [--log FILE]
    queryagent events add (--user ID --item ID [--time T] | --file events.jsonl) [--home DIR]

Argument parsing uses the standard library's argparse (maintained, no extra dependency).
Errors a user can cause (unknown user, bad data file, an id the store cannot key by, an oversized
input, empty or unreachable catalog, an interrupted ingest, a ``--model`` that cannot load, an
unwritable home, a store URL that names no database, a log file that is not a trajectory file or
whose folder is missing, a bad precompute request, a bad events line or an item the catalog does
not hold for ``events add``) print one line and exit 2. ``recommend``
checks the store, the shopper, the catalog and the model folder in that order, before any model is
loaded. ``--log FILE`` appends the run's trajectory (``graphs.trajectories``, schema v3, built from
the graph's output) to FILE and updates ``FILE.meta.json``. ``precompute`` and ``--cached``: see
``graphs.serving.precompute``; ``precompute --log FILE`` logs each computed run the same way, and
``--no-model`` runs recall and the learned check without a language model. ``events add``
appends purchases after each shopper's stored events (``graphs.serving.events``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from agent.context import Context
from agent.state import output_json
from graphs.safe_text import safe
from graphs.trajectories import (
    TrajectoryError,
    TrajectoryRecord,
    append_trajectories,
    check_appendable,
    record_from_output,
    run_stamp,
)
from graphs.validators import (
    OneLineArgumentParser,
    check_replacing,
    ingest_note,
    model_arg,
    positive_int,
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
from memory_store.paths import home_path, private_tree, queryagent_home

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

BUNDLED_DATA = Path(__file__).resolve().parent.parent / "data" / "amazon-scientific"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class CliError(Exception):
    """A user-caused problem: reported as one line, exit code 2."""


def _ingest(args: argparse.Namespace) -> int:
    from agent.catalog import ChromaCatalog
    from agent.model_identity import check_model
    from graphs.offline.ingest import ingest, served_fit

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
        dataset, open_store(args.home), catalog, fit=served_fit(args.home, force=args.refit)
    )
    weight_note = ""
    if not args.no_model:
        weight_note = _learn_model_weight(args, result.models)
    print(
        f"ingested {dataset.name}: {result.products} products in the catalog "
        f"({result.products_written} new or changed, {result.catalog_s:.1f} s), "
        f"{result.users} shoppers and {result.events} events into memory; "
        f"{len(result.models.vocab.queries)} catalog queries, ranking models "
        f"{'fitted' if result.fitted else 'unchanged'} ({result.fit_s:.1f} s); "
        f"{result.seconds:.1f} s in all; home {queryagent_home(args.home)}"
    )
    if weight_note:
        print(weight_note)
    return 0


def _learn_model_weight(args: argparse.Namespace, models: Any) -> str:
    """Learn the served model's weight in the check on this catalog now, so the first
    recommendation does not (``agent.nodes.learned_model_weight``)."""
    from agent.nodes import learned_model_weight
    from graphs.query_agent import default_deps

    drafter = default_deps(args.model, home=args.home).drafter
    learned = learned_model_weight(drafter, models)
    if learned is None:
        return ""
    if not learned.rows:
        return "model weight in the check: 0 (no held-out rows: the catalog is too small)"
    return f"model {drafter.name}: {learned.describe()}"


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
    if args.cached and _serve_cached(args, store, memory):
        return 0  # a stored answer needs neither the catalog nor the model
    # The catalog answers (server up, collection filled) before the model loads: a Chroma server
    # that is down costs a second, not a model load and a draft.
    ChromaCatalog.from_env(home=args.home).check()
    # ...and so do the catalog's fitted ranking models (a home ingested before they existed).
    from agent.ranking import served_dir
    from agent.ranking.fit import CatalogModels

    if not CatalogModels.exists(served_dir(args.home)):
        raise CliError(
            f"no fitted ranking models in {served_dir(args.home)}: run `queryagent ingest` "
            "(it fits them from the catalog's sequences)"
        )
    check_model(args.model)
    deps = default_deps(args.model, home=args.home)
    _load_model(deps.drafter, args.model)
    graph = build_graph(deps).compile(store=store, name="QueryAgent")
    inputs = {"user_id": args.user}
    # What the run's memory holds and which catalog it runs on, read before it starts: the
    # outcome join (`queryagent-train outcomes`) finds the purchases recorded after it.
    stamp = run_stamp(store, args.user) if args.log is not None else {}
    run_id, created = str(uuid4()), datetime.now(UTC).isoformat()
    t0 = time.perf_counter()
    config: RunnableConfig = {"run_id": UUID(run_id)}
    result = output_json(graph.invoke(inputs, config, context=context))
    latency = round(time.perf_counter() - t0, 3)
    if args.log is not None:
        record = record_from_output(
            result, inputs, model=deps.drafter.name, run_id=run_id, created=created, run=stamp
        )
        _log(args, record, deps.catalog, deps.drafter.name)
    if args.cached:  # none was stored: this one is, for the next call
        from graphs.serving.precompute import Versions, store_results

        entry = {args.user: _registry(store, args)}  # the memory this result was computed from
        store_results(store, [result], entry, Versions.current(store, deps.drafter.name))
        result["cached"] = False
    result["latency_s"] = latency
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_text(result, memory.profile(args.user))
        if args.cached:
            print("  no stored recommendation: computed now and stored")
        if args.log is not None:
            print(f"  trajectory appended to {args.log}")
    return 0


def _registry(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from memory_store import USERS_NAMESPACE

    item = store.get(USERS_NAMESPACE, args.user)
    return dict(item.value) if item is not None else {}


def _serve_cached(args: argparse.Namespace, store: Any, memory: UserMemory) -> bool:
    """Print the stored recommendation; False when there is none (the caller computes it)."""
    from graphs.serving.precompute import age_text, get_recommendation

    t0 = time.perf_counter()
    stored = get_recommendation(store, args.user)
    if stored is None:
        return False
    entry = _registry(store, args)
    stale = stored.get("memory") != {
        "n_events": int(entry.get("n_events", 0)),
        "revision": int(entry.get("revision", 0)),
    }
    result = {
        **stored,
        "cached": True,
        "age": age_text(stored["computed_at"]),
        "memory_changed_since": stale,
        "latency_s": round(time.perf_counter() - t0, 4),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return True
    _print_text(result, memory.profile(args.user))
    note = "; the memory changed since: run `queryagent precompute`" if stale else ""
    print(
        f"  cached: computed {result['age']} ({stored['computed_at']}) "
        f"with {safe(stored.get('model'))}{note}"
    )
    return True


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


def _log(args: argparse.Namespace, record: TrajectoryRecord, catalog: Any, model: str) -> None:
    meta = {
        "command": " ".join(sys.argv),
        "config": {
            "user": args.user,
            "model": args.model or model,
            "max_refinements": args.max_refinements,
            "seed": args.seed,
            "home": str(queryagent_home(args.home)),
        },
        "catalog": {
            "location": getattr(catalog, "location", None),
            "collection": getattr(catalog, "collection_name", None),
        },
    }
    append_trajectories(args.log, [record], meta)


def _precompute(args: argparse.Namespace) -> int:
    from functools import partial

    from graphs.serving.precompute import parse_since, precompute, read_users_file
    from graphs.query_agent import default_deps

    users = read_users_file(args.users) if args.users is not None else None
    since = parse_since(args.since) if args.since is not None else None
    try:
        context = Context(max_refinements=args.max_refinements, seed=args.seed)
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
    from agent.catalog import ChromaCatalog
    from agent.ranking import load_served
    from graphs.query_agent import Deps

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


def _events_add(args: argparse.Namespace) -> int:
    from agent.catalog import ChromaCatalog
    from graphs.serving.events import EventLine, add_purchases, read_events

    if args.file is not None:
        if args.user is not None or args.item is not None or args.time is not None:
            raise CliError("give either --file or --user/--item [--time], not both")
        lines = read_events(args.file)
    else:
        if args.user is None or args.item is None:
            raise CliError("events add needs --user and --item (or --file FILE)")
        lines = [("--user/--item", EventLine(user_id=args.user, item_id=args.item, time=args.time))]
    store = open_store(args.home)
    catalog = ChromaCatalog.from_env(home=args.home)
    catalog.check()
    t0 = time.perf_counter()
    result = add_purchases(store, catalog, lines)
    print(
        f"recorded {result.events} purchases of {result.shoppers} shoppers "
        f"({result.new_shoppers} new; {time.perf_counter() - t0:.1f} s); "
        f"home {queryagent_home(args.home)}"
    )
    return 0


def _print_text(result: dict[str, Any], profile: Any) -> None:
    # safe(): titles, brands, categories and ids come from data; no escape codes reach a terminal.
    print(f"shopper {safe(result['user_id'])}: {safe(profile.latent_identity)}")
    fit = result.get("fit")
    fit_text = f"{fit:.2f}" if fit is not None else "n/a"
    print(
        f"  recommended query: {result.get('query')!r}  (fit {fit_text}, "
        f"{result.get('refinements', 0)} refinements, source {result.get('source')}, "
        f"{result['latency_s']:.1f} s)"
    )
    for p in result.get("products", [])[:5]:
        title, brand = safe(p["title"][:80]), safe(p["brand"] or "-")
        print(f"    {p['rank']:>2}. {title}  [{brand}]  {p['score']:.3f}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="queryagent", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

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
    ingest.set_defaults(func=_ingest)

    # What every command that runs the agent takes (recommend, precompute).
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument(
        "--model",
        type=model_arg,
        default=None,
        help="drafter: Hugging Face id, local folder or adapter (default: $QUERYAGENT_MODEL, else "
        "the shipped trained adapter models/smollm2-sft-grounded)",
    )
    run.add_argument("--home", type=Path, default=None, help="QueryAgent home")
    run.add_argument(
        "--max-refinements",
        type=int,
        default=Context.max_refinements,
        help="most refine rounds (0 = single turn)",
    )
    run.add_argument("--seed", type=int, default=None, help="sampling seed")

    rec = sub.add_parser(
        "recommend", parents=[run], help="recommend the next search query for a shopper"
    )
    rec.add_argument("--user", required=True, help="shopper id (first column of user2index)")
    rec.add_argument("--json", action="store_true", help="print the graph's output as JSON")
    served = rec.add_mutually_exclusive_group()
    served.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append the run's trajectory to FILE (JSONL, schema v3; FILE.meta.json beside it)",
    )
    served.add_argument(
        "--cached",
        action="store_true",
        help="serve the recommendation `queryagent precompute` stored, and say how old it is "
        "(computed and stored now when there is none)",
    )
    rec.set_defaults(func=_recommend)

    pre = sub.add_parser(
        "precompute",
        parents=[run],
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
        type=positive_int,
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
    pre.set_defaults(func=_precompute)

    events = sub.add_parser("events", help="record shoppers' purchases into the live memory")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    add = events_sub.add_parser(
        "add",
        help="append purchases after each shopper's stored events",
        description="Appends purchases (one, or a JSONL file of {user_id, item_id, time?}) "
        "after each shopper's stored events; everything is checked before anything is written.",
    )
    add.add_argument("--user", default=None, help="shopper id")
    add.add_argument("--item", default=None, help="item id (must be in the served catalog)")
    add.add_argument(
        "--time", default=None, help="purchase time: ISO-8601 (naive = UTC) or Unix seconds"
    )
    add.add_argument(
        "--file",
        type=Path,
        default=None,
        metavar="FILE",
        help='JSON lines of {"user_id", "item_id", "time"?}, recorded in file order',
    )
    add.add_argument("--home", type=Path, default=None, help="QueryAgent home")
    add.set_defaults(func=_events_add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from agent.catalog import CatalogError
    from agent.drafting import DrafterError
    from agent.model_identity import ModelSourceError
    from agent.ranking import RankingMissingError
    from graphs.serving.events import EventsError
    from graphs.serving.precompute import PrecomputeError

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
        PrecomputeError,
        DrafterError,
        ModelSourceError,
        RankingMissingError,
        EventsError,
    ) as exc:
        print(f"queryagent: error: {safe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = "; run `queryagent ingest` again to finish it" if args.func is _ingest else ""
        print(f"queryagent: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:  # what libraries wrote into the home with the umask's modes becomes private
        private_tree(home_path(getattr(args, "home", None)))


if __name__ == "__main__":
    sys.exit(main())
