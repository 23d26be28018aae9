"""Picklable deps for the precompute engines in tests: Ray actors import and call these."""

from __future__ import annotations

from pathlib import Path

from agent.drafting import ScriptedDrafter
from graphs.query_agent import Deps
from memory_store import load_dataset
from tests.helpers.fakes import FakeCatalog

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-recbole"


def reply(messages: list[dict[str, str]]) -> str:
    """A query that depends on the shopper's prompt, so mixed-up shoppers would show."""
    text = messages[-1]["content"]
    if "Beaker" in text:
        return "Query: glass beaker set"
    if "Multimeter" in text:
        return "Query: digital multimeter"
    return "Query: duct tape"


def scripted_deps(models: str | Path) -> Deps:
    """The scripted drafter, the fake catalog over the tiny data set's products and the fitted
    models saved in the folder ``models`` (``CatalogModels.save``)."""
    from agent.ranking.fit import CatalogModels

    products = load_dataset(TINY).products.values()
    return Deps(
        drafter=ScriptedDrafter(reply),
        catalog=FakeCatalog(products),
        ranking=CatalogModels.load(Path(models)),
    )
