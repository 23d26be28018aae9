"""The writer's training data and reward (``training.writer``, ``training.rewards``): rows whose
intent is the next purchase's category query and whose prompt is the graph's writing prompt;
labels chosen by what each history-supported text retrieves; the three reward terms on written
completions, searched once per distinct text. Fakes: the in-memory catalog as the search."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import pytest

from agent.prompts import write_messages
from graphs.offline.runner import profile_at
from training.rewards import (
    WRITER_REWARD_WEIGHTS,
    TextBrevityReward,
    TextRankReward,
    TextResults,
    TextShareReward,
    writer_rewards,
)
from training.writer.heldout import score_texts
from training.writer.rows import (
    WriterRow,
    candidate_texts,
    item_queries,
    label_rows,
    leaf_text,
    writer_rows,
)

BEAKERS = "lab scientific products glassware labware beakers"


@dataclass
class _Search:
    """A search that returns scripted item ids per text, counting the texts asked for."""

    results: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    def search_many(self, texts: list[str], k: int = 10):  # type: ignore[no-untyped-def]
        from agent.records import RetrievedProduct

        self.asked += texts
        return [
            [
                RetrievedProduct(item_id=i, title=i, rank=r, score=1.0)
                for r, i in enumerate(self.results.get(t, [])[:k], start=1)
            ]
            for t in texts
        ]


@dataclass(frozen=True)
class _Opener:
    search: _Search

    def __call__(self) -> _Search:
        return self.search


def test_rows_are_the_graphs_writing_prompt_for_the_next_purchases_intent(tiny_dataset) -> None:
    rows, skipped = writer_rows(tiny_dataset, "train", seed=0)
    queries = item_queries(tiny_dataset)
    assert skipped == 0 and len(rows) == len(tiny_dataset.examples("train"))
    for row in rows[:6]:
        assert tiny_dataset.sequences[row.user_id][row.before] == row.target
        assert row.intent == queries[row.target]
        profile = profile_at(tiny_dataset, row.user_id, row.before)
        assert row.prompt == write_messages(profile, row.intent)
        # the brands shown are the history's (normalized), never the target's unless bought before
        history = tiny_dataset.sequences[row.user_id][: row.before]
        bought = {tiny_dataset.products[i].brand.lower() for i in history}
        assert set(row.brands) <= bought
    again, _ = writer_rows(tiny_dataset, "train", seed=0, limit=4)
    assert [(r.user_id, r.before) for r in again] == [(r.user_id, r.before) for r in rows[:4]]


def test_label_is_the_supported_text_that_ranks_the_target_highest() -> None:
    row = WriterRow("u", "T", 3, BEAKERS, [], brands=("pyrex", "kimble"))
    leaf = leaf_text(BEAKERS)
    assert leaf == "glassware labware beakers"
    assert candidate_texts(row) == [leaf, f"pyrex {leaf}", f"kimble {leaf}"]
    search = _Search({leaf: ["A", "B", "T"], f"pyrex {leaf}": ["T"], f"kimble {leaf}": ["A"]})
    [labelled] = label_rows([row], search)
    assert labelled.label == f"pyrex {leaf}"
    # a tie (or no text finding the target) keeps the shortest text
    tie = _Search({leaf: ["T"], f"pyrex {leaf}": ["T"], f"kimble {leaf}": []})
    assert label_rows([row], tie)[0].label == leaf
    assert label_rows([row], _Search({}))[0].label == leaf


def test_writer_reward_terms_on_completions() -> None:
    search = _Search({"pyrex beakers": ["T", "B"], "tape": ["X", "Y"]})
    results = TextResults(_Opener(search), depth=10)
    item_query = {"T": BEAKERS, "B": BEAKERS, "X": "tape", "Y": "tape"}
    rank, share, brevity = writer_rewards(results, item_query)
    completions = [
        [{"role": "assistant", "content": "Query: pyrex beakers"}],
        [{"role": "assistant", "content": "Query: tape"}],
        [{"role": "assistant", "content": "I cannot help"}],  # parses as a (long-ish) text
        [{"role": "assistant", "content": ""}],  # no text at all
    ]
    cols = {"target_item": ["T"] * 4, "intent": [BEAKERS] * 4}
    assert rank(completions, **cols)[:2] == [1.0, 0.0]
    assert share(completions, **cols)[:2] == [1.0, 0.0]
    assert brevity(completions, **cols)[0] == 1.0
    assert [f(completions, **cols)[3] for f in (rank, share, brevity)] == [0.0, 0.0, 0.0]
    # each distinct text searched once across the three terms and repeated calls
    assert sorted(search.asked) == ["i cannot help", "pyrex beakers", "tape"]
    assert [f.__name__ for f in (rank, share, brevity)] == [
        "text_rank_reward",
        "text_share_reward",
        "text_brevity_reward",
    ]
    assert len(WRITER_REWARD_WEIGHTS) == 3


def test_text_results_pickle_without_the_search() -> None:
    results = TextResults(_Opener(_Search({"a b": ["T"]})), depth=5)
    assert results.of(["a b", None]) == [["T"], []]
    clone = pickle.loads(pickle.dumps(results))
    assert clone.depth == 5 and clone._search is None and not clone._cache
    for cls in (TextRankReward, TextShareReward, TextBrevityReward):
        reward = cls(results, {"T": BEAKERS})
        assert pickle.loads(pickle.dumps(reward)).__name__ == reward.__name__


def test_heldout_scores_carry_intervals_and_the_intent_reference() -> None:
    rows = [WriterRow(f"u{i}", "T" if i % 2 else "Z", 1, BEAKERS, [], ()) for i in range(10)]
    search = _Search({"pyrex beakers": ["T"], BEAKERS: ["Z", "T"]})
    results = TextResults(_Opener(search), depth=10)
    item_query = {"T": BEAKERS, "Z": BEAKERS}
    written = score_texts(rows, ["pyrex beakers"] * 10, results, item_query)
    intent = score_texts(rows, [r.intent for r in rows], results, item_query)
    assert written["hit@10"]["mean"] == pytest.approx(0.5)
    assert intent["hit@10"]["mean"] == pytest.approx(1.0)
    assert written["differs_from_intent"] == 1.0 and intent["differs_from_intent"] == 0.0
    r = written["reward"]
    assert r["low"] <= r["mean"] <= r["high"] and len(written["per_row"]) == 10
    assert written["words"] == 2.0 and intent["words"] == 6.0
