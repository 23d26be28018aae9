"""The agent graph (recall, then rank) with fakes: a scripted grounded drafter, an in-memory
catalog and store, and ranking models fitted on the tiny catalog."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.context import Context
from agent.drafting import ScriptedDrafter
from agent.records import FitCheck, QueryAttempt, RetrievedProduct
from graphs.query_agent import Deps, build_graph
from memory_store import UnknownUserError, UserProfile
from tests.helpers.contexts import drafting
from tests.helpers.fakes import FakeCatalog, ScriptedGroundedDrafter

FILAMENT_USER = "A1TINYUSER01"  # bought filament (x3) then beakers
COLD_USER = "A1TINYUSER04"  # listed in user2index, no interactions
FILAMENT = "additive manufacturing products 3d printing supplies filament"
BEAKERS = "lab scientific products glassware labware beakers"
TAPE = "tapes adhesives sealants adhesive duct tape"
METERS = "test measure inspect electrical testing multimeters analyzers digital"


def compile_graph(tiny_dataset, store, tiny_models, drafter, **kw):
    catalog = FakeCatalog(tiny_dataset.products.values())
    deps = Deps(drafter=drafter, catalog=catalog, ranking=tiny_models)
    return build_graph(deps).compile(store=store, **kw), catalog


def test_candidates_name_their_sources_and_every_query_is_the_catalogs(
    tiny_dataset, store, tiny_models
) -> None:
    drafter = ScriptedGroundedDrafter([[TAPE, "not a catalog query", BEAKERS]])
    graph, _ = compile_graph(tiny_dataset, store, tiny_models, drafter)
    out = graph.invoke({"user_id": FILAMENT_USER, "before": 3}, context=drafting(fit_threshold=0))
    attempts = out["attempts"]
    assert all(isinstance(a, QueryAttempt) for a in attempts)  # typed state, not dicts
    queries = [a.query for a in attempts]
    assert len(queries) == len(set(queries))  # one attempt per query
    assert set(queries) <= set(tiny_models.vocab.queries)
    assert "not a catalog query" not in queries  # off the trie: never proposed
    by_query = {a.query: a for a in attempts}
    assert by_query[TAPE].sources[0] == "model" and by_query[TAPE].logprob == -1.0
    assert "model" in by_query[BEAKERS].sources and "memory" in by_query[BEAKERS].sources
    assert by_query[FILAMENT].sources[0] == "memory"  # the last purchase's query, not proposed
    for a in attempts:
        assert a.products and a.check is not None and 0 <= a.check.fit <= 1
    assert out["query"] in queries and out["refinements"] == 0
    best = max(attempts, key=lambda a: a.rank_score or 0.0)
    assert out["query"] == best.query and out["fit"] == best.check.fit
    assert out["source"] == best.sources[0]
    # the memory reached the (grounded, worked-turn-free) prompt; the cutoff hid later items
    prompt = drafter.calls[0]
    assert len(prompt) == 2 and "Filament" in prompt[-1]["content"]
    assert "Multimeter" not in prompt[-1]["content"]


def test_refinement_sees_the_verdict_and_proposes_new_queries(
    tiny_dataset, store, tiny_models
) -> None:
    from agent.ranking.fit import CatalogModels

    # Without a next-item model every candidate's chance is 0: nothing clears the threshold.
    unfit = CatalogModels(tiny_models.vocab, None, None)
    drafter = ScriptedGroundedDrafter([[TAPE], [TAPE, METERS], [BEAKERS]])
    graph, _ = compile_graph(tiny_dataset, store, unfit, drafter)
    ctx = drafting(max_refinements=2, fit_threshold=0.5, max_candidates=2)
    out = graph.invoke({"user_id": FILAMENT_USER, "before": 3}, context=ctx)
    assert out["refinements"] == 2  # the budget is spent
    turns = [(a.turn, a.kind, a.query) for a in out["attempts"]]
    assert (1, "refine", METERS) in turns  # the tried TAPE is not proposed again
    refine_prompt = drafter.calls[1]
    assert refine_prompt[:2] == drafter.calls[0]
    assert refine_prompt[-2] == {"role": "assistant", "content": f"Query: {TAPE}"}
    assert "chance the next purchase is among the products" in refine_prompt[-1]["content"]


def test_accepts_without_refining_when_the_best_clears_the_threshold(
    tiny_dataset, store, tiny_models
) -> None:
    drafter = ScriptedGroundedDrafter([[TAPE]])
    graph, _ = compile_graph(tiny_dataset, store, tiny_models, drafter)
    out = graph.invoke({"user_id": FILAMENT_USER}, context=drafting(fit_threshold=0.0))
    assert out["refinements"] == 0 and len(drafter.calls) == 1


def test_without_a_model_recall_and_the_check_still_answer(
    tiny_dataset, store, tiny_models
) -> None:
    graph, _ = compile_graph(tiny_dataset, store, tiny_models, None)
    out = graph.invoke({"user_id": FILAMENT_USER}, context=Context(max_refinements=2))
    assert out["query"] in tiny_models.vocab.queries and out["refinements"] == 0
    assert all("model" not in a.sources for a in out["attempts"])


def test_free_generation_remains_an_option(tiny_dataset, store, tiny_models) -> None:
    drafter = ScriptedDrafter(["Query: glass beaker set"])
    graph, catalog = compile_graph(tiny_dataset, store, tiny_models, drafter)
    out = graph.invoke({"user_id": FILAMENT_USER}, context=drafting(grounded=False))
    model = [a for a in out["attempts"] if a.sources == ["model"]]
    assert model and model[0].query == "glass beaker set"
    assert "glass beaker set" in catalog.queries  # not a vocabulary query: searched for real
    assert len(drafter.calls[0]) > 2  # the free prompt keeps its worked turns


def test_cold_start_user_gets_a_catalog_query(tiny_dataset, store, tiny_models) -> None:
    drafter = ScriptedGroundedDrafter([[TAPE]])
    graph, _ = compile_graph(tiny_dataset, store, tiny_models, drafter)
    out = graph.invoke({"user_id": COLD_USER}, context=drafting())
    assert out["query"] in tiny_models.vocab.queries
    assert "New shopper" in drafter.calls[0][-1]["content"]
    assert out["refinements"] == 0


def test_unknown_user_raises(tiny_dataset, store, tiny_models) -> None:
    graph, _ = compile_graph(tiny_dataset, store, tiny_models, ScriptedGroundedDrafter([]))
    with pytest.raises(UnknownUserError):
        graph.invoke({"user_id": "NOBODY"})


@pytest.mark.parametrize("saver", ["memory", "sqlite"])
def test_checkpointer_keeps_the_typed_trajectory(
    tiny_dataset, store, tiny_models, tmp_path, saver
) -> None:
    """The typed state survives LangGraph's checkpointers (JsonPlusSerializer): read back from
    the checkpoint, the profile, attempts, checks and products are the same models."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    if saver == "memory":
        checkpointer = InMemorySaver()
    else:
        conn = sqlite3.connect(tmp_path / "checkpoints.sqlite", check_same_thread=False)
        checkpointer = SqliteSaver(conn)
    drafter = ScriptedGroundedDrafter([[BEAKERS]])
    graph, _ = compile_graph(tiny_dataset, store, tiny_models, drafter, checkpointer=checkpointer)
    config = {"configurable": {"thread_id": "t1"}}
    out = graph.invoke({"user_id": FILAMENT_USER}, config, context=Context(fit_threshold=0.0))
    values = graph.get_state(config).values
    assert BEAKERS in [a.query for a in values["attempts"]]
    assert isinstance(values["profile"], UserProfile)
    assert values["profile"].user_id == FILAMENT_USER
    assert all(isinstance(a, QueryAttempt) for a in values["attempts"])
    assert all(isinstance(a.check, FitCheck) for a in values["attempts"])
    assert all(isinstance(p, RetrievedProduct) for p in values["products"])
    assert values["attempts"] == out["attempts"] and values["profile"] == out["profile"]
    assert values["products"] == out["products"] and values["fit"] == out["fit"]
    if saver == "sqlite":
        checkpointer.conn.close()


def test_typed_state_survives_strict_msgpack() -> None:
    """With ``LANGGRAPH_STRICT_MSGPACK=true`` (LangGraph's announced future default) a
    checkpointer revives only the types it was told about; the compiled graph registers the
    State schema's models, so the checkpoint test above still reads models back, not dicts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "LANGGRAPH_STRICT_MSGPACK": "true"}
    test = f"{__file__}::test_checkpointer_keeps_the_typed_trajectory"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
