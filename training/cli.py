"""``queryagent-train``: evaluate methods against the baselines, export trajectories, train.

    queryagent-train eval --data data/amazon-scientific --split test --limit 1000 \
        --methods popular,last-category,swing,dense-query,llm-direct,agent-single-turn,agent \
        --out reports/test.json [--model ID_OR_PATH] [--seed 0] [--shard-id K --shard-num N]
    queryagent-train sft --config recipes/writer-sft.yaml [--any SFTConfig field ...]
    queryagent-train write-grpo --config recipes/writer-grpo-cpu.yaml [--any GRPOConfig field ...]
    queryagent-train grpo --data DIR --model DIR [--any GRPOConfig field ...]   (the drafting role)
    queryagent-train outcomes --from-trajectories runs.jsonl [--home DIR] --out joined.jsonl \
        [--replay-model M ...] [--replay-limit N]

``eval`` writes ``report.json``, ``report.md`` and ``report.png``; per-method results are cached
in ``report.cache/`` so an interrupted run resumes. ``eval`` and ``export`` parse with argparse;
the trainers parse with ``trl.TrlParser`` (``training.common``), so ``sft``/``grpo`` hand the
rest of the command line to their own parser, as the ``trl`` command does. ``outcomes``
(``training.outcomes``) joins logged runs with the purchases recorded after them. User errors
print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.catalog import CatalogError
from agent.drafting import DrafterError, resolve_model
from agent.model_identity import ModelSourceError, check_model
from agent.search import DEFAULT_SEARCH, SEARCH_MODES
from graphs.record import TrajectoryError, code_version, load_trajectories, write_trajectories
from graphs.validators import (
    OneLineArgumentParser,
    leave_process,
    model_arg,
    non_negative_int,
    positive_int,
)
from memory_store import DataError, HomeError, StoreError, load_dataset, open_store
from training.common import TrainingError, update_card_evaluation
from training.evaluation.report import markdown_table, method_rows, paired_reference, write_report
from training.evaluation.runner import METHODS, EvalConfig, EvalError, Evaluator, parse_methods
from training.export import add_parser as add_export_parser
from training.outcomes import (
    check_outcome_paths,
    join_outcomes,
    live_metrics,
    metrics_line,
    replay,
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
# Subcommands whose flags TrlParser reads: the module's main(argv, prog) runs them.
# Each maps to its module (``training.<module>``, whose ``main(argv, prog)`` runs it).
TRAINERS = {
    "sft": "SFT cold start of the writer (--role write, the default) or the drafter "
    "(--role draft) (TRL SFTConfig flags; --config recipes/writer-sft.yaml)",
    "write-grpo": "GRPO of the writer on what its text retrieves (GRPOConfig flags; "
    "--config recipes/writer-grpo-cpu.yaml)",
    "grpo": "GRPO/GDPO of the drafter, the graph as the rollout (GRPOConfig flags; "
    "--from_trajectories for logged runs)",
}
TRAINER_MODULES = {"sft": "sft", "write-grpo": "writer.grpo", "grpo": "grpo"}


def _eval(args: argparse.Namespace) -> int:
    # Fail on a bad name or a model folder that cannot load before loading anything.
    default_model = resolve_model(args.model, args.home).name
    specs = parse_methods(args.methods, default_model)
    reference = paired_reference([s.label for s in specs], args.paired_against, default_model)
    for model in dict.fromkeys(spec.model for spec in specs if spec.model):
        check_model(model)
    if args.limit is not None and args.limit < 1:
        raise EvalUsageError(f"--limit must be >= 1, got {args.limit}")
    if args.cached_only and args.cards:
        raise EvalUsageError("--cards writes complete tables only; drop it with --cached-only")
    sharded = args.shard_num != 1 or args.shard_id != 0
    if args.shard_num < 1 or not 0 <= args.shard_id < args.shard_num:
        raise EvalUsageError(
            f"--shard-id {args.shard_id} --shard-num {args.shard_num}: "
            "expected --shard-num >= 1 and 0 <= --shard-id < --shard-num"
        )
    if sharded and (args.cached_only or args.cards):
        flag = "--cached-only" if args.cached_only else "--cards"
        raise EvalUsageError(f"a shard runs its users and reports nothing; drop {flag}")
    dataset = load_dataset(args.data)
    config = EvalConfig.from_args(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    cache_dir = args.cache or out.with_suffix(".cache")
    evaluator = Evaluator(dataset, config, cache_dir=cache_dir)
    in_split = evaluator.restrict_to_cached(specs) if args.cached_only else None
    if sharded:
        # A shard's rows are a slice of the split: it writes no report (one would look like the
        # whole table); the run without shard flags, or --cached-only, reports all the shards.
        in_split = evaluator.restrict_to_shard(args.shard_id, args.shard_num)
        for spec in specs:
            evaluator.run(spec)
        print(
            f"shard {args.shard_id} of {args.shard_num}: {len(evaluator.pairs)} of {in_split} "
            f"users cached in {cache_dir}; when every shard is done, the same command without "
            "--shard-id/--shard-num reports them (--cached-only looks before)"
        )
        return 0
    results = [evaluator.run(spec) for spec in specs]
    header = {
        "command": " ".join(sys.argv),
        "config": vars(config),
        "code_version": code_version(),
        "data_name": dataset.name,
        "split": args.split,
        "users": len(evaluator.pairs),
        "skipped_no_category": evaluator.skipped,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if in_split is not None:
        # A partial look: the rows cover the users every method has cached so far.
        header["cached_only"] = {"users_in_split": in_split, "cache": str(cache_dir)}
    paths = write_report(out, header, results, paired_against=reference)
    print(paths["md"].read_text())
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    if args.cards:
        for folder in _update_cards(specs, results, header, paths["json"]):
            print(f"updated the evaluation in {folder / 'README.md'}")
    return 0


def _update_cards(specs: Sequence[Any], results: Sequence[Any], header: dict, report: Path) -> list:
    """Write each evaluated model folder's rows (with the methods that use no model) into the
    ``## Evaluation`` section of its model card."""
    rows = method_rows(results)
    baselines = {k: v for k, v in rows.items() if v["model"] is None}
    updated = []
    for model in dict.fromkeys(s.model for s in specs if s.model and Path(s.model).is_dir()):
        own = {k: v for k, v in rows.items() if v["model"] == model}
        text = (
            f"`queryagent-train eval` on {header['users']} {header['data_name']} "
            f"{header['split']} shoppers (`{report}`; the command and code version are in it): "
            "mean with its 95% bootstrap interval.\n\n" + markdown_table({**baselines, **own})
        )
        if update_card_evaluation(Path(model), text):
            updated.append(Path(model))
    return updated


class EvalUsageError(Exception):
    pass


def _outcomes(args: argparse.Namespace) -> int:
    for model in args.replay_model or []:
        check_model(model)  # a replay model that cannot load fails before the join
    if args.replay_limit is not None and args.replay_limit < 1:
        raise EvalUsageError(f"--replay-limit must be >= 1, got {args.replay_limit}")
    if not args.out.parent.is_dir():  # before anything is read
        raise EvalUsageError(f"--out {args.out}: folder {args.out.parent} does not exist")
    check_outcome_paths(args.from_trajectories, args.out, args.home)
    records = load_trajectories(args.from_trajectories)
    result = join_outcomes(records, open_store(args.home))
    for line in result.summary():
        print(line)
    meta = {
        "command": " ".join(sys.argv),
        "config": {"from_trajectories": str(args.from_trajectories), "home": str(args.home)},
        "joined_from": str(args.from_trajectories),
        "skipped": {
            "no_later_purchase": result.no_later,
            "memory_rebuilt": result.rebuilt,
            "unknown_user": result.unknown_user,
            "no_memory_stamp": result.unstamped,
        },
    }
    write_trajectories(args.out, result.records, meta)
    print(f"wrote {len(result.records)} joined runs to {args.out}")
    if not result.records:
        return 0
    print(metrics_line("logged runs", live_metrics(result.records)))
    sample = result.records[: args.replay_limit] if args.replay_limit else result.records
    if args.replay_model and len(sample) < len(result.records):
        print(metrics_line("logged runs, the replayed ones", live_metrics(sample)))
    for model in args.replay_model or []:
        t0 = time.perf_counter()
        again = replay(sample, model, args.home, max_refinements=args.replay_max_refinements)
        label = f"replayed with {model}"
        print(f"{metrics_line(label, live_metrics(again))}; {time.perf_counter() - t0:.0f} s")
        if args.replay_out is not None:
            out = args.replay_out.with_name(f"{args.replay_out.stem}-{Path(model).name}.jsonl")
            write_trajectories(out, again, {**meta, "replayed_with": model})
    return 0


def _add_eval_parser(sub: Any) -> None:
    """``eval``: the methods, the shoppers and the report."""
    ev = sub.add_parser("eval", help="offline evaluation against the baselines")
    ev.add_argument(
        "--data",
        type=Path,
        required=True,
        help="data set folder (UniSRec files or products.jsonl + sequences.jsonl)",
    )
    ev.add_argument(
        "--split", default="test", choices=["valid", "test"], help="leave-one-out split"
    )
    ev.add_argument(
        "--limit", type=int, default=None, help="evaluate this many users (a seeded sample)"
    )
    ev.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma list of {', '.join(METHODS)}; a model method may name a model: agent@PATH",
    )
    ev.add_argument(
        "--model",
        type=model_arg,
        default=None,
        help="drafter for model methods named without @ (default: $QUERYAGENT_MODEL, else the "
        "shipped adapter; HuggingFaceTB/SmolLM2-135M-Instruct is the untrained base)",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        help="users whose model calls are batched together",
    )
    ev.add_argument(
        "--max-refinements",
        type=non_negative_int,
        default=2,
        help="refinement budget of the full agent",
    )
    ev.add_argument(
        "--search",
        choices=SEARCH_MODES,
        default=DEFAULT_SEARCH,
        help="the catalog search every method's products come from: 'fused' (the default, "
        "fitted on the purchases before the split's targets) or 'dense' (MiniLM alone, the "
        "earlier search)",
    )
    ev.add_argument(
        "--write-query",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the agent's model writes the query text the shopper sees, as in the product (I_Hit "
        "and Cons@K come from the text's results; --no-write-query: the text is the intent)",
    )
    ev.add_argument(
        "--paired-against",
        default=None,
        metavar="METHOD",
        help="the method every other is paired against in the report's sign tests, as "
        "--methods names it, or 'none' (default: ranker when it is evaluated)",
    )
    ev.add_argument(
        "--out",
        type=Path,
        default=Path("report.json"),
        help="report path (.json; .md and .png beside it)",
    )
    ev.add_argument(
        "--home", type=Path, default=None, help="QueryAgent home (catalog, converted models)"
    )
    _add_eval_sitting_flags(ev)
    ev.set_defaults(func=_eval)


def _add_eval_sitting_flags(ev: argparse.ArgumentParser) -> None:
    """``eval``'s flags for a run in sittings or shards: the cache, a partial look, the cards."""
    ev.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="per-user results cache, which an interrupted run resumes from (default: the "
        "report path with .cache)",
    )
    ev.add_argument(
        "--cached-only",
        action="store_true",
        help="run nothing: report the users every method already has in the cache (a partial "
        "look at a run that goes on in sittings; the report says how many of the split's users)",
    )
    ev.add_argument(
        "--shard-id",
        type=int,
        default=0,
        help="run only this shard's users (every --shard-num-th from this one), appending to the "
        "shared cache; several processes or machines split a long run this way",
    )
    ev.add_argument(
        "--shard-num", type=int, default=1, help="how many shards the users are split into"
    )
    ev.add_argument(
        "--cards",
        action="store_true",
        help="write each evaluated model folder's table into its model card (README.md)",
    )


def _add_outcomes_parser(sub: Any) -> None:
    oc = sub.add_parser(
        "outcomes",
        help="join logged runs with the shopper's next purchase; print their live metrics",
        description="Joins each logged run (recommend/precompute --log) with the shopper's first "
        "purchase recorded after the events its memory held, writes the joined records (the "
        "purchase as each record's target) and prints the runs' live hit@10 and query match.",
    )
    oc.add_argument(
        "--from-trajectories",
        "--from_trajectories",
        type=Path,
        required=True,
        metavar="FILE",
        help="logged runs (JSONL, schema v3; v1, v2 files load converted)",
    )
    oc.add_argument(
        "--out", type=Path, required=True, help="joined records (JSONL; .meta.json beside it)"
    )
    oc.add_argument(
        "--home", type=Path, default=None, help="the QueryAgent home the runs were logged on"
    )
    oc.add_argument(
        "--replay-model",
        type=model_arg,
        action="append",
        default=None,
        metavar="MODEL",
        help="run the joined shoppers again at the memory each run held with this drafter, and "
        "print its live metrics (repeatable: before/after of a retrained model)",
    )
    oc.add_argument(
        "--replay-limit", type=int, default=None, help="replay only the first N joined runs"
    )
    oc.add_argument(
        "--replay-max-refinements",
        type=int,
        default=0,
        help="refinement budget of the replayed runs (default 0: single turn)",
    )
    oc.add_argument(
        "--replay-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write each replay's records to FILE-<model folder name>.jsonl",
    )
    oc.set_defaults(func=_outcomes)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="queryagent-train", description="Evaluate and train QueryAgent's drafter."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_eval_parser(sub)
    add_export_parser(sub)
    _add_outcomes_parser(sub)
    _add_trainer_parsers(sub)
    return parser


def _add_trainer_parsers(sub: Any) -> None:
    """The trainers parse their own flags (TrlParser); listed here for --help."""
    for name, text in TRAINERS.items():
        sub.add_parser(name, help=text, add_help=False)


def main(argv: Sequence[str] | None = None) -> int:
    standalone = argv is None  # this process is the command (not a test calling main)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINERS:
        # By name, when asked for: a trainer's module imports trl (torch, transformers).
        trainer = importlib.import_module(f"training.{TRAINER_MODULES[argv[0]]}")
        try:
            return int(trainer.main(argv[1:], prog=f"queryagent-train {argv[0]}"))
        except KeyboardInterrupt:
            print(
                f"queryagent-train {argv[0]}: interrupted; the checkpoints saved so far are kept: "
                "add --resume to continue from the last one",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
    args = build_parser().parse_args(argv)
    if standalone and args.func is _eval:
        # Leave at the first Ctrl-C: a KeyboardInterrupt would first wait, silently, for the
        # running chunk's graphs (minutes on the bundled data). The cache is appended whole
        # lines per write, so what was written stays, and the same command resumes.
        signal.signal(signal.SIGINT, _leave_eval)
    try:
        # Every subcommand's --model is checked before its data loads or a model does.
        check_model(getattr(args, "model", None))
        return int(args.func(args))
    except (
        DataError,
        EvalError,
        EvalUsageError,
        TrajectoryError,
        DrafterError,
        ModelSourceError,
        CatalogError,
        StoreError,
        HomeError,
        TrainingError,
    ) as exc:
        print(f"queryagent-train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if standalone:  # a further Ctrl-C while leaving would break the one line (a traceback)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        hint = "; the shoppers done so far are cached: the same command resumes"
        print(f"queryagent-train: interrupted{hint if args.func is _eval else ''}", file=sys.stderr)
        if standalone:  # the graphs' threads and the drafter's may still run: no interpreter
            leave_process(EXIT_INTERRUPTED)  # shutdown, whose join a Ctrl-C ends (134 otherwise)
        return EXIT_INTERRUPTED


def _leave_eval(_signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C must not break the line
    print(
        "queryagent-train: interrupted; the shoppers done so far are cached: the same command "
        "resumes",
        file=sys.stderr,
    )
    leave_process(EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
