"""The profile: hand-computed interest-graph weights, no leakage, cold start, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory_store import (
    BehaviorEvent,
    build_profile,
    category_name,
    events_from_sequence,
    load_jsonl,
    raw_history_text,
)

TINY_JSONL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-jsonl"
ROOT = "Industrial & Scientific "


def event(seq: int, category: str, brand: str, *, user: str = "u", item: str = "") -> BehaviorEvent:
    return BehaviorEvent(
        user_id=user,
        seq=seq,
        item_id=item or f"I{seq}",
        title=f"Title {seq}",
        category=ROOT + category if category else "",
        brand=brand,
    )


@pytest.fixture
def tiny_events() -> dict[str, list[BehaviorEvent]]:
    ds = load_jsonl(TINY_JSONL)
    return {u: events_from_sequence(u, ds.sequences[u], ds.products) for u in ds.users}


def test_weights_against_a_hand_computed_case() -> None:
    # Three items, decay 0.5: recency weights 0.25, 0.5, 1.0 (oldest first).
    events = [event(0, "X", "P"), event(1, "X", "Q"), event(2, "Y", "P")]
    profile = build_profile("u", events, decay=0.5)
    nodes = {(n.kind, n.name): (n.weight, n.count) for n in profile.interest_graph.nodes}
    assert nodes == {
        ("brand", "P"): (1.25, 2),
        ("category", "Y"): (1.0, 1),
        ("category", "X"): (0.75, 2),
        ("brand", "Q"): (0.5, 1),
    }
    assert [n.name for n in profile.interest_graph.nodes] == ["P", "Y", "X", "Q"]
    edges = {(e.source, e.target): e.weight for e in profile.interest_graph.edges}
    assert edges == {
        ("brand:P", "brand:Q"): 1.5,  # Q after P (0.5) and P after Q (1.0)
        ("brand:P", "category:Y"): 1.0,  # same item
        ("category:X", "category:Y"): 1.0,  # Y after X
        ("brand:Q", "category:X"): 0.5,  # same item
        ("brand:P", "category:X"): 0.25,  # same item
    }
    assert [e.weight for e in profile.interest_graph.edges] == sorted(edges.values(), reverse=True)
    assert profile.n_events == 3


def test_default_decay_and_root_prefix() -> None:
    profile = build_profile("u", [event(0, "Lab Beakers", "Eisco"), event(1, "Lab Beakers", "")])
    (node,) = profile.interest_graph.top("category")
    assert node.name == "Lab Beakers"
    assert node.weight == pytest.approx(0.8 + 1.0)
    assert profile.interest_graph.top("brand")[0].weight == pytest.approx(0.8)
    assert category_name(ROOT + "Lab Beakers") == "Lab Beakers"
    assert category_name("Other Root Lab", root_prefix="Other Root ") == "Lab"


def test_empty_category_and_brand_make_no_node() -> None:
    profile = build_profile("u", [event(0, "", ""), event(1, "", "Fluke")])
    assert [(n.kind, n.name) for n in profile.interest_graph.nodes] == [("brand", "Fluke")]
    assert profile.interest_graph.edges == []


def test_top_eight_per_kind_and_ten_edges() -> None:
    events = [event(i, f"Cat {i}", f"Brand {i}") for i in range(12)]
    graph = build_profile("u", events).interest_graph
    assert len(graph.top("category")) == 8 and len(graph.top("brand")) == 8
    assert graph.top("category")[0].name == "Cat 11"  # most recent weighs most
    kept = {n.key for n in graph.nodes}
    assert len(graph.edges) == 10
    assert all(e.source in kept and e.target in kept for e in graph.edges)


def test_latest_intent_is_the_last_three_oldest_first() -> None:
    events = [event(i, "X", "P", item=f"item{i}") for i in range(5)]
    profile = build_profile("u", reversed(events))
    assert [it.item_id for it in profile.latest_intent] == ["item2", "item3", "item4"]
    assert profile.latest_intent[0].category == "X"


def test_no_leakage(tiny_events: dict[str, list[BehaviorEvent]]) -> None:
    events = tiny_events["A1TINYUSER07"]
    t = 4
    cut = build_profile("A1TINYUSER07", events, before=t)
    assert cut.n_events == t
    assert cut == build_profile("A1TINYUSER07", events[:t])
    assert all(it.item_id in {e.item_id for e in events[:t]} for it in cut.latest_intent)
    # Change every item at or after t: the profile does not move.
    changed = events[:t] + [
        e.model_copy(update={"category": "Other", "brand": "Other", "title": "Other"})
        for e in events[t:]
    ]
    assert build_profile("A1TINYUSER07", changed, before=t) == cut
    assert build_profile("A1TINYUSER07", changed) != build_profile("A1TINYUSER07", events)


def test_cold_start() -> None:
    for profile in (build_profile("new", []), build_profile("u", [event(0, "X", "P")], before=0)):
        assert profile.n_events == 0
        assert profile.is_cold_start
        assert profile.latest_intent == []
        assert profile.interest_graph.nodes == [] and profile.interest_graph.edges == []
        assert "cold start" in profile.latent_identity
        assert "cold start" in profile.to_text()


def test_latent_identity_is_derived_and_deterministic(
    tiny_events: dict[str, list[BehaviorEvent]],
) -> None:
    profile = build_profile("A1TINYUSER07", tiny_events["A1TINYUSER07"])
    assert profile.latent_identity == (
        "Buys mostly Glassware & Labware Beakers and 3D Printing Filament; "
        "loyal to HATCHBOX (3 of 7 purchases); 7 purchases."
    )
    assert build_profile("A1TINYUSER07", list(reversed(tiny_events["A1TINYUSER07"]))) == profile


def test_identity_counts_other_kinds() -> None:
    events = [event(0, "X", "P"), event(1, "X", "P").model_copy(update={"kind": "click"})]
    assert build_profile("u", events).latent_identity.endswith("2 events (1 purchase, 1 click).")


def test_to_text_is_short_and_compresses_long_histories(
    tiny_events: dict[str, list[BehaviorEvent]],
) -> None:
    events = tiny_events["A1TINYUSER05"] * 4
    events = [e.model_copy(update={"seq": i}) for i, e in enumerate(events)]
    profile = build_profile("A1TINYUSER05", events)
    text = profile.to_text()
    assert len(text.splitlines()) <= 4
    assert text.startswith("Identity: ")
    raw = raw_history_text(events)
    assert len(raw.splitlines()) == len(events)
    assert profile.compression_ratio(len(raw)) > 3


def test_round_trips_through_json(tiny_events: dict[str, list[BehaviorEvent]]) -> None:
    profile = build_profile("A1TINYUSER03", tiny_events["A1TINYUSER03"])
    assert type(profile).model_validate_json(profile.model_dump_json()) == profile


def test_rejects_foreign_or_duplicate_events() -> None:
    with pytest.raises(ValueError, match="belongs to user"):
        build_profile("u", [event(0, "X", "P", user="other")])
    with pytest.raises(ValueError, match="seq=0"):
        build_profile("u", [event(0, "X", "P"), event(0, "Y", "Q")])
    with pytest.raises(ValueError, match="decay"):
        build_profile("u", [], decay=0.0)
