"""``queryagent recommend``: the next search query for one shopper, computed now or served from
what ``precompute`` stored (``--cached``); ``--log FILE`` appends the run's trajectory record.

Checks the store, the shopper, the catalog and the model folder in that order, before any model is
loaded."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from langchain_core.runnables import RunnableConfig

from agent.catalog import ChromaCatalog
from agent.context import Context
from agent.drafting import DrafterError
from agent.model_identity import check_model
from agent.ranking import served_dir
from agent.ranking.fit import CatalogModels
from agent.state import output_json
from graphs.cli.common import CliError, agent_options
from graphs.query_agent import build_graph, default_deps
from graphs.record import (
    TrajectoryRecord,
    append_trajectories,
    check_appendable,
    record_from_output,
    run_stamp,
)
from graphs.safe_text import safe
from graphs.serving.precompute import age_text
from graphs.serving.results import Versions, get_recommendation, store_results
from memory_store import USERS_NAMESPACE, UserMemory, open_store
from memory_store.paths import queryagent_home

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rec = sub.add_parser(
        "recommend", parents=[agent_options()], help="recommend the next search query for a shopper"
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
    rec.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        context = Context(
            max_refinements=args.max_refinements, seed=args.seed, write_query=args.write_query
        )
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
    if not CatalogModels.exists(served_dir(args.home)):
        raise CliError(
            f"no fitted ranking models in {served_dir(args.home)}: run `queryagent ingest` "
            "(it fits them from the catalog's sequences)"
        )
    check_model(args.model)
    deps = default_deps(args.model, home=args.home)
    assert deps.drafter is not None  # default_deps always builds one
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
    item = store.get(USERS_NAMESPACE, args.user)
    return dict(item.value) if item is not None else {}


def _serve_cached(args: argparse.Namespace, store: Any, memory: UserMemory) -> bool:
    """Print the stored recommendation; False when there is none (the caller computes it)."""
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


def _print_text(result: dict[str, Any], profile: Any) -> None:
    # safe(): titles, brands, categories and ids come from data; no escape codes reach a terminal.
    print(f"shopper {safe(result['user_id'])}: {safe(profile.latent_identity)}")
    fit = result.get("fit")
    fit_text = f"{fit:.2f}" if fit is not None else "n/a"
    # The query the shopper sees (the model's text, or the intent's own); results stored before
    # the text existed have the intent alone.
    text = result.get("query_text") or result.get("query")
    check = (
        f"(fit {fit_text}, {result.get('refinements', 0)} refinements, "
        f"source {safe(result.get('source'))}"
    )
    if result.get("text_source") == "model":  # the model's text for the intent: both lines
        print(
            f"  recommended query: {safe(repr(text))}  (written by the model, "
            f"{result.get('rewrites', 0)} rewrites, {result['latency_s']:.1f} s)"
        )
        print(f"  intent: {safe(repr(result.get('query')))}  {check})")
    else:  # the intent is what the shopper sees
        print(f"  recommended query: {safe(repr(text))}  {check}, {result['latency_s']:.1f} s)")
        written = [t.get("text") for t in result.get("texts") or [] if t.get("text")]
        if written:  # the model wrote, and the check kept the intent's own page
            print(
                f"  model's text: {safe(repr(written[-1]))}  (not kept: its products fit the "
                "intent and the shopper worse than the intent's own)"
            )
    for p in result.get("products", [])[:5]:
        title, brand = safe(p["title"][:80]), safe(p["brand"] or "-")
        print(f"    {p['rank']:>2}. {title}  [{brand}]  {p['score']:.3f}")
