"""GRPO (or GDPO) of the drafter on the training reward, the agent graph as the rollout.

    queryagent-train grpo --data data/amazon-scientific --model DIR   # the drafting role
    python -m training.grpo --help                         # every flag, with its default

Read ``script`` first (the command: ``run_grpo`` and ``main``); the rest are the library it runs:

    script.py     the command: prompt rows -> environment -> trainer -> adapter, sidecar, card
    config.py     GRPOArguments (this script's flags) and QueryAgentGRPOConfig (TRL's GRPOConfig)
    rows.py       prompt rows: one shopper at one position, the next item as the reward's target
    trainer.py    the rollout's environment, the LoRA policy and TRL's trainer with its callbacks
    callbacks.py  metrics.jsonl: per-step logs and the held-out curve
    plots.py      metrics.png and the printed reward curve
    card.py       the adapter's model card

The rollout (``training.rollout``), the rewards (``training.rewards``) and the trie-restricted
log-probabilities (``training.constrained_grpo``) are shared with the rest of ``training``.
"""

from training.grpo.callbacks import METRICS_FILE, heldout_scores, keep_metrics_until
from training.grpo.config import OPTIMISERS, GRPOArguments, GRPOError, QueryAgentGRPOConfig
from training.grpo.plots import plot_metrics, reward_curve
from training.grpo.rows import build_rows, heldout_rows, prompt_rows
from training.grpo.script import main, run_grpo
from training.rollout import GraphRollout

__all__ = [
    "METRICS_FILE",
    "OPTIMISERS",
    "GRPOArguments",
    "GRPOError",
    "GraphRollout",
    "QueryAgentGRPOConfig",
    "build_rows",
    "heldout_rows",
    "heldout_scores",
    "keep_metrics_until",
    "main",
    "plot_metrics",
    "prompt_rows",
    "reward_curve",
    "run_grpo",
]
