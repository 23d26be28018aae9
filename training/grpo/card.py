"""The GRPO adapter's model card (Hugging Face's YAML header and the run's summary)."""

from __future__ import annotations

from typing import Any

from training.common import model_card
from training.grpo.callbacks import METRICS_FILE
from training.grpo.config import GRPOArguments, QueryAgentGRPOConfig


def grpo_card(
    meta: dict[str, Any],
    args: GRPOArguments,
    config: QueryAgentGRPOConfig,
    resolved: Any,
    out: str,
) -> Any:
    groups = config.per_device_train_batch_size // (config.num_generations or 1)
    source = f", taken from `{args.from_trajectories}`" if args.from_trajectories else ""
    return model_card(
        resolved=resolved,
        adapter=True,
        title=f"{out}: {meta['optimiser'].upper()} on the training reward",
        summary=(
            f"A LoRA adapter on `{resolved.base_name}`, trained from `{resolved.name}` with TRL's "
            f"`GRPOTrainer` and the agent graph as the rollout: {meta['steps']} steps of "
            f"{groups} shoppers x {config.num_generations} graph runs, rewards "
            f"{', '.join(meta['rewards'])} ({config.multi_objective_aggregation})."
        ),
        data=(
            f"{meta['data']['prompt_rows']:,} prompt rows (shopper, position) "
            + (
                f"from live-logged runs joined with the shopper's next purchase{source}; "
                if meta["data"]["environment"] == "home"
                else f"from the {args.split} split of `{meta['data']['path']}` "
                f"({meta['data']['name']}){source}; "
            )
            + "each completion is a full graph run rendered as one conversation, the "
            "retrieved-products and check-feedback turns masked out of the loss. Per-step "
            f"metrics: `{METRICS_FILE}`, `metrics.png`."
        ),
        command=meta["command"],
        tags=["grpo", meta["optimiser"]],
    )
