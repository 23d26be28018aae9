"""Offline metrics of the paper's table, per user, with 95% bootstrap confidence intervals.

Ranking metrics come from ir-measures (Success@K is I_Hit@K with one relevant item, nDCG@10),
ROUGE-L from Google's rouge-score, the bootstrap from SciPy: maintained implementations, so the
numbers match what other papers compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import ir_measures
import numpy as np
from ir_measures import Success, nDCG
from rouge_score import rouge_scorer
from scipy.stats import binomtest, bootstrap

from training.queries import normalize_query

HIT_KS = (1, 5, 10)
# Metrics in the order the report shows them.
METRICS = (
    "q_em",
    "rouge_l",
    "i_hit@1",
    "i_hit@5",
    "i_hit@10",
    "ndcg@10",
    "cons@1",
    "cons@10",
    # I_Hit@10 on the shoppers whose query was right (Cons@10 / Q_EM): the search's share of
    # Cons@10, apart from the query's. NaN in a per-user row whose query was wrong.
    "i_hit@10_right",
    # The query text the shopper sees (``agent.writing``): its length in words, and whether it
    # differs from the intent (a baseline's text is its intent).
    "text_words",
    "text_differs",
    "format_valid",
    "refinements",
    "latency_s",
)
# The paired sign tests' metrics (``paired_tests``), per shopper 0 or 1, and the test of
# I_Hit@10 over the shoppers whose Q_EM outcome the two methods share.
PAIRED_METRICS = ("q_em", "i_hit@10", "cons@10")
HIT_AT_EQUAL_Q_EM = "i_hit@10_equal_q_em"
_MEASURES = [Success @ k for k in HIT_KS] + [nDCG @ 10]
_ROUGE = rouge_scorer.RougeScorer(["rougeL"])


@dataclass
class UserOutcome:
    """What one method did for one user: its query (the intent, which Q_EM and ROUGE-L are
    taken on), the text it shows (``text``; None: the intent itself, as a baseline's) and what
    the shared retrieval returned for that text (I_Hit@K, NDCG@10 and Cons@K come from it)."""

    user_id: str
    target: str
    truth: str
    query: str | None
    retrieved: list[str] = field(default_factory=list)
    format_valid: bool = True
    refinements: int = 0
    latency_s: float = 0.0
    text: str | None = None

    @property
    def shown(self) -> str:
        """The text the shopper sees: ``text``, else the intent."""
        return self.text if self.text is not None else (self.query or "")


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two (normalized) queries; 0 when either is empty."""
    if not prediction.strip() or not reference.strip():
        return 0.0
    return float(_ROUGE.score(reference, prediction)["rougeL"].fmeasure)


def ranking_metrics(outcomes: Sequence[UserOutcome]) -> dict[str, dict[str, float]]:
    """I_Hit@K and nDCG@10 of each user's target among the retrieved ids (0 when absent)."""
    qrels = [ir_measures.Qrel(o.user_id, o.target, 1) for o in outcomes]
    run = [
        # Scores decrease with rank so ir-measures keeps the retrieval order.
        ir_measures.ScoredDoc(o.user_id, doc, float(len(o.retrieved) - i))
        for o in outcomes
        for i, doc in enumerate(dict.fromkeys(o.retrieved))
    ]
    out: dict[str, dict[str, float]] = {o.user_id: {} for o in outcomes}
    names = {Success @ k: f"i_hit@{k}" for k in HIT_KS} | {nDCG @ 10: "ndcg@10"}
    for metric in ir_measures.iter_calc(_MEASURES, qrels, run):
        out[metric.query_id][names[metric.measure]] = float(metric.value)
    for row in out.values():
        for name in names.values():
            row.setdefault(name, 0.0)
    return out


def score_outcomes(outcomes: Sequence[UserOutcome]) -> list[dict[str, float]]:
    """Per-user metric rows (same order as ``outcomes``)."""
    if len({o.user_id for o in outcomes}) != len(outcomes):
        raise ValueError("one outcome per user expected")
    ranks = ranking_metrics(outcomes)
    rows = []
    for o in outcomes:
        query = normalize_query(o.query or "")
        em = float(bool(query) and query == o.truth)
        r = ranks[o.user_id]
        shown = normalize_query(o.shown)
        rows.append(
            {
                "q_em": em,
                "rouge_l": rouge_l(query, o.truth),
                **r,
                "cons@1": em * r["i_hit@1"],
                "cons@10": em * r["i_hit@10"],
                "i_hit@10_right": r["i_hit@10"] if em else float("nan"),
                "text_words": float(len(shown.split())),
                "text_differs": float(shown != query),
                "format_valid": float(o.format_valid),
                "refinements": float(o.refinements),
                "latency_s": float(o.latency_s),
            }
        )
    return rows


def distinct_ratio(outcomes: Sequence[UserOutcome]) -> float:
    """Distinct normalized queries per user (1.0: every user got a different query)."""
    if not outcomes:
        return 0.0
    return len({normalize_query(o.query or "") for o in outcomes}) / len(outcomes)


def aggregate(
    rows: Sequence[dict[str, float]], *, seed: int = 0, resamples: int = 1000
) -> dict[str, dict[str, float]]:
    """Mean and 95% percentile-bootstrap interval of every metric over users (a metric that is
    NaN for some users, ``i_hit@10_right``, over the users it is defined for)."""
    summary: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(seed)
    for name in METRICS:
        values = np.array([row.get(name, float("nan")) for row in rows], dtype=float)
        values = values[~np.isnan(values)]
        mean = float(values.mean()) if len(values) else float("nan")
        if len(values) > 1 and np.ptp(values) > 0:
            ci = bootstrap(
                (values,),
                np.mean,
                n_resamples=resamples,
                confidence_level=0.95,
                method="percentile",
                random_state=rng,
            ).confidence_interval
            low, high = float(ci.low), float(ci.high)
        else:  # a constant sample has a degenerate interval
            low = high = mean
        summary[name] = {"mean": mean, "low": low, "high": high}
    return summary


def sign_test(better: int, worse: int) -> float:
    """Two-sided sign test of ``better`` against ``worse`` shoppers (ties left out): SciPy's
    exact binomial test at 1/2; 1.0 when no shopper differs."""
    return float(binomtest(better, better + worse).pvalue) if better + worse else 1.0


def _sign_counts(pairs: Sequence[tuple[float, float]]) -> dict[str, float]:
    """``better`` (the method 1, the reference 0), ``worse``, ``ties`` and the sign test's p."""
    better = sum(1 for mine, ref in pairs if mine > ref)
    worse = sum(1 for mine, ref in pairs if mine < ref)
    return {
        "better": better,
        "worse": worse,
        "ties": len(pairs) - better - worse,
        "p": sign_test(better, worse),
    }


def paired_tests(
    outcomes: Mapping[str, Sequence[UserOutcome]], reference: str
) -> dict[str, dict[str, object]]:
    """Each method against ``reference`` (both keys of ``outcomes``, by label), over the
    shoppers both scored (same user ids): for Q_EM, I_Hit@10 (the per-shopper hit) and Cons@10,
    the shoppers where the method is better, worse or tied and the two-sided sign test's p;
    the same on I_Hit@10 over the shoppers whose Q_EM outcome is the same
    (``HIT_AT_EQUAL_Q_EM``); ``shoppers`` compared; and ``differs``, the shoppers whose
    recommended query (the intent, normalized) is not the reference's. Counts only: no
    per-shopper row."""
    scored: dict[str, dict[str, tuple[str, dict[str, float]]]] = {}
    for label, outs in outcomes.items():  # each method scored once, by user id
        rows = score_outcomes(outs)
        scored[label] = {
            o.user_id: (normalize_query(o.query or ""), row)
            for o, row in zip(outs, rows, strict=True)
        }
    ref = scored[reference]
    tests: dict[str, dict[str, object]] = {}
    for label, mine in scored.items():
        if label == reference:
            continue
        users = [u for u in mine if u in ref]
        entry: dict[str, object] = {
            "shoppers": len(users),
            "differs": sum(1 for u in users if mine[u][0] != ref[u][0]),
        }
        for name in PAIRED_METRICS:
            entry[name] = _sign_counts([(mine[u][1][name], ref[u][1][name]) for u in users])
        equal = [u for u in users if mine[u][1]["q_em"] == ref[u][1]["q_em"]]
        entry[HIT_AT_EQUAL_Q_EM] = _sign_counts(
            [(mine[u][1]["i_hit@10"], ref[u][1]["i_hit@10"]) for u in equal]
        )
        tests[label] = entry
    return tests
