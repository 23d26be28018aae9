"""The agent graph with fakes: a scripted drafter, an in-memory catalog and store."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.context import Context
from agent.drafting import ScriptedDrafter
from agent.records import QueryAttempt
from graphs.query_agent import Deps, build_graph
from memory_store import UnknownUserError
from tests.helpers.fakes import FakeCatalog

FILAMENT_USER = "A1TINYUSER01"  # bought filament (x3) then beakers
COLD_USER = "A1TINYUSER04"  # listed in user2index, no interactions


def compile_graph(tiny_dataset, store, completions, **kw):
    drafter = ScriptedDrafter(completions)
    catalog = FakeCatalog(tiny_dataset.products.values())
    graph = build_graph(Deps(drafter=drafter, catalog=catalog)).compile(store=store, **kw)
    return graph, drafter, catalog


def test_fitting_draft_is_accepted_without_refinement(tiny_dataset, store) -> None:
    graph, drafter, catalog = compile_graph(tiny_dataset, store, ["Query: glass beaker set"])
    out = graph.invoke({"user_id": FILAMENT_USER}, context=Context(fit_threshold=0.3))
    assert out["query"] == "glass beaker set"
    assert out["source"] == "model"
    assert out["refinements"] == 0
    assert len(out["attempts"]) == 1
    attempt = QueryAttempt.model_validate(out["attempts"][0])
    assert attempt.kind == "draft" and attempt.query == "glass beaker set"
    assert attempt.products and attempt.products[0].category.endswith("Beakers")
    assert attempt.consistency is not None and attempt.consistency.score >= 0.3
    assert out["consistency"] == attempt.consistency.score
    assert catalog.queries == ["glass beaker set"]
    # the memory reached the prompt
    assert "Beakers" in drafter.calls[0][-1]["content"]


def test_unparseable_draft_is_recorded_and_refined(tiny_dataset, store) -> None:
    graph, drafter, _ = compile_graph(tiny_dataset, store, ["", "Query: glass beaker set"])
    out = graph.invoke({"user_id": FILAMENT_USER}, context=Context(fit_threshold=0.3))
    assert [a["kind"] for a in out["attempts"]] == ["draft", "refine"]
    assert out["attempts"][0]["query"] is None
    assert out["attempts"][0]["error"] == "empty completion"
    assert out["attempts"][0]["products"] == []
    assert out["query"] == "glass beaker set"
    # the refine prompt continues the conversation: draft messages, the reply, the feedback
    refine_prompt = drafter.calls[1]
    assert refine_prompt[: len(drafter.calls[0])] == drafter.calls[0]
    assert refine_prompt[-2]["role"] == "assistant"
    assert "not a search query" in refine_prompt[-1]["content"]


def test_refinements_are_bounded_and_best_attempt_wins(tiny_dataset, store) -> None:
    completions = ["Query: duct tape", "Query: multimeter", "Query: gorilla tape", "Query: beaker"]
    graph, _, _ = compile_graph(tiny_dataset, store, completions)
    out = graph.invoke(
        {"user_id": FILAMENT_USER}, context=Context(max_refinements=2, fit_threshold=1.0)
    )
    assert len(out["attempts"]) == 3  # the draft and two refinements, then the budget is spent
    assert out["refinements"] == 2
    assert [a["turn"] for a in out["attempts"]] == [0, 1, 2]
    best = max(out["attempts"], key=lambda a: a["consistency"]["score"])
    assert out["consistency"] == best["consistency"]["score"]
    # the refine turn tells the model what the last query retrieved and what did not fit
    feedback = out["attempts"][1]["messages"][-1]["content"]
    assert 'The query "duct tape" retrieved:' in feedback
    assert "do not fit" in feedback


def test_refinements_can_sample_while_the_draft_stays_greedy(tiny_dataset, store) -> None:
    completions = ["Query: duct tape", "Query: multimeter", "Query: gorilla tape"]
    graph, drafter, _ = compile_graph(tiny_dataset, store, completions)
    ctx = Context(max_refinements=2, fit_threshold=1.0, refine_temperature=0.7)
    graph.invoke({"user_id": FILAMENT_USER}, context=ctx)
    assert drafter.temperatures == [0.0, 0.7, 0.7]
    graph.invoke({"user_id": FILAMENT_USER}, context=Context(max_refinements=1, fit_threshold=1.0))
    assert drafter.temperatures[3:] == [0.0, 0.0]  # unset: refinements use `temperature`
    with pytest.raises(ValueError, match="refine_temperature"):
        Context(refine_temperature=-0.1)


def test_single_turn_never_refines(tiny_dataset, store) -> None:
    graph, _, _ = compile_graph(tiny_dataset, store, ["Query: duct tape"])
    out = graph.invoke(
        {"user_id": FILAMENT_USER}, context=Context(max_refinements=0, fit_threshold=1.0)
    )
    assert len(out["attempts"]) == 1 and out["refinements"] == 0


def test_no_parsed_query_falls_back_to_strongest_interest(tiny_dataset, store) -> None:
    graph, _, _ = compile_graph(tiny_dataset, store, ["..."])
    out = graph.invoke({"user_id": FILAMENT_USER}, context=Context(max_refinements=1))
    assert out["source"] == "fallback"
    assert all(a["query"] is None for a in out["attempts"])
    assert out["query"]  # the top interest-graph category, lower-cased
    assert out["products"]


def test_cold_start_user_gets_an_answer(tiny_dataset, store) -> None:
    graph, drafter, _ = compile_graph(tiny_dataset, store, ["Query: duct tape"])
    out = graph.invoke({"user_id": COLD_USER}, context=Context())
    assert out["query"] == "duct tape"
    assert len(out["attempts"]) == 1
    assert "New shopper" in drafter.calls[0][-1]["content"]
    assert "duct tape" in drafter.calls[0][-1]["content"]  # popular categories offered


def test_unknown_user_raises(tiny_dataset, store) -> None:
    graph, _, _ = compile_graph(tiny_dataset, store, ["Query: x"])
    with pytest.raises(UnknownUserError):
        graph.invoke({"user_id": "NOBODY"})


def test_history_cutoff_hides_later_items(tiny_dataset, store) -> None:
    graph, drafter, _ = compile_graph(tiny_dataset, store, ["Query: filament"])
    out = graph.invoke({"user_id": FILAMENT_USER, "before": 2}, context=Context(max_refinements=0))
    assert out["attempts"]
    prompt = drafter.calls[0][-1]["content"]
    assert "Beakers" not in prompt  # the beaker is the third item, after the cutoff
    assert "Filament" in prompt


def test_checkpointer_keeps_the_trajectory(tiny_dataset, store) -> None:
    graph, _, _ = compile_graph(
        tiny_dataset, store, ["Query: glass beaker set"], checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"user_id": FILAMENT_USER}, config, context=Context(fit_threshold=0.3))
    snapshot = graph.get_state(config)
    assert snapshot.values["attempts"][0]["query"] == "glass beaker set"
    assert snapshot.values["profile"]["user_id"] == FILAMENT_USER
