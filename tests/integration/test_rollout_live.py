"""GRPO's rollout on runs that refine: a grounded run asks every refinement after the draft, so
its turns form a tree; the rollout renders the path from the draft to the last turn, and the
trainer scores each kept turn under the very prompt the run sampled it from (issue 27: the
second refinement stopped GRPO with ``RolloutError: turn 2: its prompt does not extend the
previous one``). A CPU run on the tiny data set and a tiny local model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.context import Context
from graphs.record import TrajectoryRecord
from memory_store import UserMemory, load_dataset
from training.grpo import GraphRollout, GRPOArguments, build_rows
from training.rollout import conversation_path, model_turns

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REFINEMENTS = 2


@pytest.fixture(scope="module")
def rollout_out(tmp_path_factory, tiny_recbole_dir, tiny_model_dir, tiny_models):
    import torch
    from langgraph.store.memory import InMemoryStore
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.evaluation.runner import open_eval_catalog

    dataset = load_dataset(tiny_recbole_dir)
    store = InMemoryStore()
    UserMemory(store).ingest_dataset(dataset, progress=False)
    rows = build_rows(dataset, GRPOArguments(data=str(tiny_recbole_dir), limit=2))
    rollout = GraphRollout(
        rows=rows,
        catalog=open_eval_catalog(dataset, tmp_path_factory.mktemp("rollout-live-home")),
        store=store,
        # No fit reaches 1: every run refines until its budget is spent.
        context=Context(max_refinements=REFINEMENTS, fit_threshold=1.0),
        ranking=tiny_models,
    )
    trainer = SimpleNamespace(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
        args=SimpleNamespace(temperature=1.0),
    )
    torch.manual_seed(0)  # the rollout samples: the same turns at every run of the test
    prompts = [rows[0]["prompt"]] * 2 + [rows[1]["prompt"]] * 2  # two groups of two
    return SimpleNamespace(rollout=rollout, trainer=trainer, out=rollout(prompts, trainer))


def test_runs_that_refine_twice_are_rendered(rollout_out) -> None:
    out, tokenizer = rollout_out.out, rollout_out.trainer.processing_class
    records = [TrajectoryRecord.model_validate(t) for t in out["trajectory"]]
    assert len(records) == len(out["completion_ids"]) == 4
    twice = 0
    for rec in records:
        turns = model_turns(rec.steps)
        assert len(turns) == rec.run["refinements"] + 1
        # every refinement is asked after the draft's reply, not after the previous refinement
        assert all(t["messages"][:3] == turns[1]["messages"][:3] for t in turns[1:])
        assert conversation_path(turns, tokenizer) == sorted({0, len(turns) - 1})
        twice += rec.run["refinements"] == REFINEMENTS
    # a draft whose products fit fully (fit 1 on the tiny catalog) ends its run at once
    assert twice >= 2
    left_out = sum(max(0, r.run["refinements"] - 1) for r in records) / len(records)
    assert rollout_out.rollout.history[-1]["rollout/turns_left_out"] == left_out > 0


def test_each_kept_turn_is_scored_under_the_prompt_it_was_sampled_from(rollout_out) -> None:
    import torch

    from training.constrained_grpo import restricted_logps

    out, rollout, model = rollout_out.out, rollout_out.rollout, rollout_out.trainer.model
    for t, prompt_ids, ids, mask in zip(
        out["trajectory"], out["prompt_ids"], out["completion_ids"], out["env_mask"], strict=True
    ):
        rec = TrajectoryRecord.model_validate(t)
        turns = model_turns(rec.steps)
        kept = [turns[0], turns[-1]] if len(turns) > 1 else turns
        allowed = rollout.allowed_tokens(ids)
        assert allowed is not None and len(allowed) == len(ids) == len(mask)
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + ids])).logits[:, len(prompt_ids) - 1 : -1]
        logps, _ = restricted_logps(
            logits, torch.tensor([ids]), torch.ones(1, len(ids)), rollout.allowed_tokens
        )
        full = prompt_ids + ids
        # the draft right after the prompt; the last refinement ends the conversation
        starts = [len(prompt_ids), len(full) - len(kept[-1]["completion_token_ids"])]
        for turn, start in zip(kept, starts[: len(kept)], strict=True):
            # the conversation up to the turn is the prompt the run asked it with, token for token
            assert full[:start] == turn["prompt_token_ids"]
            end = start + len(turn["completion_token_ids"])
            assert full[start:end] == turn["completion_token_ids"]
            # and the trainer's log-probability of its tokens is the one the run sampled with
            sampled = next(
                s.logprob for s in rec.steps if s.turn == turn["turn"] and s.logprob is not None
            )
            at = slice(start - len(prompt_ids), end - len(prompt_ids))
            assert float(logps[0, at].sum()) == pytest.approx(sampled, abs=1e-3)
