"""GRPO with the graph as the rollout: a CPU smoke on a tiny local model and the tiny data set."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from agent.context import Context
from agent.drafting.trie import QueryTrie
from graphs.record import TrajectoryRecord
from memory_store import UserMemory, load_dataset
from training.grpo import (
    GraphRollout,
    GRPOArguments,
    QueryAgentGRPOConfig,
    build_rows,
    run_grpo,
)
from training.rollout import model_turns

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_recbole_dir):
    from langgraph.store.memory import InMemoryStore

    from training.evaluation.runner import open_eval_catalog

    home = tmp_path_factory.mktemp("grpo-home")
    dataset = load_dataset(tiny_recbole_dir)
    store = InMemoryStore()
    UserMemory(store).ingest_dataset(dataset, progress=False)
    return SimpleNamespace(
        home=home, dataset=dataset, store=store, catalog=open_eval_catalog(dataset, home)
    )


def test_rows_carry_the_graph_prompt_and_targets(setting, tiny_recbole_dir) -> None:
    rows = build_rows(setting.dataset, GRPOArguments(data=str(tiny_recbole_dir), limit=3))
    assert len(rows) == 3
    for row in rows:
        assert row["prompt"][0]["role"] == "system" and row["prompt"][-1]["role"] == "user"
        seq = setting.dataset.sequences[row["user_id"]]
        assert seq[row["before"]] == row["target_item"]  # the memory stops right before it
        assert row["target_query"] and row["target_title"]


def test_rollout_renders_each_graph_run(
    setting, tiny_model_dir, tiny_recbole_dir, tiny_models
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.constrained_grpo import restricted_logps

    rows = build_rows(setting.dataset, GRPOArguments(data=str(tiny_recbole_dir), limit=2))
    rollout = GraphRollout(
        rows=rows,
        catalog=setting.catalog,
        store=setting.store,
        context=Context(max_refinements=1),
        ranking=tiny_models,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = SimpleNamespace(
        model=model,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
        args=SimpleNamespace(temperature=1.0),
    )
    prompts = [rows[0]["prompt"]] * 2 + [rows[1]["prompt"]] * 2  # two groups of two
    out = rollout(prompts, trainer)
    trie = QueryTrie.build(trainer.processing_class, tiny_models.vocab.queries)
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["env_mask"]) == 4
    records = [TrajectoryRecord.model_validate(t) for t in out["trajectory"]]
    assert [r.user_id for r in records] == [rows[0]["user_id"]] * 2 + [rows[1]["user_id"]] * 2
    for rec, ids, mask, prompt_ids in zip(
        records, out["completion_ids"], out["env_mask"], out["prompt_ids"], strict=True
    ):
        turns = model_turns(rec.steps)  # what the policy wrote (recalled candidates are not)
        assert prompt_ids == turns[0]["prompt_token_ids"]
        assert len(ids) == len(mask)
        # trained on: the policy's tokens where the catalog's query trie left it a choice
        model_tokens = [t for t, m in zip(ids, mask, strict=True) if m == 1]
        choices = []
        for turn in turns:
            own = turn["completion_token_ids"]
            choices += [t for t, c in zip(own, trie.choices(own), strict=True) if c]
        assert model_tokens == choices and choices
        assert mask[0] == 0  # the answer prefix "Query:" is forced
        # The loss scores each model token under the softmax restricted to the tokens its
        # turn's trie allowed there: the distribution the rollout sampled it from. The first
        # turn's sampling log-probability (recorded by the constrained sampler) is that sum.
        allowed = rollout.allowed_tokens(ids)
        assert allowed is not None and len(allowed) == len(ids)
        for k, (token, m) in enumerate(zip(ids, mask, strict=True)):
            assert m == 0 or (allowed[k] is not None and token in allowed[k])
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + ids])).logits[:, len(prompt_ids) - 1 : -1]
        logps, _ = restricted_logps(
            logits, torch.tensor([ids]), torch.ones(1, len(ids)), rollout.allowed_tokens
        )
        first = len(turns[0]["completion_token_ids"])
        sampled = next(s.logprob for s in rec.steps if s.turn == 0 and s.logprob is not None)
        assert float(logps[0, :first].sum()) == pytest.approx(sampled, abs=1e-3)
    assert rollout.history and "rollout/mean_refinements" in rollout.history[-1]
    assert rollout.allowed_tokens([1, 2, 3]) is None  # a completion it did not write


def test_grpo_smoke_trains_the_adapter(
    setting, tiny_model_dir, tiny_recbole_dir, tmp_path, monkeypatch
) -> None:
    from safetensors.torch import load_file

    import training.constrained_grpo as constrained

    scored: list[int] = []

    def counting(logits, completion_ids, *args, **kwargs):
        scored.append(int(completion_ids.size(0)))
        return restricted(logits, completion_ids, *args, **kwargs)

    restricted = constrained.restricted_logps
    monkeypatch.setattr(constrained, "restricted_logps", counting)

    out = tmp_path / "grpo"
    args = GRPOArguments(
        data=str(tiny_recbole_dir),
        model=str(tiny_model_dir),
        out=str(out),
        home=str(setting.home),
        max_refinements=1,
        limit=4,
        heldout=2,
        heldout_every=1,
    )
    # A random tiny LM puts most of its mass on one of the fixture's four queries; a hot
    # sampling temperature and groups of four make the group's rewards differ (a gradient),
    # whatever path the random numbers take.
    config = QueryAgentGRPOConfig(
        max_steps=2,
        num_generations=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        temperature=4.0,
    )
    meta = run_grpo(args, config, setting.dataset)
    assert meta["steps"] == 2 and meta["optimiser"] == "gdpo"
    # the policy (and the old policy) scored the trie-sampled completions under the trie
    assert sum(scored) >= 2 * 4
    names = ("format_reward", "tool_reward", "query_reward", "item_reward", "rank_reward")
    assert meta["rewards"] == list(names)  # the paper's four and the dense rank term
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().sum()) > 0 for v in lora_b)  # LoRA B starts at zero
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(f"rewards/{name}/mean" in rows[-1] for name in names)
    assert "rollout/mean_refinements" in rows[-1]
    # the held-out curve: fixed valid-split shoppers' greedy picks, before training and each step
    heldout = [r for r in rows if "heldout/query_reward" in r]
    assert [r["step"] for r in heldout] == [0, 1, 2]
    assert all(0.0 <= r[f"heldout/{name}"] <= 1.0 for r in heldout for name in names[2:])
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "queryagent.meta.json").read_text())["made_by"] == "training.grpo"
