"""What the ``queryagent`` subcommands share: the bundled data set, the exit codes, the user error,
and the options of every command that runs the agent (``recommend``, ``precompute``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.context import Context
from graphs.validators import model_arg, non_negative_int

__all__ = ["BUNDLED_DATA", "EXIT_INTERRUPTED", "EXIT_USAGE", "CliError", "agent_options"]

# This file is graphs/cli/common.py; the data folder is at the repository root.
BUNDLED_DATA = Path(__file__).resolve().parents[2] / "data" / "amazon-scientific"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class CliError(Exception):
    """A user-caused problem: reported as one line, exit code 2."""


def agent_options() -> argparse.ArgumentParser:
    """The options of every command that runs the agent, as a parent parser (``parents=[...]``)."""
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument(
        "--model",
        type=model_arg,
        default=None,
        help="the language model: Hugging Face id, local folder or adapter (default: "
        "$QUERYAGENT_MODEL, else the shipped writer adapter models/smollm2-writer)",
    )
    run.add_argument("--home", type=Path, default=None, help="QueryAgent home")
    run.add_argument(
        "--max-refinements",
        type=non_negative_int,
        default=Context.max_refinements,
        help="most refine rounds (0 = single turn)",
    )
    run.add_argument("--seed", type=int, default=None, help="sampling seed")
    run.add_argument(
        "--write-query",
        action=argparse.BooleanOptionalAction,
        default=Context.write_query,
        help="the model writes the query text the shopper sees for the intent, checked on what "
        "it retrieves (--no-write-query: the intent is shown and no model call is made)",
    )
    return run
