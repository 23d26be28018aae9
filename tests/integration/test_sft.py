"""SFT cold start on the tiny local model and the tiny data set (no hub, a few optimizer steps).

The bundled SmolLM2 is stood in for by the tiny model: ``_convert_gguf`` is replaced by a function
that writes the tiny model where the conversion would, so the default-model path (the adapter's
base-model sentinel, ``HFDrafter`` resolving it) runs for real in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from langgraph.store.memory import InMemoryStore

from agent import drafter as drafter_module
from agent.drafter import BASE_MODEL_SENTINEL, HFDrafter, resolve_base_model
from agent.parsing import parse_query
from graphs.query_agent import Deps, build_graph
from memory_store import UserMemory
from tests.helpers.fakes import FakeCatalog
from tests.helpers.tiny_models import build_tiny_causal_lm
from training.cli import main
from training.evaluation.baselines import QueryOracle
from training.queries import common_root
from training.sft import META_FILE, build_pairs

pytestmark = pytest.mark.integration


@pytest.fixture()
def fake_conversion(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make "converting the bundled model" write the tiny model; returns the targets written."""
    written: list[Path] = []

    def convert(gguf: Path, target: Path) -> None:
        build_tiny_causal_lm(target)
        written.append(target)

    monkeypatch.setattr(drafter_module, "default_gguf_path", lambda: Path("smollm2.gguf"))
    monkeypatch.setattr(drafter_module, "_convert_gguf", convert)
    return written


# --------------------------------------------------------------------------- pairs


def test_pairs_are_the_graphs_draft_prompt_and_the_truth(tiny_dataset) -> None:
    pairs, skipped = build_pairs(tiny_dataset, seed=0)
    assert skipped == 0 and len(pairs) == len(tiny_dataset.examples("train")) == 15
    oracle = QueryOracle(
        tiny_dataset, common_root(p.category for p in tiny_dataset.products.values())
    )
    store = InMemoryStore()
    UserMemory(store).ingest_dataset(tiny_dataset, progress=False)
    for pair in pairs[:4]:
        # the graph's own draft prompt for this shopper, memory cut before the target
        drafter = drafter_module.ScriptedDrafter(["Query: duct tape"])
        graph = build_graph(
            Deps(drafter=drafter, catalog=FakeCatalog(tiny_dataset.products.values()))
        ).compile(store=store)
        graph.invoke({"user_id": pair.user_id, "before": pair.before})
        assert drafter.calls[0] == pair.prompt
        assert tiny_dataset.sequences[pair.user_id][pair.before] == pair.target
        truth = oracle.of_item(pair.target)
        assert pair.completion == [{"role": "assistant", "content": f"Query: {truth}"}]
        assert parse_query(pair.completion[0]["content"]).query == truth


def test_pairs_are_shuffled_by_seed_limited_and_skip_uncategorized(tiny_dataset) -> None:
    key = [(p.user_id, p.target, p.before) for p in build_pairs(tiny_dataset, seed=0)[0]]
    assert key == [(p.user_id, p.target, p.before) for p in build_pairs(tiny_dataset, seed=0)[0]]
    assert key != [(p.user_id, p.target, p.before) for p in build_pairs(tiny_dataset, seed=1)[0]]
    limited, _ = build_pairs(tiny_dataset, seed=0, limit=5)
    assert [(p.user_id, p.target, p.before) for p in limited] == key[:5]

    target = "B000TINY08"
    products = dict(tiny_dataset.products)
    products[target] = products[target].model_copy(update={"category": ""})
    blank = type(tiny_dataset)(**{**vars(tiny_dataset), "products": products})
    pairs, skipped = build_pairs(blank, seed=0)
    n_target = sum(ex.target == target for ex in tiny_dataset.examples("train"))
    assert skipped == n_target > 0 and len(pairs) == 15 - n_target
    assert all(p.target != target for p in pairs)


def test_base_model_sentinel_resolves_to_the_converted_default(
    tmp_path: Path, fake_conversion: list[Path]
) -> None:
    expected = tmp_path / "models" / drafter_module.DEFAULT_MODEL_NAME
    assert resolve_base_model(BASE_MODEL_SENTINEL, tmp_path) == str(expected)
    assert fake_conversion == [expected]  # converted when missing ...
    assert resolve_base_model(BASE_MODEL_SENTINEL, tmp_path) == str(expected)
    assert fake_conversion == [expected]  # ... and only then
    assert HFDrafter(BASE_MODEL_SENTINEL, home=tmp_path).model_name_or_path == str(expected)
    assert resolve_base_model("some/model", tmp_path) == "some/model"


# --------------------------------------------------------------------------- training


def test_sft_lora_on_the_default_model_writes_a_portable_adapter(
    tmp_path: Path, tiny_recbole_dir: Path, fake_conversion: list[Path]
) -> None:
    from safetensors.torch import load_file

    home, out = tmp_path / "home", tmp_path / "sft"
    argv = ["sft", "--data", str(tiny_recbole_dir), "--home", str(home), "--out", str(out)]
    assert main([*argv, "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2"]) == 0
    assert fake_conversion == [home / "models" / drafter_module.DEFAULT_MODEL_NAME]

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_MODEL_SENTINEL
    assert config["r"] == 16 and config["lora_alpha"] == 32
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # lora_B starts at zero

    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 2 and meta["data"]["pairs"] == 15
    assert meta["base_model"] == BASE_MODEL_SENTINEL
    assert meta["training"]["method"] == "lora" and meta["training"]["device"] == "cpu"
    assert meta["train_loss"] > 0 and meta["code_version"]
    assert not (tmp_path / "sft.work").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    drafter = HFDrafter(str(out), home=home, device="cpu")
    [gen] = drafter.generate([build_pairs_prompt(tiny_recbole_dir)], max_new_tokens=4)
    assert gen.completion_token_ids
    # the adapter is merged into the base weights for inference: they differ from the base's
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(fake_conversion[0]).state_dict()
    merged = drafter.model.state_dict()
    assert not type(drafter.model).__name__.startswith("Peft")
    assert any(not torch.equal(merged[k], base[k]) for k in base if "q_proj.weight" in k)


def build_pairs_prompt(data: Path) -> list[dict[str, str]]:
    from memory_store import load_dataset

    return build_pairs(load_dataset(data), seed=0, limit=1)[0][0].prompt


def test_sft_full_changes_the_weights(
    tmp_path: Path, tiny_recbole_dir: Path, tiny_model_dir: Path
) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "full"
    argv = ["sft", "--data", str(tiny_recbole_dir), "--model", str(tiny_model_dir)]
    assert main([*argv, "--out", str(out), "--full", "--max-steps", "1", "--lr", "1e-2"]) == 0
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before)
    meta = json.loads((out / META_FILE).read_text())
    assert meta["training"]["method"] == "full" and meta["steps"] == 1
    assert meta["base_model"] == str(tiny_model_dir)
    assert not (out / "adapter_config.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-steps", "0"], "--max-steps must be >= 1"),
        (["--limit", "-3"], "--limit must be >= 1"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--resume"], "no checkpoint"),
    ],
)
def test_sft_user_errors_are_one_line(
    tmp_path: Path, tiny_recbole_dir: Path, capsys, extra: list[str], message: str
) -> None:
    argv = ["sft", "--data", str(tiny_recbole_dir), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_sft_bad_data_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["sft", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1


def test_sft_resume_continues_from_the_last_checkpoint(
    tmp_path: Path, tiny_recbole_dir: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.sft as sft

    out = tmp_path / "lora"
    argv = ["sft", "--data", str(tiny_recbole_dir), "--model", str(tiny_model_dir)]
    argv += ["--out", str(out), "--batch-size", "4", "--save-steps", "1"]
    # An interrupted run: its checkpoints stay in <out>.work/ (a finished run deletes them).
    real_rmtree = sft.shutil.rmtree
    monkeypatch.setattr(
        sft.shutil,
        "rmtree",
        lambda path, **kw: None if Path(path).name == "lora.work" else real_rmtree(path, **kw),
    )
    assert main([*argv, "--max-steps", "1"]) == 0
    assert (tmp_path / "lora.work" / "checkpoint-1").is_dir()
    monkeypatch.setattr(sft.shutil, "rmtree", real_rmtree)
    assert main([*argv, "--max-steps", "2", "--resume"]) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 2 and meta["resumed_from"].endswith("checkpoint-1")
    assert not (tmp_path / "lora.work").exists()
