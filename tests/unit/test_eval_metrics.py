import math

import pytest

from training.evaluation.metrics import (
    UserOutcome,
    aggregate,
    distinct_ratio,
    rouge_l,
    score_outcomes,
)


def outcome(user, query, truth, retrieved, target="T", **kw) -> UserOutcome:
    return UserOutcome(
        user_id=user, target=target, truth=truth, query=query, retrieved=retrieved, **kw
    )


def test_hand_computed_rows() -> None:
    rows = score_outcomes(
        [
            # exact query, target first: Q_EM 1, hit@1 1, ndcg 1, Cons@1 1
            outcome("a", "Duct Tape!", "duct tape", ["T", "X"]),
            # exact query, target third: hit@1 0, hit@5 1, ndcg 1/log2(4) = 0.5, Cons@10 1
            outcome("b", "duct tape", "duct tape", ["X", "Y", "T"]),
            # wrong query, target second: Q_EM 0, ROUGE-L of "tape" vs "duct tape": P=1, R=.5, F=2/3
            outcome("c", "tape", "duct tape", ["X", "T"]),
            # no query: nothing
            outcome("d", None, "duct tape", [], format_valid=False),
        ]
    )
    a, b, c, d = rows
    assert a["q_em"] == 1 and a["i_hit@1"] == 1 and a["ndcg@10"] == pytest.approx(1.0)
    assert a["cons@1"] == 1 and a["cons@10"] == 1 and a["rouge_l"] == pytest.approx(1.0)
    assert b["i_hit@1"] == 0 and b["i_hit@5"] == 1 and b["ndcg@10"] == pytest.approx(0.5)
    assert b["cons@1"] == 0 and b["cons@10"] == 1
    assert c["q_em"] == 0 and c["rouge_l"] == pytest.approx(2 / 3)
    assert c["ndcg@10"] == pytest.approx(1 / math.log2(3)) and c["cons@10"] == 0
    assert d["q_em"] == 0 and d["i_hit@10"] == 0 and d["ndcg@10"] == 0 and d["format_valid"] == 0


def test_target_beyond_ten_is_a_miss() -> None:
    (row,) = score_outcomes([outcome("a", "q", "q", [f"x{i}" for i in range(10)] + ["T"])])
    assert row["i_hit@10"] == 0 and row["ndcg@10"] == 0


def test_rouge_l_edge_cases() -> None:
    assert rouge_l("", "duct tape") == 0.0
    assert rouge_l("tape duct", "duct tape") == pytest.approx(0.5)


def test_aggregate_means_and_intervals() -> None:
    rows = score_outcomes([outcome(str(i), "q" if i % 2 else "z", "q", ["T"]) for i in range(200)])
    summary = aggregate(rows, seed=1)
    em = summary["q_em"]
    assert em["mean"] == pytest.approx(0.5)
    assert em["low"] < 0.5 < em["high"]
    assert 0.35 < em["low"] and em["high"] < 0.65
    assert summary["i_hit@1"] == {"mean": 1.0, "low": 1.0, "high": 1.0}


def test_duplicate_users_rejected() -> None:
    with pytest.raises(ValueError, match="one outcome per user"):
        score_outcomes([outcome("a", "q", "q", []), outcome("a", "q", "q", [])])


def test_distinct_ratio_counts_normalized_queries() -> None:
    outs = [
        outcome("a", "Duct Tape", "x", []),
        outcome("b", "duct  tape!", "x", []),
        outcome("c", "glue", "x", []),
    ]
    assert distinct_ratio(outs) == pytest.approx(2 / 3)


def test_the_text_the_shopper_sees_is_scored_apart_from_the_intent() -> None:
    """Q_EM and ROUGE-L on the intent; I_Hit/NDCG/Cons from what the text retrieved (the
    caller retrieves for the text); the text's length in words and whether it differs."""
    rows = score_outcomes(
        [
            # right intent, its text's page holds the target second: Cons@10 1, Cons@1 0
            outcome("a", "duct tape", "duct tape", ["X", "T"], text="gorilla duct tape"),
            # wrong intent, the text's page holds the target: a hit, but no Cons
            outcome("b", "glass beakers", "duct tape", ["T"], text="beaker set"),
            # a baseline: no text, so the intent is shown
            outcome("c", "duct tape", "duct tape", ["T"]),
            # a text equal to the intent (after normalization) does not differ
            outcome("d", "duct tape", "duct tape", [], text="Duct Tape"),
        ]
    )
    a, b, c, d = rows
    assert a["q_em"] == 1 and a["rouge_l"] == pytest.approx(1.0)
    assert a["i_hit@1"] == 0 and a["cons@10"] == 1 and a["cons@1"] == 0
    assert a["text_words"] == 3 and a["text_differs"] == 1
    assert b["q_em"] == 0 and b["i_hit@1"] == 1 and b["cons@10"] == 0 and b["text_differs"] == 1
    assert c["text_words"] == 2 and c["text_differs"] == 0
    assert d["text_differs"] == 0 and d["text_words"] == 2
    summary = aggregate(rows, seed=0)
    assert summary["text_differs"]["mean"] == pytest.approx(0.5)
    assert summary["text_words"]["mean"] == pytest.approx(2.25)
