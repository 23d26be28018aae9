"""``queryagent events add``: record shoppers' purchases into the live memory
(``graphs.serving.events``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agent.catalog import ChromaCatalog
from agent.search import FusedSearch, search_dir
from graphs.cli.common import CliError
from graphs.serving.events import EventLine, add_purchases, read_events
from memory_store import open_store
from memory_store.paths import queryagent_home

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    add.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    # The fused search's popularity prior counts the new purchases (queries the ingest did not
    # cache see them at once; the cached vocabulary pages and the ranking models at the next
    # ingest).
    folder = search_dir(args.home, catalog.collection_name)
    if FusedSearch.exists(folder):
        FusedSearch.count_purchases(folder, [line.item_id for _, line in lines])
    print(
        f"recorded {result.events} purchases of {result.shoppers} shoppers "
        f"({result.new_shoppers} new; {time.perf_counter() - t0:.1f} s); "
        f"home {queryagent_home(args.home)}"
    )
    return 0
