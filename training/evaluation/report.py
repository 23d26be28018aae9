"""The evaluation report: JSON (everything), a markdown table and a PNG bar chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.files import atomic_path, atomic_write
from training.evaluation.columns import TABLE_METRICS, TEXT_METRICS
from training.evaluation.metrics import METRICS, paired_tests
from training.evaluation.specs import EvalError, parse_methods
from training.evaluation.tables import PAIRED_HEADERS, paired_table

# The reference of the paired tests when ``eval`` is asked for none (``--paired-against``) and it
# is among the methods: the agent's own ranking without the model (the README's headline test).
DEFAULT_PAIRED_REFERENCE = "ranker"

CHART_METRICS = ("q_em", "rouge_l", "i_hit@1", "i_hit@10", "ndcg@10", "cons@1", "cons@10")


def markdown_table(methods: dict[str, dict[str, Any]]) -> str:
    """Mean with the 95% bootstrap interval under it, one row per method."""
    columns = (*TABLE_METRICS, *TEXT_METRICS)
    head = "| method | " + " | ".join(columns) + " | distinct queries / users |"
    rule = "|---|" + "---|" * (len(columns) + 1)
    rows = [head, rule]
    for label, result in methods.items():
        cells = []
        for name in columns:
            m = result["metrics"].get(name)
            if m is None:  # a text metric of a report written before the query text
                cells.append("n/a")
            elif name == "latency_s":
                cells.append(f"{m['mean']:.3f}")
            elif name in ("refinements", "text_words"):
                cells.append(f"{m['mean']:.2f}")
            else:
                cells.append(f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]")
        cells.append(f"{result['distinct_ratio']:.3f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def bar_chart(methods: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    # matplotlib is an optional training dependency and slow to import: loaded only to draw.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(methods)
    x = np.arange(len(CHART_METRICS))
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(CHART_METRICS)), 4.5))
    # The default cycle repeats after 10 colors: a longer table would give two methods one color.
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colors = [cmap(i) for i in range(cmap.N)]
    for k, label in enumerate(labels):
        ms = methods[label]["metrics"]
        means = np.array([ms[n]["mean"] for n in CHART_METRICS])
        err = np.array(
            [
                [ms[n]["mean"] - ms[n]["low"] for n in CHART_METRICS],
                [ms[n]["high"] - ms[n]["mean"] for n in CHART_METRICS],
            ]
        )
        ax.bar(
            x + (k - (len(labels) - 1) / 2) * width,
            means,
            width,
            yerr=err,
            capsize=2,
            label=label,
            color=colors[k % len(colors)],
        )
    ax.set_xticks(x, CHART_METRICS)
    ax.set_ylabel("mean over users (95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # keeps the .png suffix savefig reads the format from
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def method_rows(results: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The report's entry for each method result, keyed by its label."""
    return {
        r.spec.label: {
            "method": r.spec.method,
            "model": r.spec.model,
            "wall_s": round(r.wall_s, 2),
            "distinct_ratio": round(r.distinct_ratio, 4),
            "metrics": {n: r.metrics[n] for n in METRICS},
        }
        for r in results
    }


def paired_reference(
    labels: Sequence[str], requested: str | None, default_model: str | None = None
) -> str | None:
    """The label of the method the others are paired against: ``requested`` (a method as
    ``--methods`` names it, ``agent@PATH`` included; ``none``: no paired tests), else ``ranker``
    when it is among ``labels``. Raises EvalError (one line) when the request names no
    evaluated method."""
    if requested is None:
        return DEFAULT_PAIRED_REFERENCE if DEFAULT_PAIRED_REFERENCE in labels else None
    if requested.strip().lower() == "none":
        return None
    try:
        specs = parse_methods(requested, default_model)
    except EvalError as exc:
        raise EvalError(f"--paired-against {requested!r}: {exc}") from None
    if len(specs) != 1:
        raise EvalError(f"--paired-against {requested!r}: name one method, or none")
    if specs[0].label not in labels:
        raise EvalError(
            f"--paired-against {requested!r}: not one of the evaluated methods "
            f"({', '.join(labels)}), or none"
        )
    return specs[0].label


def paired_section(results: Sequence[Any], reference: str | None) -> dict[str, Any] | None:
    """The report's ``paired`` field: every other method's sign tests against ``reference``
    (``metrics.paired_tests``, counts only); None without a reference or another method."""
    labels = {r.spec.label for r in results}
    if reference is None or reference not in labels or len(labels) < 2:
        return None
    outcomes = {r.spec.label: r.outcomes for r in results}
    return {
        "reference": reference,
        "test": "two-sided sign test (scipy.stats.binomtest) over the shoppers both scored",
        "methods": paired_tests(outcomes, reference),
    }


def write_report(
    out: Path,
    header: dict[str, Any],
    results: Sequence[Any],
    paired_against: str | None = DEFAULT_PAIRED_REFERENCE,
) -> dict[str, Path]:
    """Write ``out`` (JSON), ``out`` with .md and .png beside it; returns the three paths.
    ``paired_against``: the label of the paired tests' reference (``paired_reference``); the
    ``paired`` field is null without one among the results."""
    methods = method_rows(results)
    paired = paired_section(results, paired_against)
    report = {**header, "methods": methods, "paired": paired}
    paths = {"json": out, "md": out.with_suffix(".md"), "png": out.with_suffix(".png")}
    atomic_write(paths["json"], json.dumps(report, indent=2))
    title = (
        f"{header.get('data_name', '')} {header.get('split', '')}: {header.get('users', 0)} users"
    )
    if partial := header.get("cached_only"):
        title += f" of {partial['users_in_split']} (cached so far; a partial look)"
    text = f"{title}\n\n" + markdown_table(methods)
    if paired:
        text += (
            f"\nPaired against {paired['reference']} over the shoppers both scored: better / worse "
            "(two-sided sign test p); other query: the shoppers whose query is not the "
            "reference's.\n\n" + paired_table(report, {"columns": ",".join(PAIRED_HEADERS)})
        )
    atomic_write(paths["md"], text)
    bar_chart(methods, paths["png"], title)
    return paths
