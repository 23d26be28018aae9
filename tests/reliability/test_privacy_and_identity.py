"""Issue 11, probes 3 and 6: caches keyed by the model's content, not its path; the home and what
QueryAgent writes in it private by default."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.drafting import ScriptedDrafter
from agent.model_identity import model_digest
from tests.helpers.fakes import FakeCatalog
from tests.helpers.tiny_models import stand_in_adapter
from training.evaluation.runner import EvalConfig, Evaluator, MethodSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two adapters of the same base: one, and the same one retrained (other weights). These
    tests identify models and load none: stand-ins, whatever adapters the tree ships."""
    root = tmp_path_factory.mktemp("adapters")
    return stand_in_adapter(root / "sft", 0), stand_in_adapter(root / "grpo", 1)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most shells have: files 0644 unless the code says otherwise
    try:
        yield
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- probe 3


class CountingFactory:
    """Drafters for the evaluator; counts how often a model had to be loaded."""

    def __init__(self) -> None:
        self.loaded: list[str | None] = []

    def __call__(self, model: str | None) -> ScriptedDrafter:
        self.loaded.append(model)
        return ScriptedDrafter(["Query: duct tape"])


def evaluate(tiny_dataset, model: Path, cache_dir: Path, factory: CountingFactory) -> None:
    evaluator = Evaluator(
        tiny_dataset,
        EvalConfig(data=str(tiny_dataset.root), split="test", seed=0),
        cache_dir=cache_dir,
        catalog=FakeCatalog(tiny_dataset.products.values()),
        drafter_factory=factory,
    )
    evaluator.run(MethodSpec("llm-direct", str(model)), progress=False)


def test_eval_cache_follows_the_model_not_its_path(tiny_dataset, tmp_path: Path, adapters) -> None:
    SFT, GRPO = adapters
    model, cache = tmp_path / "model", tmp_path / "report.cache"
    shutil.copytree(SFT, model)
    factory = CountingFactory()
    evaluate(tiny_dataset, model, cache, factory)
    evaluate(tiny_dataset, model, cache, factory)
    assert len(factory.loaded) == 1  # the same model: served from the cache

    shutil.rmtree(model)
    shutil.copytree(GRPO, model)  # retrained in place (what `make train-sft` does)
    evaluate(tiny_dataset, model, cache, factory)
    assert len(factory.loaded) == 2  # a different model at the same path: evaluated again


def test_model_digest_hashes_contents(tmp_path: Path, adapters) -> None:
    SFT, GRPO = adapters
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(SFT, a)
    shutil.copytree(SFT, b)
    assert model_digest(str(a)) == model_digest(str(b)) == model_digest(str(SFT))
    assert model_digest(str(SFT)) != model_digest(str(GRPO))

    (b / "README.md").write_text("a new model card")  # docs do not change the model
    assert model_digest(str(b)) == model_digest(str(a))

    # One flipped byte, same size and mtime: size+mtime would miss it, the digest does not.
    weights = b / "adapter_model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
    assert model_digest(str(b)) != model_digest(str(a))

    config = a / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": ', '"r":  '))
    assert model_digest(str(a)) != model_digest(str(SFT))
    hub = model_digest("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert len(hub) == 16 and hub != model_digest("HuggingFaceTB/SmolLM2-360M-Instruct")


# --------------------------------------------------------------------------- probe 6


@pytest.mark.integration
def test_new_home_and_its_files_are_private(tmp_path: Path, usual_umask: None) -> None:
    from graphs.cli import main

    home = tmp_path / "fresh" / "home"
    data = REPO / "tests" / "fixtures" / "tiny-jsonl"
    assert main(["ingest", "--data", str(data), "--home", str(home)]) == 0
    assert mode(home) == 0o700
    assert mode(home / "memory.sqlite") == 0o600
    assert mode(home / "chroma") == 0o700
    assert mode(home / "chroma" / "chroma.sqlite3") == 0o600
    for sidecar in ("memory.sqlite-wal", "memory.sqlite-shm"):
        if (home / sidecar).exists():
            assert mode(home / sidecar) == 0o600


def test_eval_cache_is_private(tiny_dataset, tmp_path: Path, usual_umask: None, adapters) -> None:
    SFT, _ = adapters
    cache = tmp_path / "report.cache"
    evaluate(tiny_dataset, SFT, cache, CountingFactory())
    files = list(cache.iterdir())
    assert files and mode(cache) == 0o700
    assert all(mode(f) == 0o600 for f in files)
