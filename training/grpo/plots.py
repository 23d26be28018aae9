"""GRPO's curves from ``metrics.jsonl``: drawn (``metrics.png`` beside the adapter) and printed
(the reward per step at the end of a run).
"""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(path: Path, out: Path) -> None:
    """One panel per figure over steps: reward terms, zero-spread groups, refinements."""
    # matplotlib is an optional training dependency and slow to import: loaded only to draw.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    keys = [k for k in rows[-1] if k.endswith("/mean") and k.startswith("rewards/")]
    # Terms that never move (format and tool are 1 for every run inside the trie) stay out of
    # the held-out panel, where they would squash the ones that do.
    heldout = sorted(
        k
        for k in {k for r in rows for k in r if k.startswith("heldout/")}
        if len({r[k] for r in rows if k in r}) > 1
    )
    panels = [
        ("reward terms (mean)", keys),
        *([("held-out shoppers, greedy pick", heldout)] if heldout else []),
        ("groups with zero reward spread", ["frac_reward_zero_std"]),
        (
            "rollouts",
            [
                "rollout/mean_refinements",
                "rollout/distinct_queries",
                "rollout/parsed_final",
                "rollout/turns_left_out",
            ],
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for ax, (title, names) in zip(axes, panels, strict=True):
        for name in names:
            pts = [(r["step"], r[name]) for r in rows if name in r]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    marker=".",
                    label=name.removeprefix("rewards/").removesuffix("/mean"),
                )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def reward_curve(path: Path) -> str:
    """``"1: 2.10, 2: 2.31, ..."``: each logged step's reward (the sum of the terms' means)."""
    if not path.is_file():
        return ""
    points = []
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        terms = [v for k, v in row.items() if k.startswith("rewards/") and k.endswith("/mean")]
        if terms:
            points.append(f"{row['step']}: {sum(terms):.2f}")
    return ", ".join(points)
