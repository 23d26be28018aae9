"""GRPO's trainer: the rollout's environment (the graph's world), the policy with its LoRA
adapter, and TRL's trainer (``training.constrained_grpo``) with this run's callbacks.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from langgraph.store.memory import InMemoryStore

from agent.catalog import ChromaCatalog
from agent.context import Context
from agent.ranking import load_served
from graphs.offline.ingest import ingest
from graphs.offline.runner import offline_ranking
from memory_store import Dataset, open_store
from training.callbacks import GracefulStop
from training.common import load_start_model
from training.evaluation.runner import open_eval_catalog
from training.grpo.callbacks import METRICS_FILE, heldout_callback, metrics_callback
from training.grpo.config import GRPOArguments, QueryAgentGRPOConfig
from training.grpo.plots import plot_metrics
from training.rollout import GraphRollout


def environment(
    args: GRPOArguments, dataset: Dataset | None, rows: list[dict[str, Any]], *, live: bool
) -> GraphRollout:
    """The rollout's world and the graph's knobs.

    Live-logged runs: the home they were logged on (its memory, cut at each run's held events by
    the row's ``before``; its catalog; its served fitted models). Otherwise the data set's memory
    (ingested as `queryagent ingest` does), the evaluation's catalog and its models fitted on the
    sequences cut before the held-out items.
    """
    context = Context(max_refinements=0 if args.single_turn else args.max_refinements)
    if live:
        return GraphRollout(
            rows=rows,
            catalog=ChromaCatalog.from_env(home=args.home),
            store=open_store(args.home),
            context=context,
            ranking=load_served(args.home),
        )
    assert dataset is not None
    store = InMemoryStore()
    catalog = open_eval_catalog(dataset, args.home)
    ingest(dataset, store, catalog, progress=False)
    ranking = offline_ranking(dataset, catalog, args.split, args.home)
    return GraphRollout(rows=rows, catalog=catalog, store=store, context=context, ranking=ranking)


def lora_config(continuing: bool) -> Any:
    """A fresh LoRA adapter, unless the policy already carries one (an SFT adapter)."""
    if continuing:
        return None
    from peft import LoraConfig  # peft is heavy (torch): loaded when a run starts

    return LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")


def save_metrics(metrics_path: Path) -> Any:
    """Copies the per-step metrics (and their plot) into the output folder."""

    def extra(folder: Path) -> None:
        if metrics_path.is_file():
            shutil.copy(metrics_path, folder / METRICS_FILE)
            plot_metrics(folder / METRICS_FILE, folder / "metrics.png")

    return extra


def build_trainer(
    args: GRPOArguments,
    config: QueryAgentGRPOConfig,
    rows: list[dict[str, Any]],
    rollout: GraphRollout,
    reward_functions: list[Any],
    metrics_path: Path,
    heldout: list[dict[str, Any]] | None = None,
) -> tuple[Any, Any, Any, Any]:
    """The GRPO trainer on the policy; returns it, the resolved policy, tokenizer and budget."""
    from datasets import Dataset as HFDataset  # heavy (pyarrow): loaded when a run starts

    # Its module subclasses trl's GRPOTrainer (torch, transformers): loaded when a run starts.
    from training.constrained_grpo import ConstrainedGRPOTrainer

    resolved, model, tokenizer = load_start_model(args.model, args.home)
    budget = GracefulStop(args.max_minutes)
    trainer = ConstrainedGRPOTrainer(
        allowed_tokens=rollout.allowed_tokens if args.trie_logps and rollout.grounded else None,
        model=model,
        reward_funcs=reward_functions,
        args=config,
        train_dataset=HFDataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(continuing=resolved.adapter),
        rollout_func=rollout,
        callbacks=[
            metrics_callback(metrics_path, rollout),
            budget,
            *(
                [
                    heldout_callback(
                        metrics_path, rollout, heldout, reward_functions, args.heldout_every
                    )
                ]
                if heldout
                else []
            ),
        ],
    )
    return trainer, resolved, tokenizer, budget
