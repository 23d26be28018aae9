"""The training reward (the paper's "consistency reward"), r = r_format + r_tool + r_query +
r_item, as TRL rewards.

Each function follows TRL's convention (``trl/rewards/``): ``f(completions, **kwargs) ->
list[float | None]``, one value per completion, ``None`` meaning "cannot score" (TRL then leaves
that function out for that sample). A function scores the whole agent rollout, not just the
completion text: the rollout arrives as the keyword ``trajectory`` (one
``queryagent.trajectory/v3`` dict per completion, built by ``graphs/record/``; v1, v2 dicts
score the same), and the
shopper's real next item as the data-set columns ``target_item``, ``target_query`` and
``target_title`` (falling back to the trajectory's own ``target``).

Terms, each in [0, 1], so r is in [0, 4] (the paper gives no weights; equal weights inferred):

================  ============================================================================
format_reward     fraction of the rollout's turns (draft and refinements) whose completion
                  parses as a query (``agent.parsing.parse_query``, the node's own parser);
                  0 for a rollout with no turn
tool_reward       0.5 if the memory was fetched + 0.5 if the catalog was searched with a valid
                  query (some turn has a parsed query and retrieved products)
query_reward      0.5 * exact match + 0.5 * ROUGE-L F1 of the final query against the real next
                  query, both normalized (``training.queries.normalize_query``); an exact match
                  scores 1.0, a near miss at most 0.5
item_reward       0.5 * hit (the real next item is in the final query's top K, K = 10)
                  + 0.5 * best ROUGE-L F1 between those K titles and the real item's title
================  ============================================================================

Beside the paper's four, a dense term for GRPO (``RankReward``, on by default in
``training.grpo``, ``--rank_depth 0`` turns it off):

================  ============================================================================
rank_reward       1 / log2(1 + rank) of the real next item among the catalog's products ordered
                  by the final query (NDCG with one relevant item): 1 at rank 1, 0.5 at rank 3,
                  0.29 at rank 10, 0.1 at rank 1000; 0 past ``depth`` or for a fallback query
================  ============================================================================

``item_reward``'s hit is 0 for every query whose top 10 misses the item, which is most of them:
a group of rollouts then often has no spread in it to learn from. The rank term still tells a
query that puts the item at rank 40 from one that puts it at rank 900.

A final query that the graph took from its fallback (``final.source == "fallback"``: no turn
parsed, the strongest interest-graph category was used) earns no query or item reward: the
policy did not write it, and crediting it would pay a model for never producing a valid query.

Under GDPO (``optimiser_kwargs("gdpo")``) TRL normalizes each function within its group of
rollouts before summing, so the functions' scales do not weigh them against each other; the
0.5/0.5 splits inside query_reward and item_reward do.

Example::

    from trl import GRPOConfig
    from training.rewards import REWARD_TERMS, optimiser_kwargs
    config = GRPOConfig(output_dir="out", **optimiser_kwargs("gdpo"))
    # GRPOTrainer(..., reward_funcs=REWARD_TERMS, args=config)
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from agent.parsing import parse_query
from training.evaluation.metrics import rouge_l
from training.queries import normalize_query

__all__ = [
    "REWARD_TERMS",
    "DEFAULT_HIT_K",
    "TRAJECTORY_SCHEMA",
    "FormatReward",
    "ItemReward",
    "QueryReward",
    "RankReward",
    "RewardFunction",
    "ToolReward",
    "format_reward",
    "item_reward",
    "optimiser_kwargs",
    "query_reward",
    "tool_reward",
    "training_rewards",
]

TRAJECTORY_SCHEMA = "queryagent.trajectory/v3"
# The item hit is judged on the final query's top 10, the same cut-off as the evaluation's
# I_Hit@10 and the graph's default retrieval depth.
DEFAULT_HIT_K = 10

Trajectory = Mapping[str, Any]


class RewardFunction(Protocol):
    """What TRL's ``GRPOTrainer(reward_funcs=...)`` calls; ``__name__`` names it in the logs."""

    __name__: str

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]: ...


# --------------------------------------------------------------------------- kwargs helpers


def _trajectories(completions: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
    """The ``trajectory`` keyword, one per completion (a dict, its JSON text, or ``None``)."""
    if "trajectory" not in kwargs:
        raise ValueError(
            "the reward's terms score whole agent rollouts: pass trajectory=[...] (one "
            f"{TRAJECTORY_SCHEMA} dict per completion), e.g. as a column the rollout returns"
        )
    trajectories = list(kwargs["trajectory"])
    if len(trajectories) != len(completions):
        raise ValueError(
            f"got {len(trajectories)} trajectories for {len(completions)} completions; "
            "pass one per completion, in the same order"
        )
    return [json.loads(t) if isinstance(t, str | bytes) else t for t in trajectories]


def _target(kwargs: Mapping[str, Any], i: int, trajectory: Trajectory, field: str) -> Any:
    """The target's ``field`` ("item_id", "query", "title"): the data-set column, else the
    trajectory's own ``target``; ``None`` when neither has it."""
    column = kwargs.get(f"target_{'item' if field == 'item_id' else field}")
    if column is not None and i < len(column) and column[i] is not None:
        return column[i]
    target = trajectory.get("target") or {}
    return target.get(field)


def _steps(trajectory: Trajectory) -> list[Mapping[str, Any]]:
    return list(trajectory.get("steps") or [])


def _retrieved(step: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """What a step's query retrieved: v2, v3 keep the attempt's ``products``, v1 ``retrieved``."""
    return list(step.get("products", step.get("retrieved")) or [])


def _final(trajectory: Trajectory) -> Mapping[str, Any]:
    return trajectory.get("final") or {}


def _model_final_query(trajectory: Trajectory) -> str | None:
    """The final recommended query when the policy wrote it; ``None`` for none or a fallback."""
    final = _final(trajectory)
    if final.get("source") == "fallback":
        return None
    query = final.get("query")
    return query if query else None


# --------------------------------------------------------------------------- r_format, r_tool


class _TrajectoryReward:
    """One score per completion from its trajectory; ``None`` where there is no trajectory.
    Subclasses implement ``score`` for a single trajectory (``i`` indexes the dataset columns)."""

    __name__ = "trajectory_reward"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return [
            None if trajectory is None else self.score(trajectory, i, kwargs)
            for i, trajectory in enumerate(_trajectories(completions, kwargs))
        ]

    def score(self, trajectory: Trajectory, i: int, kwargs: Mapping[str, Any]) -> float | None:
        raise NotImplementedError


class FormatReward(_TrajectoryReward):
    """r_format: the fraction of turns whose completion parses as a query; 0 with no turn.

    Every turn counts, not only the last: GRPO trains on the tokens of every turn, and a
    last-turn-only score would not penalize turns wasted on malformed output.
    """

    __name__ = "format_reward"

    def score(self, trajectory: Trajectory, i: int, kwargs: Mapping[str, Any]) -> float | None:
        # The policy's turns: candidates recalled from other sources ("sources" without "model",
        # no prompt) wrote no completion to score. v1 steps were all the model's.
        steps = [s for s in _steps(trajectory) if "model" in s.get("sources", ["model"])]
        if not steps:
            return 0.0
        return sum(parse_query(step.get("completion") or "").ok for step in steps) / len(steps)


class ToolReward(_TrajectoryReward):
    """r_tool: ``memory_weight`` if the memory was fetched, plus ``search_weight`` if the catalog
    was searched with a valid query (a turn with a parsed query and retrieved products)."""

    __name__ = "tool_reward"

    def __init__(self, memory_weight: float = 0.5, search_weight: float = 0.5) -> None:
        self.memory_weight = memory_weight
        self.search_weight = search_weight

    def score(self, trajectory: Trajectory, i: int, kwargs: Mapping[str, Any]) -> float | None:
        # v2, v3: a profile snapshot means recall_memory ran; v1 said so in ``memory_recalled``.
        recalled = bool(trajectory.get("memory_recalled", trajectory.get("profile") is not None))
        searched = any(step.get("query") and _retrieved(step) for step in _steps(trajectory))
        return self.memory_weight * recalled + self.search_weight * searched


# --------------------------------------------------------------------------- r_query


class QueryReward(_TrajectoryReward):
    """r_query: ``hard_weight`` * exact match + ``soft_weight`` * ROUGE-L F1 of the final query
    against the target query, both normalized. ``None`` when the target query is unknown."""

    __name__ = "query_reward"

    def __init__(self, hard_weight: float = 0.5, soft_weight: float = 0.5) -> None:
        self.hard_weight = hard_weight
        self.soft_weight = soft_weight

    def score(self, trajectory: Trajectory, i: int, kwargs: Mapping[str, Any]) -> float | None:
        truth = _target(kwargs, i, trajectory, "query")
        truth = normalize_query(truth) if truth else ""
        if not truth:
            return None
        query = _model_final_query(trajectory)
        query = normalize_query(query) if query else ""
        if not query:
            return 0.0
        exact = float(query == truth)
        return self.hard_weight * exact + self.soft_weight * rouge_l(query, truth)


# --------------------------------------------------------------------------- r_item


class ItemReward(_TrajectoryReward):
    """r_item: ``hit_weight`` * (target item among the final query's top ``k``) +
    ``title_weight`` * the best ROUGE-L F1 between those ``k`` titles and the target title.

    The final query's products are those of the last turn whose query equals it; when no turn
    does, ``final.product_ids`` (their titles looked up among every turn's retrieved products).
    ROUGE-L uses rouge-score's tokenizer, which lower-cases and splits off punctuation.
    ``None`` when the target item or its title is unknown.
    """

    __name__ = "item_reward"

    def __init__(
        self, k: int = DEFAULT_HIT_K, hit_weight: float = 0.5, title_weight: float = 0.5
    ) -> None:
        if k < 1:
            raise ValueError(f"k (the hit cut-off) must be >= 1, got {k}")
        self.k = k
        self.hit_weight = hit_weight
        self.title_weight = title_weight

    def score(self, trajectory: Trajectory, i: int, kwargs: Mapping[str, Any]) -> float | None:
        item = _target(kwargs, i, trajectory, "item_id")
        title = _target(kwargs, i, trajectory, "title")
        if not item or title is None:
            return None
        if _model_final_query(trajectory) is None:
            return 0.0
        top = self.top_k(trajectory)
        hit = float(any(item_id == item for item_id, _ in top))
        best = max((rouge_l(t, title) for _, t in top if t), default=0.0)
        return self.hit_weight * hit + self.title_weight * best

    def top_k(self, trajectory: Trajectory) -> list[tuple[str, str]]:
        """``(item_id, title)`` of the final query's top ``k`` products, best first."""
        steps = _steps(trajectory)
        final_query = _final(trajectory).get("query")
        matching = [s for s in steps if final_query and s.get("query") == final_query]
        if matching and _retrieved(matching[-1]):
            retrieved = sorted(_retrieved(matching[-1]), key=lambda p: p.get("rank", 0))
            return [(str(p["item_id"]), str(p.get("title") or "")) for p in retrieved[: self.k]]
        titles = {
            str(p["item_id"]): str(p.get("title") or "") for step in steps for p in _retrieved(step)
        }
        ids = [str(i) for i in (_final(trajectory).get("product_ids") or [])][: self.k]
        return [(item_id, titles.get(item_id, "")) for item_id in ids]


# --------------------------------------------------------------------------- r_rank (dense)


class RankReward(_TrajectoryReward):
    """r_rank: 1 / log2(1 + rank) of the target item among the catalog's products ordered by
    the final query (the catalog's own retrieval, ``Catalog.search_many``), 0 when it is not in
    the first ``depth``. ``None`` when the target item is unknown; 0 for a fallback query.

    Each distinct query is searched once (kept in a cache of ``cache_size`` queries): a grounded
    policy writes the catalog's category queries, so a run's groups repeat them and a step's
    cost stays the model's, not the catalog's.

    Args:
        catalog: the catalog the rollouts retrieve from (``agent.catalog.Catalog``).
        depth: how far down the ranking the item is looked for; the whole catalog when it has
            at most ``depth`` products.
        cache_size: distinct queries whose rankings are kept.
    """

    __name__ = "rank_reward"

    def __init__(
        self, catalog: Any, depth: int = 1000, cache_size: int = 4096, search: Any = None
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth (how far the item is looked for) must be >= 1, got {depth}")
        self.catalog = catalog
        # The search the rollouts' products come from (the fused one the models were fitted
        # on); None ranks with the catalog's own search.
        self.search = search
        self.depth = depth
        self.cache_size = cache_size
        self._ranks: OrderedDict[str, dict[str, int]] = OrderedDict()

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        # One catalog call for the batch's queries not yet ranked, then scored one by one.
        trajectories = _trajectories(completions, kwargs)
        queries = {q for t in trajectories if t is not None and (q := _model_final_query(t))}
        self._rank_queries([q for q in queries if q not in self._ranks])
        return super().__call__(completions, **kwargs)

    def _rank_queries(self, queries: list[str]) -> None:
        if not queries:
            return
        k = min(self.depth, max(1, int(self.catalog.count())))
        source = self.catalog if self.search is None else self.search
        for query, products in zip(queries, source.search_many(queries, k=k), strict=True):
            self._ranks[query] = {str(p.item_id): int(p.rank) for p in products}
        while len(self._ranks) > self.cache_size:
            self._ranks.popitem(last=False)

    def rank(self, query: str, item_id: str) -> int | None:
        """The item's rank for ``query`` (1 = first), ``None`` past ``depth``."""
        if query not in self._ranks:
            self._rank_queries([query])
        self._ranks.move_to_end(query)
        return self._ranks[query].get(item_id)

    def score(self, trajectory: Trajectory, i: int, kwargs: Mapping[str, Any]) -> float | None:
        item = _target(kwargs, i, trajectory, "item_id")
        if not item:
            return None
        query = _model_final_query(trajectory)
        if query is None:
            return 0.0
        rank = self.rank(query, str(item))
        return 0.0 if rank is None else 1.0 / math.log2(1 + rank)

    def __getstate__(self) -> dict[str, Any]:
        # The catalog holds a client; a pickled copy (a worker's) re-ranks from an empty cache.
        return {**self.__dict__, "_ranks": OrderedDict()}


format_reward = FormatReward()
tool_reward = ToolReward()
query_reward = QueryReward()
item_reward = ItemReward()

# The reward's four terms, in the paper's order; pass as GRPOTrainer(reward_funcs=...).
REWARD_TERMS: list[RewardFunction] = [format_reward, tool_reward, query_reward, item_reward]


def training_rewards(
    catalog: Any = None, rank_depth: int = 1000, search: Any = None
) -> list[RewardFunction]:
    """GRPO's reward functions: the paper's four terms, then the dense rank term on ``catalog``
    ranked by ``search`` (the catalog's own without one; left out without a catalog or with
    ``rank_depth`` 0)."""
    if catalog is None or rank_depth <= 0:
        return [*REWARD_TERMS]
    return [*REWARD_TERMS, RankReward(catalog, depth=rank_depth, search=search)]


def optimiser_kwargs(name: Literal["gdpo", "grpo"] = "gdpo") -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments selecting the paper's optimiser or the plain baseline.

    GDPO normalizes each reward function within its group of rollouts, sums the normalized
    terms, then normalizes across the batch (TRL's ``"normalize_then_sum"``); plain GRPO sums the
    rewards first and normalizes the sum (``"sum_then_normalize"``, TRL's default).
    """
    aggregation = {"gdpo": "normalize_then_sum", "grpo": "sum_then_normalize"}
    if name not in aggregation:
        raise ValueError(f"optimiser must be 'gdpo' or 'grpo', got {name!r}")
    return {"multi_objective_aggregation": aggregation[name]}


# --------------------------------------------------------------------------- the query text

# The query text's reward terms (issue 27's first role: the model writes the text the shopper
# sees for the intent the check picked, ``agent.writing``). Pure functions of what the written
# text retrieved, for a GRPO group of texts: each in [0, 1], dense and cheap (one search per
# text). Wired into the writer's GRPO (``training.writer.grpo``) by ``writer_rewards`` below.
TEXT_BEST_WORDS = (2, 6)  # a few words: a query, not a title
TEXT_MAX_WORDS = 10  # ``memory_store.queries.MAX_QUERY_WORDS``: longer does not parse


def text_rank_reward(target: str, retrieved: Sequence[str], depth: int = 100) -> float:
    """1 / log2(1 + rank) of the shopper's next item among the text's results (ids, best
    first): 1 at rank 1, 0.5 at rank 3; 0 when it is not in the first ``depth``."""
    for rank, item in enumerate(list(retrieved)[:depth], start=1):
        if item == target:
            return 1.0 / math.log2(1 + rank)
    return 0.0


def text_category_share(
    retrieved: Sequence[str], intent: str, item_query: Mapping[str, str], k: int = 10
) -> float:
    """The share of the text's top ``k`` results whose category query is the intent
    (``QueryVocabulary.item_query``); 0 for no results."""
    top = list(retrieved)[:k]
    if not top:
        return 0.0
    return sum(item_query.get(item) == intent for item in top) / len(top)


def text_brevity(text: str | None) -> float:
    """1 for a text of 2 to 6 words, falling linearly to 0 at 10 words (and 0.5 for one word);
    0 for no text."""
    n = len((text or "").split())
    low, high = TEXT_BEST_WORDS
    if n == 0 or n > TEXT_MAX_WORDS:
        return 0.0
    if n < low:
        return 0.5
    if n <= high:
        return 1.0
    return (TEXT_MAX_WORDS - n) / (TEXT_MAX_WORDS - high)


class TextResults:
    """The written texts' search results, shared by the writer's reward terms (TRL calls each
    term on the same completions): one batched search per new text. Picklable: the search is
    opened on first use from ``open`` (a picklable callable) and not pickled with it."""

    def __init__(self, open_search: Any, depth: int = 100, keep: int = 50_000) -> None:
        self.open_search = open_search
        self.depth = depth
        self.keep = keep
        self._search: Any = None
        self._cache: OrderedDict[str, list[str]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"open_search": self.open_search, "depth": self.depth, "keep": self.keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def of(self, texts: Sequence[str | None]) -> list[list[str]]:
        """Each text's top ``depth`` item ids (``[]`` for no text)."""
        new = sorted({t for t in texts if t and t not in self._cache})
        if new:
            if self._search is None:
                self._search = self.open_search()
            for text, found in zip(new, self._search.search_many(new, k=self.depth), strict=True):
                self._cache[text] = [p.item_id for p in found]
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return [self._cache[t] if t else [] for t in texts]


def _completion_text(completion: Any) -> str | None:
    """The query a writer's completion holds (conversational or plain), or None."""
    if isinstance(completion, list):
        completion = completion[-1]["content"] if completion else ""
    return parse_query(str(completion)).query


class _TextReward:
    """A writer reward term: ``f(completions, target_item=[...], intent=[...])``."""

    __name__ = "text_reward"

    def __init__(self, results: TextResults, item_query: Mapping[str, str] | None = None):
        self.results = results
        self.item_query = dict(item_query or {})

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        texts = [_completion_text(c) for c in completions]
        found = self.results.of(texts)
        return [
            self.score(text, ids, kwargs, i)
            for i, (text, ids) in enumerate(zip(texts, found, strict=True))
        ]

    def score(self, text: str | None, ids: list[str], kwargs: Mapping[str, Any], i: int) -> float:
        raise NotImplementedError


class TextRankReward(_TextReward):
    """``text_rank_reward`` of the shopper's next item in the written text's results."""

    __name__ = "text_rank_reward"

    def score(self, text: str | None, ids: list[str], kwargs: Mapping[str, Any], i: int) -> float:
        return text_rank_reward(kwargs["target_item"][i], ids, self.results.depth) if text else 0.0


class TextShareReward(_TextReward):
    """``text_category_share``: the share of the text's top 10 in the intent's category."""

    __name__ = "text_share_reward"

    def score(self, text: str | None, ids: list[str], kwargs: Mapping[str, Any], i: int) -> float:
        return text_category_share(ids, kwargs["intent"][i], self.item_query) if text else 0.0


class TextBrevityReward(_TextReward):
    """``text_brevity`` of the written text (no search needed, but the same signature)."""

    __name__ = "text_brevity_reward"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return [text_brevity(_completion_text(c)) for c in completions]


# The writer's reward: the rank term carries the signal (which text shows the next purchase);
# the share keeps the text on the intent (the check's first test), brevity keeps it a query.
WRITER_REWARD_WEIGHTS = (1.0, 0.5, 0.25)


def writer_rewards(results: TextResults, item_query: Mapping[str, str]) -> list[RewardFunction]:
    """The writer's three terms, in ``WRITER_REWARD_WEIGHTS``' order."""
    return [
        TextRankReward(results),
        TextShareReward(results, item_query),
        TextBrevityReward(results),
    ]
