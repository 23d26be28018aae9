"""A shipped adapter loads with plain PEFT, offline, without the project's loader.

The project's converter fills a temporary Hugging Face hub cache with the bundled SmolLM2 under
its hub id; then a fresh Python process that imports only peft and transformers loads
the shipped writer ``models/smollm2-writer`` (``SHIPPED_MODEL_DIR``) with
``AutoPeftModelForCausalLM.from_pretrained`` (``HF_HUB_OFFLINE=1``) and generates what the
project's loader generates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.drafting import BASE_MODEL_ID, DrafterError, HFDrafter, bundled_model_dir
from agent.drafting.resolve import SHIPPED_MODEL_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROMPT = [{"role": "user", "content": "Write a short search query for a glass beaker set."}]

PLAIN_PEFT = """
import json, sys
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

folder, prompt = sys.argv[1], json.loads(sys.argv[2])
model = AutoPeftModelForCausalLM.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
with torch.no_grad():
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
print(json.dumps({
    "base": model.peft_config["default"].base_model_name_or_path,
    "loaded_from": model.get_base_model().config.name_or_path,
    "ids": out[0, ids["input_ids"].shape[1]:].tolist(),
    "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("agent", "graphs")),
}))
"""


def test_shipped_adapter_loads_with_plain_peft_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("peft")
    pytest.importorskip("gguf")
    adapter = SHIPPED_MODEL_DIR
    assert adapter == REPO / "models" / "smollm2-writer"
    if not (adapter / "adapter_config.json").is_file():
        pytest.skip(f"no shipped writer at {adapter} in this checkout (`make train` builds it)")
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    try:
        snapshot = bundled_model_dir(home=tmp_path / "home")
    except DrafterError as err:
        pytest.skip(str(err))
    assert snapshot.parent.parent.parent == hub  # the variable is honoured
    assert not (tmp_path / "home" / "hf-hub").exists()

    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Not the repository on the path: the child cannot import the project's loader.
        "PYTHONPATH": "",
    }
    run = subprocess.run(
        [sys.executable, "-c", PLAIN_PEFT, str(adapter), json.dumps(PROMPT)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    plain = json.loads(run.stdout.strip().splitlines()[-1])
    assert plain["base"] == BASE_MODEL_ID
    assert plain["loaded_from"] == BASE_MODEL_ID  # found in the cache holding only our copy
    assert plain["project_modules"] == []
    assert plain["ids"]

    # The project's loader (adapter merged into the base) generates the same tokens.
    ours = HFDrafter(str(adapter), home=tmp_path / "home", device="cpu")
    assert ours.resolved.base_source == str(snapshot)
    [g] = ours.generate([PROMPT], max_new_tokens=8)
    assert g.completion_token_ids == plain["ids"][: len(g.completion_token_ids)]
