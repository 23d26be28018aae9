"""A tiny Llama-architecture causal LM with a word-level tokenizer, built offline in < 2 s.

It exercises the real Hugging Face code paths (chat template, left padding, ``generate``, save and
reload) without a hub or the 18 s SmolLM2 conversion. Its weights are random: what it says is
meaningless but deterministic.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<|im_start|>", "<|im_end|>"]
# A small e-commerce vocabulary so prompts tokenize to real ids rather than <unk>.
WORDS = """
system user assistant you are a helpful shopping assistant write search query for the an and of
with to in on best cheap wireless bluetooth headphones earbuds yoga mat running shoes men women
kids usb c cable charger phone laptop stand desk lamp coffee grinder kitchen knife set steel
chef japanese winter jacket backpack water bottle gift ideas under 50 dollars brand category
products retrieved refine previous results did not match profile likes buys prefers electronics
sports outdoors home beauty books toys garden tools pet supplies office
""".split()
PUNCTUATION = list(".,:;!?'\"-()/")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer():  # -> PreTrainedTokenizerFast
    """A word-level tokenizer (whitespace and punctuation split) with a ChatML-like template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(SPECIAL_TOKENS + WORDS + PUNCTUATION))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        # No pad token on purpose: the drafter must fall back to eos.
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_causal_lm(path: str | Path, *, seed: int = 0) -> Path:
    """Build and save a tiny Llama (hidden 32, 2 layers, 2 heads) with its tokenizer at ``path``.

    Returns:
        ``path`` as a ``Path``: a folder ``from_pretrained`` loads (model, tokenizer, template).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        # Large initial weights spread the logits, so greedy decoding has no near-ties that
        # float noise between batched and single runs could flip.
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def stand_in_adapter(folder: str | Path, seed: int = 0) -> Path:
    """A PEFT adapter folder of the bundled SmolLM2 as model identity and resolution see it (its
    config, weights' bytes, a tokenizer config and a model card), not loadable: for tests that
    identify or name a model but load none, so they do not depend on the adapters the tree
    ships."""
    import json
    import random

    from agent.drafting import BASE_MODEL_ID

    folder = Path(folder)
    folder.mkdir(parents=True)
    config = {"base_model_name_or_path": BASE_MODEL_ID, "peft_type": "LORA", "r": 16}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (folder / "adapter_model.safetensors").write_bytes(random.Random(seed).randbytes(4096))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8192}))
    (folder / "README.md").write_text(f"stand-in adapter {seed}")
    return folder
