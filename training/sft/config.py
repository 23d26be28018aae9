"""The SFT run's settings: this script's ``SFTArguments`` and ``QueryAgentSFTConfig`` (TRL's
``SFTConfig`` with this project's defaults), both parsed by ``trl.TrlParser``
(``training.common.parse_command_line``), and the LoRA shape of the cold start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import SFTConfig  # the config's base class, so imported at the top (trl is heavy)

from agent.drafting import BASE_MODEL_ID
from training.common import TrainingError, bf16_default

# LoRA shape of the cold start: small enough to train on a CPU, every linear layer adapted.
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.05
ROLES = ("write", "draft")
WRITER_LORA_LAYERS = 10  # the writer adapts the top 10 of the 30 decoder layers
# Every linear layer of a Llama-style decoder layer (SmolLM2's), as "all-linear" picks them.
WRITER_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class SFTError(TrainingError):
    """A user error in the SFT command (bad number, empty training split, unloadable model)."""


@dataclass(kw_only=True)
class SFTArguments:
    """This script's own settings (TRL's are in ``QueryAgentSFTConfig``)."""

    data: str = field(metadata={"help": "data-set folder (its training split is used)"})
    model: str = field(
        default=BASE_MODEL_ID,
        metadata={"help": "model to start from: Hugging Face id, folder or adapter folder"},
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder (default: <home>/checkpoints/sft)"}
    )
    role: str = field(
        default="write",
        metadata={
            "help": "what the model learns: 'write' (the query text for the check's intent, "
            "training.writer) or 'draft' (the catalog query itself, the graph's draft prompt)"
        },
    )
    limit: int | None = field(default=None, metadata={"help": "train on this many shuffled pairs"})
    full: bool = field(
        default=False,
        metadata={"help": f"full fine-tuning instead of a LoRA adapter (r {LORA_R}, {LORA_ALPHA})"},
    )
    home: str | None = field(
        default=None, metadata={"help": "QueryAgent home (default: $QUERYAGENT_HOME)"}
    )
    from_trajectories: str | None = field(
        default=None,
        metadata={
            "help": "train on a trajectory file instead of the training split: each run's "
            "profile -> the query of what the shopper bought next (exported runs' target; "
            "live-logged runs are joined with the next purchase in --home first, as "
            "`queryagent-train outcomes` does)"
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after this many minutes of training (and save)"}
    )

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise SFTError(f"--role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.role == "write" and self.from_trajectories:
            raise SFTError("--from_trajectories trains the draft role: add --role draft")
        if self.limit is not None and self.limit < 1:
            raise SFTError(f"--limit must be >= 1, got {self.limit}")
        if self.max_minutes is not None and not (
            self.max_minutes > 0 and math.isfinite(self.max_minutes)
        ):
            raise SFTError(f"--max_minutes must be a positive number, got {self.max_minutes}")


@dataclass
class QueryAgentSFTConfig(SFTConfig):
    """TRL's ``SFTConfig`` with this project's defaults (each shown by ``--help``)."""

    learning_rate: float = field(
        default=2e-4,
        metadata={"help": "AdamW learning rate: the usual LoRA rate (adapters start at zero)"},
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "passes over the pairs"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "pairs per step"})
    # Bundled-set pairs are ~400 SmolLM2 tokens (median; 658 the longest). Truncation would cut
    # the completion (TRL keeps the start), so longer pairs are refused instead.
    max_length: int | None = field(default=1024, metadata={"help": "longest tokenized pair"})
    completion_only_loss: bool | None = field(
        default=True, metadata={"help": "loss on the completion tokens only"}
    )
    # Short sequences on a 135M model: recomputing activations would only cost time. TRL turns
    # it on by default; None leaves it off without the deprecation warning an explicit False
    # draws from transformers 5.2x (where --activation_checkpointing is the new name).
    gradient_checkpointing: bool | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "deprecated name of --activation_checkpointing (off)"}
    )
    logging_steps: float = field(default=10, metadata={"help": "log every N steps"})
    logging_first_step: bool = field(default=True, metadata={"help": "log the first step"})
    save_steps: float = field(default=200, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=1, metadata={"help": "checkpoints kept"})
    seed: int = field(default=0, metadata={"help": "shuffle and initialization seed"})
    bf16: bool | None = field(  # type: ignore[assignment]  # None: decided in __post_init__
        default=None, metadata={"help": "bf16 mixed precision (default: on CUDA with bf16)"}
    )

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = bf16_default()
        if self.data_seed is None:
            self.data_seed = self.seed
        super().__post_init__()
