"""SFT cold start on the tiny local model and the tiny data set (no hub, a few optimizer steps).

The bundled SmolLM2 is stood in for by the tiny model: ``convert_gguf`` is replaced by a function
that writes the tiny model where the conversion would, so the default-model path (the adapter
naming its base by the hub id, the resolver finding the local copy) runs for real in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from langgraph.store.memory import InMemoryStore

import agent.drafting.bundled as bundled_module
from agent.drafting import BASE_MODEL_ID, HFDrafter, resolve_model
from agent.parsing import parse_query
from graphs.query_agent import Deps, build_graph
from memory_store import UserMemory
from tests.helpers.contexts import drafting
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

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bundled_module, "default_gguf_path", lambda: Path(__file__))
    monkeypatch.setattr(bundled_module, "convert_gguf", convert)
    return written


def snapshot_dir(home: Path) -> Path:
    """Where the converted bundled model goes in ``home`` (no HF_* variable set)."""
    repo = home / "hf-hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    return repo / "snapshots" / (repo / "refs" / "main").read_text()


# --------------------------------------------------------------------------- pairs


def test_pairs_are_the_graphs_draft_prompt_and_the_truth(tiny_dataset, tiny_models) -> None:
    from tests.helpers.fakes import ScriptedGroundedDrafter

    pairs, skipped = build_pairs(tiny_dataset, seed=0)
    assert skipped == 0 and len(pairs) == len(tiny_dataset.examples("train")) == 15
    oracle = QueryOracle(
        tiny_dataset, common_root(p.category for p in tiny_dataset.products.values())
    )
    store = InMemoryStore()
    UserMemory(store).ingest_dataset(tiny_dataset, progress=False)
    for pair in pairs[:4]:
        # the graph's own (grounded) draft prompt for this shopper, memory cut before the target
        # (the drafting role, which `--role draft` trains: asked for since issue 27)
        drafter = ScriptedGroundedDrafter([[]])
        catalog = FakeCatalog(tiny_dataset.products.values())
        graph = build_graph(Deps(drafter=drafter, catalog=catalog, ranking=tiny_models)).compile(
            store=store
        )
        graph.invoke({"user_id": pair.user_id, "before": pair.before}, context=drafting())
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


def test_base_model_id_resolves_to_the_converted_copy(
    tmp_path: Path, fake_conversion: list[Path]
) -> None:
    resolved = resolve_model(BASE_MODEL_ID, tmp_path)
    assert resolved.source == str(snapshot_dir(tmp_path))
    assert fake_conversion == [snapshot_dir(tmp_path)]  # converted when missing ...
    assert resolve_model(BASE_MODEL_ID, tmp_path).source == str(snapshot_dir(tmp_path))
    assert fake_conversion == [snapshot_dir(tmp_path)]  # ... and only then
    assert HFDrafter(BASE_MODEL_ID, home=tmp_path).model_name_or_path == str(snapshot_dir(tmp_path))
    assert resolve_model("some/model", tmp_path).source == "some/model"


# --------------------------------------------------------------------------- training


def test_sft_lora_on_the_default_model_writes_a_portable_adapter(
    tmp_path: Path, tiny_recbole_dir: Path, fake_conversion: list[Path]
) -> None:
    from safetensors.torch import load_file

    home, out = tmp_path / "home", tmp_path / "sft"
    argv = ["sft", "--role", "draft", "--data", str(tiny_recbole_dir), "--home", str(home)]
    argv += ["--out", str(out)]
    flags = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2"]
    assert main([*argv, *flags]) == 0
    assert fake_conversion == [snapshot_dir(home)]

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_MODEL_ID  # the hub id, not a local path
    assert config["r"] == 16 and config["lora_alpha"] == 32
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # lora_B starts at zero

    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 2 and meta["data"]["pairs"] == 15
    assert meta["base_model"] == BASE_MODEL_ID
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
    argv = [
        "sft",
        "--role",
        "draft",
        "--data",
        str(tiny_recbole_dir),
        "--model",
        str(tiny_model_dir),
    ]
    assert (
        main([*argv, "--out", str(out), "--full", "--max_steps", "1", "--learning_rate", "1e-2"])
        == 0
    )
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
        (["--max_steps", "0"], "--max_steps must be >= 1"),
        (["--limit", "-3"], "--limit must be >= 1"),
        (["--learning_rate", "nan"], "--learning_rate must be a positive number"),
        (["--resume"], "no checkpoint"),
        (["--role", "rewrite"], "--role must be one of write, draft"),
        (["--from_trajectories", "runs.jsonl"], "--from_trajectories trains the draft role"),
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
    import training.sft.script as sft  # where run_sft looks remove_work_dir up

    out = tmp_path / "lora"
    argv = [
        "sft",
        "--role",
        "draft",
        "--data",
        str(tiny_recbole_dir),
        "--model",
        str(tiny_model_dir),
    ]
    argv += ["--out", str(out), "--per_device_train_batch_size", "4", "--save_steps", "1"]
    # An interrupted run: its checkpoints stay in <out>.work/ (a finished run deletes them).
    real_remove = sft.remove_work_dir
    monkeypatch.setattr(sft, "remove_work_dir", lambda path: None)
    assert main([*argv, "--max_steps", "1"]) == 0
    assert (tmp_path / "lora.work" / "checkpoint-1").is_dir()
    monkeypatch.setattr(sft, "remove_work_dir", real_remove)
    assert main([*argv, "--max_steps", "2", "--resume"]) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 2 and meta["resumed_from"].endswith("checkpoint-1")
    assert not (tmp_path / "lora.work").exists()


def test_sft_stopped_on_its_time_budget_keeps_a_checkpoint_and_resumes(
    tmp_path: Path, tiny_recbole_dir: Path, tiny_model_dir: Path, capsys
) -> None:
    """A CPU run in sittings: --max_minutes ends the first with a checkpoint kept in
    <out>.work/, and --resume finishes the run from it (then the checkpoints go)."""
    out = tmp_path / "lora"
    argv = [
        "sft",
        "--role",
        "draft",
        "--data",
        str(tiny_recbole_dir),
        "--model",
        str(tiny_model_dir),
    ]
    argv += ["--out", str(out), "--per_device_train_batch_size", "4", "--max_steps", "3"]
    assert main([*argv, "--max_minutes", "1e-6"]) == 0
    assert "add --resume to continue" in capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 1 and meta["stopped_by_time_budget"]
    assert (tmp_path / "lora.work" / "checkpoint-1").is_dir()
    assert main([*argv, "--resume"]) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 3 and meta["resumed_from"].endswith("checkpoint-1")
    assert not meta["stopped_by_time_budget"]
    assert not (tmp_path / "lora.work").exists()


def test_sft_ctrl_c_saves_the_step_and_resume_finishes(
    tiny_recbole_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C during training (a real SIGINT, sent at the end of the first step): the step is
    saved as the adapter and a kept checkpoint, the command exits 0 saying so, and --resume
    finishes the run."""
    import os
    import signal

    from training.callbacks import GracefulStop

    real_step_end = GracefulStop.on_step_end

    def press_ctrl_c_once(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
        if state.global_step == 1 and not self.interrupted:
            # unhandled, the SIGINT would stop the whole pytest run: fail the test instead
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            os.kill(os.getpid(), signal.SIGINT)
        return real_step_end(self, args, state, control, **kw)

    monkeypatch.setattr(GracefulStop, "on_step_end", press_ctrl_c_once)
    out = tmp_path / "lora"
    argv = [
        "sft",
        "--role",
        "draft",
        "--data",
        str(tiny_recbole_dir),
        "--model",
        str(tiny_model_dir),
    ]
    argv += ["--out", str(out), "--per_device_train_batch_size", "4", "--max_steps", "3"]
    assert main(argv) == 0
    assert "stopped on Ctrl-C at step 1: add --resume to continue" in capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 1 and meta["stopped_by_interrupt"]
    assert not meta["stopped_by_time_budget"]
    assert (tmp_path / "lora.work" / "checkpoint-1").is_dir()
    monkeypatch.setattr(GracefulStop, "on_step_end", real_step_end)
    assert main([*argv, "--resume"]) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 3 and not meta["stopped_by_interrupt"]
    assert not (tmp_path / "lora.work").exists()


# --------------------------------------------------------------------------- command line


def test_shipped_recipes_parse_with_trl_parser() -> None:
    from training.common import parse_command_line
    from training.sft import QueryAgentSFTConfig, SFTArguments
    from training.writer.grpo import WriterGRPOArguments, WriterGRPOConfig

    repo = Path(__file__).resolve().parents[2]
    args, config = parse_command_line(
        (SFTArguments, QueryAgentSFTConfig),
        [
            "--config",
            str(repo / "recipes" / "writer-sft.yaml"),
            "--gradient_accumulation_steps",
            "2",
        ],
        "sft",
    )
    assert args.data == "data/amazon-scientific" and args.out == "models/smollm2-writer-sft"
    assert args.model == BASE_MODEL_ID and args.role == "write" and not args.full
    assert config.per_device_train_batch_size == 16 and config.learning_rate == 5e-4
    assert config.gradient_accumulation_steps == 2  # any SFTConfig field is a flag
    args, config = parse_command_line(
        (WriterGRPOArguments, WriterGRPOConfig),
        [
            "--config",
            str(repo / "recipes" / "writer-grpo-cpu.yaml"),
            "--resume",
            "--max_steps",
            "3",
        ],
        "write-grpo",
    )
    assert args.model == "models/smollm2-writer-sft" and args.out == "models/smollm2-writer"
    assert args.resume and args.heldout == 500 and args.heldout_every == 50
    assert config.per_device_train_batch_size == 2 * config.num_generations
    assert config.num_generations == 4 and config.max_steps == 3  # the flag wins
    assert config.loss_type == "dapo" and config.scale_rewards == "batch"


def test_help_shows_every_config_field_with_its_default(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--gradient_accumulation_steps" in text and "--report_to" in text
    assert "the usual LoRA rate (adapters start at zero) (default: 0.0002)" in text


def test_sft_from_a_yaml_recipe_reports_to_tensorboard(
    tmp_path: Path, tiny_recbole_dir: Path, tiny_model_dir: Path
) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "recipe-out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"data: {tiny_recbole_dir}\nmodel: {tiny_model_dir}\nout: {out}\nmax_steps: 5\n"
        "role: draft\nper_device_train_batch_size: 2\ngradient_accumulation_steps: 2\n"
        "logging_steps: 1\n"
    )
    assert not main(
        ["sft", "--config", str(recipe), "--max_steps", "1", "--report_to", "tensorboard"]
    )
    meta = json.loads((out / META_FILE).read_text())
    assert meta["steps"] == 1  # the flag overrode the recipe's 5
    assert meta["settings"]["gradient_accumulation_steps"] == 2
    assert meta["settings"]["report_to"] == ["tensorboard"]
    assert list((out / "runs").rglob("events.out.tfevents.*"))  # kept when .work is deleted

    # The model card: the standard YAML header, and the exact command in the body.
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == str(tiny_model_dir)
    assert card.data.library_name == "peft" and card.data.license == "apache-2.0"
    assert "sft" in card.data.tags
    assert f"--config {recipe}" in card.text and "## Training data" in card.text


def test_grpo_user_errors_are_one_line(tmp_path: Path, tiny_recbole_dir: Path, capsys) -> None:
    argv = ["grpo", "--data", str(tiny_recbole_dir), "--out", str(tmp_path / "o")]
    assert main([*argv, "--num_generations", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--num_generations must be >= 2" in err and len(err.splitlines()) == 1
    assert main([*argv, "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.yaml" in err and len(err.splitlines()) == 1
