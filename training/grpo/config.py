"""The GRPO run's settings: this script's ``GRPOArguments`` and ``QueryAgentGRPOConfig`` (TRL's
``GRPOConfig`` with this project's defaults), both parsed by ``trl.TrlParser``
(``training.common.parse_command_line``). They live apart from the script (``training.grpo.script``)
because the rows, the trainer and the card read them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import GRPOConfig  # the config's base class, so imported at the top (trl is heavy)

from agent.drafting import BASE_MODEL_ID
from training.common import TrainingError, bf16_default
from training.rewards import optimiser_kwargs

# The optimiser's name (the paper's GDPO, or plain GRPO) for each of TRL's aggregations.
OPTIMISERS = {optimiser_kwargs(n)["multi_objective_aggregation"]: n for n in ("gdpo", "grpo")}


class GRPOError(TrainingError):
    """A user-caused problem with a GRPO run (one line for the CLI)."""


@dataclass(kw_only=True)
class GRPOArguments:
    """This script's own settings (TRL's are in ``QueryAgentGRPOConfig``)."""

    data: str | None = field(
        default=None,
        metadata={
            "help": "data-set folder: its memory and catalog are the environment (not needed "
            "with --from_trajectories of live-logged runs: their home is the environment)"
        },
    )
    model: str = field(
        default=BASE_MODEL_ID,
        metadata={"help": "policy to start from: Hugging Face id, folder or (SFT) adapter folder"},
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder (default: <home>/checkpoints/grpo)"}
    )
    from_trajectories: str | None = field(
        default=None,
        metadata={
            "help": "build prompts from a trajectory file: exported from a split, or logged live "
            "(recommend/precompute --log; each run is joined with the shopper's next purchase "
            "in --home, as `queryagent-train outcomes` does, or pass its joined file)"
        },
    )
    single_turn: bool = field(
        default=False, metadata={"help": "no refinement: the paper's ablation"}
    )
    max_refinements: int = field(default=2, metadata={"help": "refinement budget of each rollout"})
    rank_depth: int = field(
        default=1000,
        metadata={
            "help": "the dense rank reward's depth: 1/log2(1+rank) of the next item among the "
            "final query's first N products (training.rewards.RankReward); 0: the paper's four "
            "terms only"
        },
    )
    heldout: int = field(
        default=0,
        metadata={
            "help": "the curve to watch: every --heldout_every steps, the policy's greedy pick "
            "for this many fixed valid-split shoppers (never trained on) is scored with the "
            "rewards and logged as heldout/* (0: off; rows from a data set's train split only)"
        },
    )
    heldout_every: int = field(default=25, metadata={"help": "steps between held-out scorings"})
    trie_logps: bool = field(
        default=True,
        metadata={
            "help": "score trie-sampled completions under the trie-restricted softmax, the "
            "distribution they were sampled from (training.constrained_grpo); off: TRL's "
            "unconstrained log-probabilities"
        },
    )
    limit: int | None = field(default=None, metadata={"help": "keep this many prompt rows"})
    split: str = field(
        default="train",
        metadata={"help": "split whose examples become prompts", "choices": ["train", "valid"]},
    )
    home: str | None = field(
        default=None, metadata={"help": "QueryAgent home (default: $QUERYAGENT_HOME)"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of training (and save)"}
    )

    def __post_init__(self) -> None:
        if not self.data and not self.from_trajectories:
            raise GRPOError(
                "--data is required (or --from_trajectories with runs logged on --home)"
            )
        if self.max_minutes is not None and not (
            self.max_minutes > 0 and math.isfinite(self.max_minutes)
        ):
            raise GRPOError(f"--max_minutes must be a positive number, got {self.max_minutes}")
        if self.split not in ("train", "valid"):
            raise GRPOError(
                f"--split must be train or valid (test is held out), got {self.split!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise GRPOError(f"--limit must be >= 1, got {self.limit}")
        if self.max_refinements < 0:
            raise GRPOError(f"--max_refinements must be >= 0, got {self.max_refinements}")
        if self.heldout < 0 or self.heldout_every < 1:
            raise GRPOError("--heldout must be >= 0 and --heldout_every >= 1")
        if self.rank_depth < 0:
            raise GRPOError(f"--rank_depth must be >= 0 (0: no rank term), got {self.rank_depth}")


@dataclass
class QueryAgentGRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with this project's defaults (each shown by ``--help``)."""

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate"})
    beta: float = field(default=0.001, metadata={"help": "KL coefficient (paper prior: 0.001)"})
    temperature: float = field(default=0.8, metadata={"help": "rollout sampling temperature"})
    num_generations: int | None = field(
        default=4, metadata={"help": "graph runs per prompt (the group)"}
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "completions per step: prompts x num_generations"}
    )
    max_steps: int = field(default=50, metadata={"help": "optimizer steps"})
    max_completion_length: int | None = field(
        default=512, metadata={"help": "longest rendered rollout (all turns), in tokens"}
    )
    multi_objective_aggregation: str = field(
        default=optimiser_kwargs("gdpo")["multi_objective_aggregation"],
        metadata={
            "help": "normalize_then_sum: GDPO, each reward term normalized in its group (the "
            "paper's); sum_then_normalize: plain GRPO",
        },
    )
    # Short sequences on a 135M model: recomputing activations would only cost time. TRL turns
    # it on by default; None leaves it off without the deprecation warning an explicit False
    # draws from transformers 5.2x (where --activation_checkpointing is the new name).
    gradient_checkpointing: bool | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "deprecated name of --activation_checkpointing (off)"}
    )
    logging_steps: float = field(default=1, metadata={"help": "log every N steps"})
    save_steps: float = field(default=25, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=1, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "prompt shuffle and sampling seed"})
    bf16: bool | None = field(  # type: ignore[assignment]  # None: decided in __post_init__
        default=None, metadata={"help": "bf16 mixed precision (default: on CUDA with bf16)"}
    )

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = bf16_default()
        if self.num_generations is not None and self.num_generations < 2:
            raise GRPOError(
                f"--num_generations must be >= 2 (a group needs a spread), "
                f"got {self.num_generations}"
            )
        if self.beta < 0 or not (self.temperature > 0):
            raise GRPOError("--temperature must be positive and --beta >= 0")
        super().__post_init__()
