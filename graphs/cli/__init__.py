"""``queryagent``: ingest a data set, recommend a query for a shopper.

    queryagent ingest [--data DIR] [--home DIR]
    queryagent recommend --user ID [--json] [--model ID_OR_PATH] [--home DIR]
                         [--log FILE | --cached]
    queryagent precompute [--users FILE] [--since TIMESTAMP] [--home DIR] [--model M | --no-model]
                          [--engine local|ray] [--log FILE]
    queryagent events add (--user ID --item ID [--time T] | --file events.jsonl) [--home DIR]

One module per subcommand (``ingest``, ``recommend``, ``precompute``, ``events``), each with its
parser (``add_parser``) and its handler (``run``); ``common`` holds what they share. Argument
parsing uses the standard library's argparse (maintained, no extra dependency).
Errors a user can cause (unknown user, bad data file, an id the store cannot key by, an oversized
input, empty or unreachable catalog, an interrupted ingest, a ``--model`` that cannot load, an
unwritable home, a store URL that names no database, a log file that is not a trajectory file or
whose folder is missing, a bad precompute request, a bad events line or an item the catalog does
not hold for ``events add``) print one line and exit 2. ``recommend``
checks the store, the shopper, the catalog and the model folder in that order, before any model is
loaded. ``--log FILE`` appends the run's trajectory (``graphs.record``, schema v3, built from
the graph's output) to FILE and updates ``FILE.meta.json``. ``precompute`` and ``--cached``: see
``graphs.serving.precompute``; ``precompute --log FILE`` logs each computed run the same way, and
``--no-model`` runs recall and the learned check without a language model. ``events add``
appends purchases after each shopper's stored events (``graphs.serving.events``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.catalog import CatalogError
from agent.drafting import DrafterError
from agent.model_identity import ModelSourceError
from agent.ranking import RankingMissingError
from graphs.cli import events, ingest, precompute, recommend
from graphs.cli.common import BUNDLED_DATA, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from graphs.record import TrajectoryError
from graphs.safe_text import safe
from graphs.serving.events import EventsError
from graphs.serving.results import PrecomputeError
from graphs.validators import OneLineArgumentParser
from memory_store import DataError, HomeError, StoreError, UnknownUserError
from memory_store.paths import home_path, private_tree

__all__ = ["BUNDLED_DATA", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="queryagent", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (ingest, recommend, precompute, events):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        hint = "; run `queryagent ingest` again to finish it" if args.func is ingest.run else ""
        print(f"queryagent: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:  # what libraries wrote into the home with the umask's modes becomes private
        private_tree(home_path(getattr(args, "home", None)))
