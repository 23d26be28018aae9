"""The tables of README.md and docs/*.md, written from the reports they name.

Launch: ``python -m training.evaluation.tables`` (or ``make docs``) rewrites every table between
marker comments; ``--check`` writes nothing and exits 1 with one line naming the first table
that differs from its report. A marker names its source and options::

    <!-- table: reports/scientific-test.json columns=q_em,cons@10 rows=ranker -->
    | method | q_em | cons@10 |
    ...
    <!-- /table -->

Sources, by shape: an evaluation report (``reports/*.json``, written by
``training.evaluation.report``: one row per method, cells as the report's own markdown table
formats them; with ``kind=paired``, its paired sign tests instead, below), a training run's
``metrics.jsonl`` (its held-out rows, ``steps=0,10,...``, or its per-step rows in blocks,
``blocks=1-25,51-75``), and the bench's ``recommend.json`` and ``servers.json``. Paths are
relative to the repository root.

The paired tests of an evaluation report (its ``paired`` field: each method against one
reference, ``ranker`` by default, over the shoppers both scored)::

    <!-- table: reports/scientific-test.json kind=paired rows=agent@smollm2-writer -->
    | against ranker | other query | Q_EM better / worse (p) | I_Hit@10 better / worse (p) | ...
    ...
    <!-- /table -->

``rows=`` picks methods (default: all), ``columns=`` the tests among ``q_em``, ``i_hit@10``,
``cons@10`` (the default three) and ``i_hit@10_equal_q_em`` (I_Hit@10 over the shoppers whose
Q_EM is the same). A cell is better / worse (the two-sided sign test's p); "other query" counts
the shoppers whose query is not the reference's. A report without the field (written before
it, or with ``--paired-against none``) renders one line saying so.

Standard library only, so the docs can be regenerated and checked without the project's
dependencies (importing ``training.evaluation.report`` would pull in scipy and ir-measures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.evaluation.columns import TABLE_METRICS, TEXT_METRICS

ROOT = Path(__file__).resolve().parents[2]
# A marker, the generated table, the closing marker. The table is everything in between.
MARKER = re.compile(
    r"^<!-- table: (?P<source>\S+)(?P<options>(?: \S+=\S+)*) -->\n(?P<body>.*?)^<!-- /table -->$",
    re.MULTILINE | re.DOTALL,
)
# The columns of the report's own markdown table, then the distinct-queries share.
REPORT_COLUMNS = (*TABLE_METRICS, "distinct")
HELDOUT_COLUMNS = ("query_reward", "item_reward", "rank_reward", "distinct_queries")
HEADERS = {
    "distinct": "distinct queries / users",
    "latency_s": "s / shopper",
    "i_hit@10_right": "I_Hit@10 where Q_EM",
    "text_words": "text words",
    "text_differs": "text differs from intent",
    "query_reward": "query reward",
    "item_reward": "item reward",
    "rank_reward": "rank reward",
    "distinct_queries": "distinct picks / shoppers",
}


class TableError(Exception):
    """A marker that names a missing source, an unknown column or an unknown option."""


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [_row(head), "|" + "---|" * len(head)] + [_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def _split(value: str | None) -> list[str] | None:
    return value.split(",") if value else None


def report_table(report: dict[str, Any], options: dict[str, str]) -> str:
    """One row per method of an evaluation report; cells as ``report.markdown_table`` writes."""
    columns = _split(options.get("columns")) or list(REPORT_COLUMNS)
    methods: dict[str, Any] = report["methods"]
    labels = _split(options.get("rows")) or list(methods)
    rows = []
    for label in labels:
        if label not in methods:
            raise TableError(f"no method {label!r} in the report (it has {', '.join(methods)})")
        result = methods[label]
        cells = [label]
        for name in columns:
            if name == "distinct":
                cells.append(f"{result['distinct_ratio']:.3f}")
                continue
            if name in TEXT_METRICS and name not in result["metrics"]:
                cells.append("n/a")  # a report from before the query text
                continue
            if name not in result["metrics"]:
                raise TableError(f"no metric {name!r} in the report")
            m = result["metrics"][name]
            if name == "latency_s":
                cells.append(f"{m['mean']:.3f}")
            elif name in ("refinements", "text_words"):
                cells.append(f"{m['mean']:.2f}")
            else:
                cells.append(f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]")
        rows.append(cells)
    return _table(["method"] + [HEADERS.get(c, c) for c in columns], rows)


PAIRED_COLUMNS = ("q_em", "i_hit@10", "cons@10")
PAIRED_HEADERS = {
    "q_em": "Q_EM better / worse (p)",
    "i_hit@10": "I_Hit@10 better / worse (p)",
    "cons@10": "Cons@10 better / worse (p)",
    # training.evaluation.metrics.HIT_AT_EQUAL_Q_EM
    "i_hit@10_equal_q_em": "I_Hit@10 at equal Q_EM better / worse (p)",
}
NO_PAIRED = (
    "This report has no paired tests (written before they were a report field, or run without a "
    "reference).\n"
)


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def paired_table(report: dict[str, Any], options: dict[str, str]) -> str:
    """The report's paired sign tests (``training.evaluation.metrics.paired_tests``), one row per
    method: the shoppers whose query differs from the reference's, then better / worse (p)."""
    paired = report.get("paired")
    if not paired or not paired.get("methods"):
        return NO_PAIRED
    columns = _split(options.get("columns")) or list(PAIRED_COLUMNS)
    for name in columns:
        if name not in PAIRED_HEADERS:
            raise TableError(f"no paired test {name!r} (tests: {', '.join(PAIRED_HEADERS)})")
    methods: dict[str, Any] = paired["methods"]
    labels = _split(options.get("rows")) or list(methods)
    rows = []
    for label in labels:
        if label not in methods:
            raise TableError(
                f"no paired test of {label!r} in the report (it has {', '.join(methods)})"
            )
        entry = methods[label]
        cells = [label, f"{entry['differs']:,}"]
        for name in columns:
            test = entry[name]
            cells.append(f"{test['better']:,} / {test['worse']:,} ({_p(test['p'])})")
        rows.append(cells)
    head = [f"against {paired['reference']}", "other query"]
    return _table(head + [PAIRED_HEADERS[c] for c in columns], rows)


def heldout_table(lines: list[dict[str, Any]], options: dict[str, str]) -> str:
    """The held-out curve of a training run's ``metrics.jsonl``, one row per scored step."""
    columns = _split(options.get("columns")) or list(HELDOUT_COLUMNS)
    by_step: dict[int, dict[str, Any]] = {}
    for line in lines:
        if any(k.startswith("heldout/") for k in line):
            by_step[line["step"]] = line  # a resumed run's later row for a step wins
    steps = [int(s) for s in _split(options.get("steps")) or []] or sorted(by_step)
    rows = []
    for step in steps:
        if step not in by_step:
            raise TableError(f"no held-out row at step {step}")
        cells = [str(step)]
        for name in columns:
            value = by_step[step].get(f"heldout/{name}")
            if value is None:
                raise TableError(f"no held-out value {name!r} at step {step}")
            cells.append(f"{value:.2f}" if name == "distinct_queries" else f"{value:.3f}")
        rows.append(cells)
    return _table(["step"] + [HEADERS.get(c, c) for c in columns], rows)


def _kl(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def blocks_table(lines: list[dict[str, Any]], options: dict[str, str]) -> str:
    """A training run's per-step metrics in blocks of steps (``blocks=1-25,51-75``): the reward
    terms' and the distinct queries' means, and the KL estimate's median and max."""
    by_step = {line["step"]: line for line in lines if "loss" in line}  # training rows only
    rows = []
    for block in _split(options["blocks"]) or []:
        first, last = (int(s) for s in block.split("-"))
        steps = [by_step[s] for s in range(first, last + 1) if s in by_step]
        if not steps:
            raise TableError(f"no training rows in steps {block}")

        def mean(key: str, steps: list[dict[str, Any]] = steps) -> float:
            return sum(s[key] for s in steps) / len(steps)

        kl = sorted(s["kl"] for s in steps)
        median = (kl[(len(kl) - 1) // 2] + kl[len(kl) // 2]) / 2
        cells = [f"{first}-{steps[-1]['step']}"]
        cells += [f"{mean(f'rewards/{t}_reward/mean'):.3f}" for t in ("query", "item", "rank")]
        cells += [f"{median:.2f}", _kl(kl[-1]), f"{mean('rollout/distinct_queries'):.2f}"]
        rows.append(cells)
    head = ["steps", "query reward", "item reward", "rank reward", "KL median", "KL max"]
    return _table(head + ["distinct queries / rollouts"], rows)


def recommend_table(bench: dict[str, Any], options: dict[str, str]) -> str:
    """``bench.recommend``'s figures: latency, where the time goes, throughput."""
    seq, prof = bench["sequential"], bench["profile"]
    nodes = prof["nodes_per_run_s"]
    rows = [
        [
            "`recommend` latency, one shopper at a time (model loaded)",
            f"p50 {seq['p50_s']:.2f} s, p95 {seq['p95_s']:.2f} s, mean {seq['mean_s']:.2f} s, "
            f"{seq['mean_refinements']:.2f} refinements on average",
        ],
        [
            "where a run's time goes (per run)",
            f"inside the language model {prof['per_run_s']['model_s']:.2f} s "
            f"({100 * prof['share']['model']:.1f}%): "
            + ", ".join(
                f"`{name}` {nodes[name]:.2f} s"
                for name in ("draft_query", "refine_query", "write_query", "rewrite_query")
                if nodes.get(name, 0.0) >= 0.005
            )
            + "; the check "
            f"{prof['per_run_s']['check_s']:.3f} s, other node work "
            f"{prof['per_run_s']['other_node_work_s']:.3f} s, graph overhead "
            f"{prof['per_run_s']['graph_overhead_s']:.3f} s",
        ],
        ["throughput, one at a time", f"{seq['users_per_min']:.1f} shoppers per minute"],
    ]
    for b in bench["batched"]:
        rows.append(
            [
                f"throughput through `OfflineRunner` (`graph.batch`), batch {b['batch_size']}",
                f"{b['users_per_min']:.1f} shoppers per minute; prompts per model call: "
                f"{b['mean_prompts_per_model_call']}",
            ]
        )
    return _table(["what", "figure"], rows)


def servers_table(bench: dict[str, Any], options: dict[str, str]) -> str:
    """``bench.servers``'s figures: the embedded stores against a Chroma server and PostgreSQL."""

    def concurrent(c: dict[str, Any]) -> str:
        return f"{c['wall_s']:.2f} s for {c['runs']} runs, {c['writes_checked']} writes checked"

    rows = [
        [
            "`queryagent ingest` of the bundled set, catalog + memory",
            f"{bench['ingest_embedded_s']:.1f} s",
            f"{bench['ingest_servers_s']:.1f} s",
        ],
        [
            "the memory alone (`UserMemory.ingest_dataset`)",
            f"{bench['memory_ingest_sqlite_s']:.1f} s",
            f"{bench['memory_ingest_postgres_s']:.1f} s",
        ],
        [
            "concurrent graph runs on one store (recall and the check, no drafter)",
            concurrent(bench["concurrent_sqlite"]),
            concurrent(bench["concurrent_postgres"]),
        ],
    ]
    head = ["what", "embedded (`PersistentClient` + SQLite)", "servers (`chroma run` + PostgreSQL)"]
    return _table(head, rows)


def search_calibration_table(bench: dict[str, Any], options: dict[str, str]) -> str:
    """``bench.search_calibration``'s figures: I_Hit@10 given the right query, per search variant
    (rows) and split (columns: ``valid`` tunes the fused weights, ``test`` only reports)."""
    splits = [name for name in ("valid", "test") if name in bench["splits"]]

    def cell(split: str, variant: str) -> str:
        ci = bench["splits"][split]["i_hit_at_10_given_the_right_query"].get(variant)
        return "" if ci is None else f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"

    variants = list(bench["splits"][splits[0]]["i_hit_at_10_given_the_right_query"])
    head = ["search, given the right query"] + [
        f"{name} ({bench['splits'][name]['shoppers']:,} shoppers)" for name in splits
    ]
    return _table(head, [[v] + [cell(name, v) for name in splits] for v in variants])


def next_item_table(bench: dict[str, Any], options: dict[str, str]) -> str:
    """``bench.next_item``'s runs: HR@10 and NDCG@10 on ``valid`` and the fit's time, one row per
    configuration; the one ``FitConfig`` ships is marked (default), the first run is today's
    before the change (before)."""
    default = bench.get("default_fit", {})
    rows = []
    for label, run in bench["variants"].items():
        cfg = run["config"]
        shipped = (
            cfg == default.get("nextitem")
            and run.get("refit_epochs") == default.get("refit_epochs")
            and run.get("text_init")
        )
        if "(" in label:  # "(<commit>: padding attended, ...)": a run before padding was masked
            name = "padding attended"
        elif label == "before":
            name = "before"
        else:
            name = "default" if shipped else ""
        rows.append(
            [
                name,
                "yes" if run.get("text_init") else "no",
                f"{cfg['epochs']} + {run.get('refit_epochs')}",
                str(cfg["batch_size"]),
                f"{cfg['lr']:g}",
                str(cfg["dim"]),
                f"{run['hr@10']:.3f}",
                f"{run['ndcg@10']:.3f}",
                f"{run['fit_s']:.0f}",
            ]
        )
    keep = _split(options.get("rows"))  # e.g. rows=before,default
    if keep:
        rows = [r for r in rows if r[0] in keep]
    head = ["run", "text start", "epochs (fit + refit)", "batch", "lr", "dim", "HR@10", "NDCG@10"]
    return _table([*head, "fit s"], rows)


def factorized_check_table(bench: dict[str, Any], options: dict[str, str]) -> str:
    """``bench.factorized_check``: per g, Q_EM and Cons@10 with the sign test against g 0, for
    each split measured (``valid`` chooses g, ``test`` reports)."""
    runs = [bench[k] for k in ("valid/fused", "test/fused") if k in bench]
    head = ["g"]
    for run in runs:
        name = f"{run['split']} ({run['shoppers']:,})"
        head += [f"{name} Q_EM", "vs g 0", f"{name} Cons@10", "vs g 0"]

    def versus(entry: dict[str, Any]) -> str:
        if not entry["better"] and not entry["worse"]:
            return ""
        return f"{entry['better']} / {entry['worse']} (p {entry['p']:.2f})"

    rows = []
    for g in runs[0]["gains"]:
        cells = [g]
        for run in runs:
            e = run["gains"][g]
            cells += [
                f"{e['q_em']:.4f}",
                versus(e["q_em vs g=0"]),
                f"{e['cons@10']:.4f}",
                versus(e["cons@10 vs g=0"]),
            ]
        rows.append(cells)
    return _table(head, rows)


def graph_batch_table(bench: dict[str, Any], options: dict[str, str]) -> str:
    """``bench.recommend --sections graph_batch``: one at a time against one ``graph.batch``."""
    gb = bench["graph_batch"]
    one, batch = gb["one_at_a_time"], gb["batch"]
    split = gb.get("model_split") or {}
    rows = [
        [
            f"one at a time (`graph.invoke` x {gb['users']})",
            f"{one['wall_s']:.2f} s; p50 {one['p50_s']:.3f} s, p95 {one['p95_s']:.3f} s; "
            f"{one['model_calls']} model calls",
        ],
        [
            f"`graph.batch` of {gb['users']}",
            f"{batch['wall_s']:.2f} s; {batch['model_calls']} model calls "
            f"({', '.join(str(n) for n in batch['prompts_per_call'])} prompts)",
        ],
        ["batch against one at a time", f"{gb['ratio']:.2f}x"],
        [
            "1-minute load average before / after",
            f"{gb['load_avg_before'][0]:.1f} / {gb['load_avg_after'][0]:.1f}",
        ],
    ]
    for name, label in (("one_at_a_time_s", "alone"), ("one_batch_s", "as one batch")):
        if name in split:
            times = " / ".join(f"{v:.2f} s" for v in split[name].values())
            rows.append(
                [f"model split: {split['prompts']} write prompts {label}, 1 / 16 tokens", times]
            )
    return _table(["what", f"{bench.get('dtype', '')} on {bench.get('machine', '')}"], rows)


BENCH_RENDERERS: dict[str, Callable[[dict[str, Any], dict[str, str]], str]] = {
    "recommend_graph_batch.json": graph_batch_table,
    "factorized_check.json": factorized_check_table,
    "next_item.json": next_item_table,
    "recommend.json": recommend_table,
    "servers.json": servers_table,
    "search_calibration.json": search_calibration_table,
}


def render(source: str, options: dict[str, str], root: Path = ROOT) -> str:
    """The table a marker names, written from its source file."""
    path = root / source
    if not path.is_file():
        raise TableError(f"{source} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl" and "blocks" in options:
        return blocks_table([json.loads(line) for line in text.splitlines() if line], options)
    if path.suffix == ".jsonl":
        return heldout_table([json.loads(line) for line in text.splitlines() if line], options)
    data = json.loads(text)
    kind = options.get("kind")
    if kind not in (None, "paired"):
        raise TableError(f"unknown table kind {kind!r} (kinds: paired)")
    if "methods" in data:
        return paired_table(data, options) if kind == "paired" else report_table(data, options)
    if kind:
        raise TableError(f"{source}: kind={kind} needs an evaluation report")
    if path.name in BENCH_RENDERERS:
        return BENCH_RENDERERS[path.name](data, options)
    raise TableError(f"{source}: not an evaluation report, a metrics.jsonl or a bench result")


def _options(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split())


def regenerate(text: str, root: Path = ROOT) -> tuple[str, list[tuple[str, int]]]:
    """``text`` with every marked table rewritten; and (source, line) of each table that changed."""
    changed: list[tuple[str, int]] = []

    def one(m: re.Match[str]) -> str:
        try:
            table = render(m["source"], _options(m["options"]), root)
        except (TableError, KeyError, ValueError) as exc:
            line = text.count("\n", 0, m.start()) + 1
            raise TableError(f"line {line}: {exc}") from exc
        if table != m["body"]:
            changed.append((m["source"], text.count("\n", 0, m.start()) + 1))
        head = m.group(0).split("\n", 1)[0]
        return f"{head}\n{table}<!-- /table -->"

    return MARKER.sub(one, text), changed


def markers(text: str) -> list[re.Match[str]]:
    """Every marked table of a page."""
    return list(MARKER.finditer(text))


def default_pages(root: Path = ROOT) -> list[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _write(path: Path, text: str) -> None:
    # Temp file and rename, so a page is never half-written (memory_store.files.atomic_write
    # would import the memory_store package, and this module stays standard-library only).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluation.tables",
        description="Rewrite the tables of README.md and docs/*.md from the reports they name.",
    )
    parser.add_argument("pages", nargs="*", type=Path, help="pages (default: README.md, docs/)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a table differs"
    )
    args = parser.parse_args(argv)
    pages = args.pages or default_pages()
    for page in pages:
        name = page.relative_to(ROOT) if page.is_absolute() and page.is_relative_to(ROOT) else page
        try:
            text = page.read_text(encoding="utf-8")
            new, changed = regenerate(text)
        except (OSError, TableError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        if args.check and changed:
            source, line = changed[0]
            print(
                f"{name}:{line}: the table from {source} differs from its report; run `make docs`",
                file=sys.stderr,
            )
            return 1
        if changed and not args.check:
            _write(page, new)
            for source, line in changed:
                print(f"{name}:{line}: rewrote the table from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
