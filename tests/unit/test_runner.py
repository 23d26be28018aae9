"""The offline runner: ingest as the CLI does, graph.batch over many inputs, outputs in order."""

from __future__ import annotations

import pytest
from langgraph.store.memory import InMemoryStore

from agent.drafting import ScriptedDrafter
from agent.nodes import CATALOG_NAMESPACE, CATALOG_STATS_KEY
from agent.state import output_json
from graphs.offline.ingest import catalog_version, ingest
from graphs.offline.runner import OfflineRunner, draft_prompt_at, profile_at
from graphs.query_agent import Deps, build_graph
from graphs.record import Target
from memory_store import UserMemory
from tests.helpers.contexts import drafting
from tests.helpers.fakes import FakeCatalog
from tests.helpers.precompute import reply

INPUTS = [
    {"user_id": "A1TINYUSER01", "before": 5},
    {"user_id": "A1TINYUSER02"},
    {"user_id": "A1TINYUSER03", "before": 2},
    {"user_id": "A1TINYUSER04"},  # no history: the catalog statistics' popular categories
    {"user_id": "A1TINYUSER01", "before": 0},
    {"user_id": "A1TINYUSER03"},
]
# The runs draft (the scripted free drafter's calls are what is batched and recorded): the
# drafting role, asked for since issue 27.
CTX = drafting(max_refinements=1)


@pytest.fixture()
def runner(tiny_dataset, tiny_models) -> OfflineRunner:
    return OfflineRunner.from_dataset(
        tiny_dataset,
        catalog=FakeCatalog(tiny_dataset.products.values()),
        drafter=ScriptedDrafter(reply),
        ranking=tiny_models,
        context=CTX,
        batch_size=2,
    )


def test_runner_equals_one_invoke_per_input(
    tiny_dataset, tiny_models, runner: OfflineRunner
) -> None:
    result = runner.run(INPUTS, records=True, chunk_size=4)  # two graph.batch calls
    # the same graph, one plain invoke at a time, on the runner's store
    plain = build_graph(
        Deps(
            drafter=ScriptedDrafter(reply),
            catalog=FakeCatalog(tiny_dataset.products.values()),
            ranking=tiny_models,
        )
    ).compile(store=runner.store)
    expected = [output_json(plain.invoke(dict(i), context=CTX)) for i in INPUTS]
    assert result.outputs == expected
    assert [(r.user_id, r.before) for r in result.records] == [
        (i["user_id"], i.get("before")) for i in INPUTS
    ]
    for record, out in zip(result.records, result.outputs, strict=True):
        assert record.final.query == out["query"] and record.profile == out["profile"]
        assert [s.model_dump() for s in record.steps] == out["attempts"]
        assert record.model == "scripted"
    assert len({r.run_id for r in result.records}) == len(INPUTS)
    # the micro-batcher shared model calls between concurrent runs
    assert max(runner.drafter.batch_sizes) == 2


def test_from_dataset_ingests_as_the_cli_does(tiny_dataset, runner: OfflineRunner) -> None:
    stats = runner.store.get(CATALOG_NAMESPACE, CATALOG_STATS_KEY)
    assert stats is not None
    assert stats.value["popular_categories"] and stats.value["dataset"] == tiny_dataset.name
    assert stats.value["catalog_version"] == catalog_version(tiny_dataset.products.values())
    assert UserMemory(runner.store).n_events("A1TINYUSER01") == 5
    # a shopper with no history sees the catalog's popular categories, as in the served graph
    [cold] = runner.run([{"user_id": "A1TINYUSER04"}]).outputs
    prompt = cold["attempts"][0]["messages"][-1]["content"]
    assert "Popular categories in the store: " + stats.value["popular_categories"][0] in prompt


def test_ingest_leaves_a_read_only_catalog_alone_and_fills_a_writable_one(tiny_dataset) -> None:
    class Writable(FakeCatalog):
        def upsert(self, products, batch_size: int = 256, progress: bool = True) -> int:
            self.upserted = [p.item_id for p in products]
            return len(self.upserted)

    catalog = Writable([])
    result = ingest(tiny_dataset, InMemoryStore(), catalog, progress=False)
    assert sorted(catalog.upserted) == sorted(tiny_dataset.products)
    assert result.products_written == len(tiny_dataset.products) == result.products
    assert (
        ingest(tiny_dataset, InMemoryStore(), FakeCatalog([]), progress=False).products_written == 0
    )


def test_chunks_and_targets_keep_input_order(runner: OfflineRunner) -> None:
    targets = [Target(item_id=f"T{n}", title="t", query=None) for n in range(len(INPUTS))]
    starts, records = [], []
    for start, outputs, recs in runner.iter_chunks(
        INPUTS, records=True, targets=targets, chunk_size=4
    ):
        starts.append(start)
        assert len(outputs) == len(recs)
        records += recs
    assert starts == [0, 4]
    assert [r.target.item_id for r in records] == [t.item_id for t in targets]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="targets"):
        next(runner.iter_chunks(INPUTS, targets=targets[:2]))


def test_draft_prompt_at_is_the_graphs_draft_prompt(tiny_dataset, runner: OfflineRunner) -> None:
    [out] = runner.run([{"user_id": "A1TINYUSER03", "before": 3}]).outputs
    profile, messages = draft_prompt_at(tiny_dataset, "A1TINYUSER03", 3)
    assert messages == out["attempts"][0]["messages"]
    assert profile.model_dump(mode="json") == out["profile"]
    assert profile_at(tiny_dataset, "A1TINYUSER03").n_events == len(
        tiny_dataset.sequences["A1TINYUSER03"]
    )
