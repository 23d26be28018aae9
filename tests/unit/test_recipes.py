"""The tree holds what ships: ``make train`` rebuilds the shipped writer and every adapter in
``models/``, each with its recipe, every stage after the first starting from the one before it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from agent.drafting import BASE_MODEL_ID
from agent.drafting.resolve import SHIPPED_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]


def make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target (tab-indented lines under ``target:``)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return body


def stages() -> list[tuple[str, Path]]:
    """``make train``'s training stages in order, each with its recipe file."""
    out = []
    for line in make_recipe("train"):
        target = line.removeprefix("$(MAKE) ")
        configs = [m for cmd in make_recipe(target) for m in re.findall(r"--config (\S+)", cmd)]
        if configs:
            (config,) = configs
            out.append((target, REPO / config))
    return out


def test_make_train_rebuilds_exactly_the_adapters_in_the_tree() -> None:
    recipes = [yaml.safe_load(path.read_text()) for _, path in stages()]
    assert [target for target, _ in stages()] == ["train-writer-sft", "train-writer-grpo"]
    assert make_recipe("train")[-1] == "$(MAKE) eval"
    assert recipes[0].get("role", "write") == "write"  # the writer's SFT, not the drafter's
    outs = [recipe["out"] for recipe in recipes]
    # The last stage is the shipped writer; every adapter in the tree is a stage's (the SFT
    # cold start is a lineage stage, which the tree may hold or not).
    assert REPO / outs[-1] == SHIPPED_MODEL_DIR
    shipped = sorted(f"models/{p.name}" for p in (REPO / "models").iterdir() if p.is_dir())
    assert set(shipped) <= set(outs), "adapters in models/ that no `make train` stage rebuilds"
    # Lineage: the first stage starts from the base, each next one from the stage before it.
    assert recipes[0]["model"] == BASE_MODEL_ID
    for before, after in zip(recipes, recipes[1:], strict=False):
        assert after["model"] == before["out"]


def test_every_recipe_is_a_stage_of_make_train() -> None:
    used = {path.name for _, path in stages()}
    assert used == {p.name for p in (REPO / "recipes").glob("*.yaml")}
