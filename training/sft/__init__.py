"""SFT of the drafter: answer the graph's grounded draft prompt with the shopper's real next query.

    queryagent-train sft --config recipes/writer-sft.yaml   # the first stage of `make train`
    python -m training.sft --help                    # every flag, with its default

Read ``script`` first (the command: ``run_sft`` and ``main``); the rest are the library it runs:

    script.py   the command: pairs -> model -> TRL's SFTTrainer -> adapter, sidecar, card
    config.py   SFTArguments (this script's flags) and QueryAgentSFTConfig (TRL's SFTConfig)
    pairs.py    the training pairs, from the training split or a trajectory file
"""

from training.common import META_FILE
from training.sft.config import QueryAgentSFTConfig, SFTArguments, SFTError
from training.sft.pairs import SFTPair, build_pairs, completion_messages, trajectory_pairs
from training.sft.script import main, run_sft

__all__ = [
    "META_FILE",
    "QueryAgentSFTConfig",
    "SFTArguments",
    "SFTError",
    "SFTPair",
    "build_pairs",
    "completion_messages",
    "main",
    "run_sft",
    "trajectory_pairs",
]
