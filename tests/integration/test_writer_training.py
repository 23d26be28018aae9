"""The writer's two training stages on the tiny local model and the tiny data set: SFT on the
labelled writing prompts, then a CPU smoke of GRPO groups of written texts, rewarded by what
the text retrieves through the real fused search (Chroma + MiniLM) and watched on held-out
``valid`` shoppers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main
from training.writer.grpo import WriterGRPOArguments, WriterGRPOConfig, run_writer_grpo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def writer_sft(tmp_path_factory, tiny_recbole_dir, tiny_model_dir) -> tuple[Path, Path]:
    """A writer adapter from 2 SFT steps on the tiny model; returns (adapter, home)."""
    home = tmp_path_factory.mktemp("writer-home")
    out = tmp_path_factory.mktemp("writer") / "sft"
    argv = ["sft", "--data", str(tiny_recbole_dir), "--home", str(home), "--out", str(out)]
    flags = [
        "--model",
        str(tiny_model_dir),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
    ]
    assert main([*argv, *flags]) == 0
    return out, home


def test_sft_writes_a_writer_adapter_on_the_top_layers(writer_sft) -> None:
    out, _ = writer_sft
    meta = json.loads((out / "queryagent.meta.json").read_text())
    assert meta["role"] == "write" and meta["steps"] == 2
    assert meta["training"]["lora"]["top_layers"] == 10
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [0, 1]  # the tiny model's two layers: all of them
    card = (out / "README.md").read_text()
    assert "writer" in card and "query text" in card


def test_grpo_smoke_on_written_texts(writer_sft, tiny_recbole_dir, tmp_path) -> None:
    from safetensors.torch import load_file

    from memory_store import load_dataset

    adapter, home = writer_sft
    before = load_file(adapter / "adapter_model.safetensors")
    out = tmp_path / "grpo"
    args = WriterGRPOArguments(
        data=str(tiny_recbole_dir),
        model=str(adapter),
        out=str(out),
        home=str(home),
        heldout=3,
        heldout_every=1,
    )
    # A random tiny LM: a hot temperature makes a group's texts (and rewards) differ.
    config = WriterGRPOConfig(
        max_steps=2,
        num_generations=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        temperature=4.0,
        max_completion_length=8,
    )
    meta = run_writer_grpo(args, config, load_dataset(tiny_recbole_dir))
    assert meta["steps"] == 2 and meta["role"] == "write"
    assert meta["rewards"] == ["text_rank_reward", "text_share_reward", "text_brevity_reward"]
    after = load_file(out / "adapter_model.safetensors")
    assert any(float((after[k] - before[k]).abs().sum()) > 0 for k in before if k in after)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all("rewards/text_rank_reward/mean" in r and "kl" in r and "entropy" in r for r in steps)
    # the held-out curve: before training and after each step, with its interval, beside the
    # intent's own text (the reference line)
    held = [r for r in rows if "heldout/reward/mean" in r]
    assert [r["step"] for r in held] == [0, 1, 2]
    assert all(
        r["heldout/reward/low"] <= r["heldout/reward/mean"] <= r["heldout/reward/high"]
        for r in held
    )
    assert any("intent/reward/mean" in r for r in rows)
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    card = (out / "README.md").read_text()
    assert "writer" in card and "Held-out reward" in card


def test_grpo_refuses_a_bare_model_in_one_line(
    tiny_recbole_dir, tiny_model_dir, tmp_path, capsys
) -> None:
    code = main(
        [
            "write-grpo",
            "--data",
            str(tiny_recbole_dir),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "o"),
            "--heldout",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "SFT writer adapter" in err[0]
