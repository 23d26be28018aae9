"""The training reward's four terms and the dense rank term on hand-built v1 trajectories, and
the GDPO switch.

Hand-computed ROUGE-L F1 values used below (rouge-score tokenizes on non-alphanumerics):
"glass beakers" vs "glassware labware beakers": LCS 1, P 1/2, R 1/3, F1 = 0.4.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from training.rewards import (
    REWARD_TERMS,
    ItemReward,
    QueryReward,
    RankReward,
    format_reward,
    item_reward,
    optimiser_kwargs,
    query_reward,
    tool_reward,
    training_rewards,
)

TRUTH = "glassware labware beakers"
TARGET_ID = "B000TINY05"
TARGET_TITLE = "Eisco Labs Borosilicate Griffin Beaker, 250 ml, Pack of 12"


def product(item_id: str, rank: int, title: str | None = None) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "title": title if title is not None else f"Unrelated thing {item_id}",
        "category": "Lab",
        "brand": "X",
        "rank": rank,
        "score": 1.0 / rank,
    }


def step(
    completion: str, query: str | None, retrieved: list[dict[str, Any]] | None = None, turn=0
) -> dict[str, Any]:
    return {
        "node": "draft_query" if turn == 0 else "refine_query",
        "step": turn + 2,
        "turn": turn,
        "kind": "draft" if turn == 0 else "refine",
        "messages": [],
        "completion": completion,
        "prompt_token_ids": [1, 2],
        "completion_token_ids": [3],
        "query": query,
        "error": None if query else "no query",
        "retrieved": retrieved or [],
        "consistency": None,
    }


def trajectory(
    steps: list[dict[str, Any]],
    *,
    final_query: str | None = None,
    source: str = "model",
    product_ids: list[str] | None = None,
    memory_recalled: bool = True,
    target: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": "queryagent.trajectory/v1",
        "run_id": "r",
        "thread_id": "t",
        "user_id": "u",
        "before": 3,
        "model": "m",
        "created": "2026-01-01T00:00:00Z",
        "memory_recalled": memory_recalled,
        "profile": {},
        "steps": steps,
        "final": {
            "query": final_query,
            "source": source,
            "consistency": None,
            "product_ids": product_ids or [],
        },
        "target": target,
    }


def call(fn, trajectories: list[Any], **columns: Any) -> list[float | None]:
    completions = [[{"role": "assistant", "content": "x"}] for _ in trajectories]
    return fn(completions, trajectory=trajectories, **columns)


HIT = [product("B000TINY04", 1, "Eisco Labs Low Form Glass Beaker Set"), product(TARGET_ID, 2)]


# --------------------------------------------------------------------------- r_format


def test_format_reward_is_the_fraction_of_parsed_turns() -> None:
    good = trajectory([step("Query: glass beakers", "glass beakers", HIT)])
    half = trajectory([step("", None), step("Query: glass beakers", "glass beakers", turn=1)])
    third = trajectory(
        [step("Identity: shopper", None), step("Query: a", "a", turn=1), step("", None, turn=2)]
    )
    none_parsed = trajectory([step("Categories: x", None)])
    assert call(format_reward, [good, half, third, none_parsed]) == pytest.approx(
        [1.0, 0.5, 1 / 3, 0.0]
    )


def test_format_reward_edge_cases() -> None:
    assert call(format_reward, [trajectory([]), None]) == [0.0, None]
    # the completion is re-parsed: a recorded query does not rescue an unparseable completion
    assert call(format_reward, [trajectory([step("", "glass beakers")])]) == [0.0]
    # a JSON-text trajectory is accepted too
    assert call(format_reward, [json.dumps(trajectory([step("Query: x", "x")]))]) == [1.0]


# --------------------------------------------------------------------------- r_tool


def test_tool_reward() -> None:
    searched = [step("Query: glass beakers", "glass beakers", HIT)]
    cases = [
        trajectory(searched),  # memory + search
        trajectory(searched, memory_recalled=False),  # search only
        trajectory([step("", None)]),  # memory, no valid query
        trajectory([step("Query: zzz", "zzz", [])]),  # valid query that retrieved nothing
        trajectory([], memory_recalled=False),
        trajectory([step("", None), *[step("Query: b", "b", HIT, turn=1)]]),  # refine searched
    ]
    assert call(tool_reward, cases) == [1.0, 0.5, 0.5, 0.5, 0.0, 1.0]


def v2(trajectory_v1: dict[str, Any]) -> dict[str, Any]:
    """The same trajectory in the v2 shape: steps keep the attempt's ``products``; a profile
    snapshot (None when memory was not recalled) instead of ``memory_recalled``."""
    out = {k: v for k, v in trajectory_v1.items() if k != "memory_recalled"}
    out["schema"] = "queryagent.trajectory/v2"
    out["profile"] = {} if trajectory_v1["memory_recalled"] else None
    out["steps"] = [
        {
            **{k: v for k, v in s.items() if k not in ("retrieved", "node", "step")},
            "products": s["retrieved"],
        }
        for s in trajectory_v1["steps"]
    ]
    return out


def test_rewards_score_v2_trajectories_as_v1() -> None:
    searched = [step("", None), step("Query: glass beakers", "glass beakers", HIT, turn=1)]
    cases = [
        trajectory(searched, final_query="glass beakers"),
        trajectory(searched, final_query="glass beakers", memory_recalled=False),
        trajectory([step("Query: zzz", "zzz", [])], final_query="zzz"),
    ]
    columns = {"target_item": [TARGET_ID] * 3, "target_title": ["Glass Beaker Set"] * 3}
    for fn in (tool_reward, item_reward):
        assert call(fn, [v2(c) for c in cases], **columns) == call(fn, cases, **columns)
    assert call(tool_reward, [v2(c) for c in cases]) == [1.0, 0.5, 0.5]


# --------------------------------------------------------------------------- r_query


def test_query_reward_exact_soft_and_miss() -> None:
    exact = trajectory([], final_query="Glassware, Labware  beakers")  # normalizes to TRUTH
    soft = trajectory([], final_query="glass beakers")
    miss = trajectory([], final_query="duct tape")
    out = call(query_reward, [exact, soft, miss], target_query=[TRUTH] * 3)
    assert out == pytest.approx([1.0, 0.5 * 0.4, 0.0])


def test_query_reward_weights_are_parameters() -> None:
    soft = trajectory([], final_query="glass beakers")
    out = call(QueryReward(hard_weight=1.0, soft_weight=1.0), [soft], target_query=[TRUTH])
    assert out == pytest.approx([0.4])


def test_query_reward_edge_cases() -> None:
    no_query = trajectory([step("", None)], final_query=None)
    fallback = trajectory([step("", None)], final_query=TRUTH, source="fallback")
    assert call(query_reward, [no_query, fallback], target_query=[TRUTH, TRUTH]) == [0.0, 0.0]
    # missing target: no column and no trajectory target -> None; an empty target -> None
    assert call(query_reward, [trajectory([], final_query=TRUTH)]) == [None]
    assert call(query_reward, [trajectory([], final_query=TRUTH)], target_query=[""]) == [None]
    # the trajectory's own target is the fallback, and a column entry of None defers to it
    own = trajectory([], final_query=TRUTH, target={"item_id": "i", "title": "t", "query": TRUTH})
    assert call(query_reward, [own]) == [1.0]
    assert call(query_reward, [own], target_query=[None]) == [1.0]
    # the column wins over the trajectory's target
    assert call(query_reward, [own], target_query=["duct tape"]) == [0.0]


# --------------------------------------------------------------------------- r_item


def test_item_reward_hit_and_title_rouge() -> None:
    hit = trajectory(
        [step("Query: glass beakers", "glass beakers", HIT)], final_query="glass beakers"
    )
    # the target is not retrieved; the best title shares "eisco labs" and "beaker"
    near = trajectory(
        [step("Query: beaker set", "beaker set", [HIT[0], product("B000TINY09", 2)])],
        final_query="beaker set",
    )
    columns = {"target_item": [TARGET_ID] * 2, "target_title": [TARGET_TITLE] * 2}
    out = call(item_reward, [hit, near], **columns)
    # hit: the target's own title (rank 2, "Unrelated thing ...") vs the real title -> the
    # best ROUGE-L is the rank-1 beaker set's
    from training.evaluation.metrics import rouge_l

    best_near = rouge_l("Eisco Labs Low Form Glass Beaker Set", TARGET_TITLE)
    # tokens: eisco labs low form glass beaker set (7) vs eisco labs borosilicate griffin beaker
    # 250 ml pack of 12 (10); LCS "eisco labs beaker" = 3 -> F1 = 2*3/(7+10)
    assert best_near == pytest.approx(6 / 17)
    assert out == pytest.approx([0.5 + 0.5 * best_near, 0.5 * best_near])


def test_item_reward_uses_the_final_querys_turn_and_the_k_cutoff() -> None:
    at_rank_3 = [product("a", 1), product("b", 2), product(TARGET_ID, 3, TARGET_TITLE)]
    steps = [
        step("Query: beaker", "beaker", at_rank_3),
        step("Query: duct tape", "duct tape", [product("c", 1)], turn=1),
    ]
    columns = {"target_item": [TARGET_ID], "target_title": [TARGET_TITLE]}
    final_is_draft = trajectory(steps, final_query="beaker")
    assert call(ItemReward(k=3), [final_is_draft], **columns) == [1.0]
    assert call(ItemReward(k=2), [final_is_draft], **columns) == [0.0]
    # the final query is the refinement: the draft's hit does not count
    final_is_refine = trajectory(steps, final_query="duct tape")
    assert call(ItemReward(k=3), [final_is_refine], **columns) == [0.0]
    # retrieval order is by rank, not list order
    shuffled = trajectory([step("Query: beaker", "beaker", at_rank_3[::-1])], final_query="beaker")
    assert call(ItemReward(k=2), [shuffled], **columns) == [0.0]


def test_item_reward_falls_back_to_final_product_ids() -> None:
    columns = {"target_item": [TARGET_ID], "target_title": [TARGET_TITLE]}
    # no turn has the final query; titles come from any turn's retrieved products
    traj = trajectory(
        [step("Query: beaker", "beaker", [product(TARGET_ID, 1, TARGET_TITLE)])],
        final_query="beakers",
        product_ids=["x", TARGET_ID],
    )
    assert call(ItemReward(k=2), [traj], **columns) == [1.0]
    assert call(ItemReward(k=1), [traj], **columns) == [0.0]


def test_item_reward_edge_cases() -> None:
    traj = trajectory([step("Query: b", "b", HIT)], final_query="b")
    assert call(item_reward, [traj]) == [None]  # no target anywhere
    assert call(item_reward, [traj], target_item=[TARGET_ID]) == [None]  # no title
    assert call(item_reward, [traj], target_item=[TARGET_ID], target_title=[""]) == [0.5]
    fallback = trajectory(
        [step("", None)], final_query="b", source="fallback", product_ids=[TARGET_ID]
    )
    assert call(item_reward, [fallback], target_item=[TARGET_ID], target_title=["t"]) == [0.0]
    own = trajectory(
        [step("Query: b", "b", HIT)],
        final_query="b",
        target={"item_id": TARGET_ID, "title": "", "query": TRUTH},
    )
    assert call(item_reward, [own]) == [0.5]
    with pytest.raises(ValueError, match="k"):
        ItemReward(k=0)


# --------------------------------------------------------------------------- TRL conventions


def test_rewards_accept_extra_kwargs_and_need_the_trajectory() -> None:
    traj = trajectory(
        [step("Query: glass beakers", "glass beakers", HIT)], final_query="glass beakers"
    )
    extra = {
        "prompts": [[{"role": "user", "content": "p"}]],
        "completion_ids": [[1, 2]],
        "trainer_state": object(),
        "log_extra": None,
        "target_item": [TARGET_ID],
        "target_query": [TRUTH],
        "target_title": [TARGET_TITLE],
    }
    completions = [[{"role": "assistant", "content": "Query: glass beakers"}]]
    scores = [fn(completions, trajectory=[traj], **extra) for fn in REWARD_TERMS]
    assert all(len(s) == 1 and isinstance(s[0], float) and 0.0 <= s[0] <= 1.0 for s in scores)
    for fn in REWARD_TERMS:
        with pytest.raises(ValueError, match="trajectory"):
            fn(completions)
        with pytest.raises(ValueError, match="one per completion"):
            fn(completions, trajectory=[traj, traj])


def test_rewards_pickle_and_keep_their_names() -> None:
    assert [f.__name__ for f in REWARD_TERMS] == [
        "format_reward",
        "tool_reward",
        "query_reward",
        "item_reward",
    ]
    for fn in [*REWARD_TERMS, ItemReward(k=3), QueryReward(1.0, 1.0)]:
        clone = pickle.loads(pickle.dumps(fn))
        assert clone.__name__ == fn.__name__
        assert vars(clone) == vars(fn)


def test_optimiser_kwargs_match_trl() -> None:
    from trl import GRPOConfig

    assert optimiser_kwargs("gdpo") == {"multi_objective_aggregation": "normalize_then_sum"}
    assert optimiser_kwargs("grpo") == {"multi_objective_aggregation": "sum_then_normalize"}
    assert GRPOConfig.__dataclass_fields__["multi_objective_aggregation"].default == (
        "sum_then_normalize"
    )
    with pytest.raises(ValueError, match="gdpo"):
        optimiser_kwargs("ppo")  # type: ignore[arg-type]


def test_format_reward_counts_the_policys_turns_only() -> None:
    """v2 steps also hold candidates recalled from other sources (no prompt, no completion)."""
    drafted = {**step("Query: glass beakers", "glass beakers", HIT), "sources": ["model"]}
    recalled = {**step("", "duct tape", HIT), "sources": ["memory"], "messages": []}
    both = {**step("Query: beakers", "beakers", HIT), "sources": ["model", "memory"]}
    assert call(format_reward, [trajectory([drafted, recalled])]) == [1.0]
    assert call(format_reward, [trajectory([both, recalled])]) == [1.0]
    assert call(format_reward, [trajectory([recalled])]) == [0.0]  # the policy wrote nothing


# --------------------------------------------------------------------------- r_rank (dense)


def _rank_catalog():
    from memory_store.products import Product
    from tests.helpers.fakes import FakeCatalog

    # Word-overlap ranking, ties by id: "glass beaker" puts A1 (2 words) first, then A2 and the
    # target (1 word each), then the rest.
    titles = {
        "A1": "glass beaker",
        "A2": "beaker rack",
        TARGET_ID: "glass pipette",
        "C4": "duct tape",
        "C5": "tape measure",
    }
    return FakeCatalog(Product(item_id=i, title=t, category="Lab") for i, t in titles.items())


def test_rank_reward_is_the_ndcg_of_the_next_item_under_the_final_query() -> None:
    catalog = _rank_catalog()
    reward = RankReward(catalog)
    columns = {"target_item": [TARGET_ID] * 3}
    at_3 = trajectory([step("Query: glass beaker", "glass beaker")], final_query="glass beaker")
    at_1 = trajectory([step("Query: pipette", "pipette")], final_query="pipette")
    fallback = trajectory([step("", None)], final_query="duct tape", source="fallback")
    out = call(reward, [at_3, at_1, fallback], **columns)
    assert reward.rank("glass beaker", TARGET_ID) == 3
    assert out == pytest.approx([0.5, 1.0, 0.0])  # 1/log2(1+3), 1/log2(2), fallback
    assert call(reward, [at_3]) == [None]  # no target item anywhere
    # past the depth it scores 0; within it, the farther the item the smaller the reward
    assert call(RankReward(catalog, depth=2), [at_3], target_item=[TARGET_ID]) == [0.0]
    tape = trajectory([step("Query: tape", "tape")], final_query="tape")
    assert 0.0 < call(reward, [tape], target_item=[TARGET_ID])[0] < 0.5
    with pytest.raises(ValueError, match="depth"):
        RankReward(catalog, depth=0)


def test_rank_reward_searches_each_distinct_query_once() -> None:
    catalog = _rank_catalog()
    reward = RankReward(catalog, cache_size=1)
    same = trajectory([step("Query: glass beaker", "glass beaker")], final_query="glass beaker")
    call(reward, [same, same, same], target_item=[TARGET_ID] * 3)
    assert catalog.queries == ["glass beaker"]
    call(reward, [same], target_item=[TARGET_ID])
    assert catalog.queries == ["glass beaker"]  # cached
    other = trajectory([step("Query: tape", "tape")], final_query="tape")
    call(reward, [other, same], target_item=[TARGET_ID] * 2)  # a cache of one: re-searched
    assert catalog.queries == ["glass beaker", "tape", "glass beaker"]
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "rank_reward" and clone.depth == reward.depth


def test_training_rewards_add_the_rank_term_on_a_catalog() -> None:
    catalog = _rank_catalog()
    names = [f.__name__ for f in training_rewards(catalog)]
    assert names == [*(f.__name__ for f in REWARD_TERMS), "rank_reward"]
    assert training_rewards(catalog, rank_depth=0) == REWARD_TERMS
    assert training_rewards(None) == REWARD_TERMS


# ------------------------------------------------------------------ the query text's terms


def test_text_rank_reward_is_the_next_items_discounted_rank() -> None:
    from training.rewards import text_rank_reward

    assert text_rank_reward("T", ["T", "X"]) == 1.0
    assert text_rank_reward("T", ["X", "Y", "T"]) == pytest.approx(0.5)
    assert text_rank_reward("T", ["X", "Y"]) == 0.0
    assert text_rank_reward("T", ["X", "Y", "T"], depth=2) == 0.0
    assert text_rank_reward("T", []) == 0.0


def test_text_category_share_counts_the_intents_items_in_the_top_k() -> None:
    from training.rewards import text_category_share

    item_query = {"a": "duct tape", "b": "duct tape", "c": "glass beakers"}
    assert text_category_share(["a", "c", "b", "z"], "duct tape", item_query) == 0.5
    assert text_category_share(["a", "c", "b"], "duct tape", item_query, k=1) == 1.0
    assert text_category_share([], "duct tape", item_query) == 0.0


def test_text_brevity_prefers_two_to_six_words() -> None:
    from training.rewards import text_brevity

    assert text_brevity("gorilla duct tape") == 1.0
    assert text_brevity("tape") == 0.5
    assert text_brevity("a b c d e f g h") == pytest.approx(0.5)
    assert text_brevity(" ".join("w" * 11)) == 0.0
    assert text_brevity(None) == 0.0 and text_brevity("") == 0.0


def test_rank_reward_ranks_with_the_search_it_is_given() -> None:
    catalog = _rank_catalog()

    class TargetFirst:
        """A search that ranks the target above the catalog's own order."""

        def __init__(self) -> None:
            self.queries: list[str] = []

        def search_many(self, queries, k=10):  # type: ignore[no-untyped-def]
            self.queries += queries
            out = []
            for found in catalog.search_many(queries, k=k):
                ordered = sorted(found, key=lambda p: p.item_id != TARGET_ID)
                out.append([p.model_copy(update={"rank": i + 1}) for i, p in enumerate(ordered)])
            return out

    search = TargetFirst()
    beaker = trajectory([step("Query: glass beaker", "glass beaker")], final_query="glass beaker")
    plain = call(RankReward(catalog), [beaker], target_item=[TARGET_ID])[0]
    searched = call(RankReward(catalog, search=search), [beaker], target_item=[TARGET_ID])[0]
    assert search.queries == ["glass beaker"] and searched == 1.0 > plain
    assert [f.__name__ for f in training_rewards(catalog, search=search)][-1] == "rank_reward"
