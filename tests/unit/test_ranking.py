"""What the check learns per catalog: recall sources, leave-one-out fitting, the new baselines."""

from __future__ import annotations

import os

import numpy as np

from agent.ranking import fit as fitmod
from agent.ranking import threads
from agent.ranking.candidates import merge, recall
from agent.ranking.features import FEATURES
from agent.ranking.fit import FitConfig, fit_catalog, relevance
from agent.ranking.nextitem import NextItemConfig
from agent.ranking.ranker import Ranker
from agent.ranking.vocabulary import QueryVocabulary, Transitions
from tests.helpers.fakes import FakeCatalog

FILAMENT = "additive manufacturing products 3d printing supplies filament"
BEAKERS = "lab scientific products glassware labware beakers"
TAPE = "tapes adhesives sealants adhesive duct tape"
METERS = "test measure inspect electrical testing multimeters analyzers digital"


def test_transitions_count_consecutive_queries_and_smooth() -> None:
    tr = Transitions.fit([["a", "b", "a", "b"], ["a", "c"], [None, "a", "b"]])
    assert tr.top("a", 2) == ["b", "c"]
    assert tr.prob("a", "b") > tr.prob("a", "c") > tr.prob("a", "a") > 0
    assert tr.popular(1) == ["a"] or tr.popular(1) == ["b"]


def test_recall_lists_every_source_of_a_candidate(tiny_models, tiny_dataset) -> None:
    history = list(tiny_dataset.sequences["A1TINYUSER01"][:3])  # filament, filament, beakers
    [probs] = tiny_models.next_item_probs([history])
    cands = recall(
        tiny_models.vocab, history, probs, tiny_models.item_ids, model_queries=[TAPE, BEAKERS]
    )
    by_query = {c.query: c.sources for c in cands}
    assert by_query[TAPE][0] == "model"
    assert by_query[BEAKERS][:2] == ["model", "memory"]
    assert by_query[FILAMENT][0] == "memory"
    assert set(s for c in cands for s in c.sources) <= {
        "model",
        "memory",
        "transition",
        "next-item",
        "popular",
    }
    assert merge([("a", ["x"]), ("b", ["x", "y"])])[0].sources == ["a", "b"]


def test_fitting_holds_out_each_shoppers_last_purchase(tiny_dataset, monkeypatch) -> None:
    """Leave-one-out: the stage-A model and transitions never see a row's target, and a row's
    features come from the events before it."""
    fitted: list[dict[str, list[str]]] = []
    real_fit = fitmod.NextItemModel.fit

    def spy(sequences, item_ids, config=None, **kw):  # type: ignore[no-untyped-def]
        fitted.append({u: list(s) for u, s in sequences.items()})
        return real_fit(sequences, item_ids, config, **kw)

    rows_seen: list[tuple[list[str], str]] = []
    real_rows = fitmod.ranker_rows

    def rows_spy(models, rows, config, **kw):  # type: ignore[no-untyped-def]
        rows_seen.extend((list(h), t) for h, t in rows)
        # the stage-A transitions hold no transition into a row's target position
        return real_rows(models, rows, config, **kw)

    monkeypatch.setattr(fitmod.NextItemModel, "fit", staticmethod(spy))
    monkeypatch.setattr(fitmod, "ranker_rows", rows_spy)
    catalog = FakeCatalog(tiny_dataset.products.values())
    models = fit_catalog(
        tiny_dataset.products,
        tiny_dataset.sequences,
        catalog.search_many,
        FitConfig(nextitem=NextItemConfig(epochs=1)),
    )
    seqs = {u: list(s) for u, s in tiny_dataset.sequences.items() if len(s) >= 2}
    stage_a, stage_b = fitted
    assert stage_a == {u: s[:-1] for u, s in seqs.items()}  # the last purchase held out
    assert stage_b == {u: list(s) for u, s in tiny_dataset.sequences.items()}  # serving: all
    assert rows_seen
    for history, target in rows_seen:
        user = next(u for u, s in seqs.items() if s[:-1] == history and s[-1] == target)
        assert history == seqs[user][: len(seqs[user]) - 1]  # nothing at or after the target
    assert models.meta["ranker_rows"] == len(rows_seen)


def test_features_and_relevance(tiny_models, tiny_dataset) -> None:
    history = list(tiny_dataset.sequences["A1TINYUSER01"][:3])
    [probs] = tiny_models.next_item_probs([history])
    queries = [FILAMENT, BEAKERS, TAPE, METERS]
    x = tiny_models.features(history, queries, probs)
    assert x.shape == (4, len(FEATURES))
    col = {n: x[:, i] for i, n in enumerate(FEATURES)}
    assert col["is_last"].tolist() == [0, 1, 0, 0]  # the last purchase was a beaker
    assert col["recency"][1] == 1.0 and col["recency"][0] == 0.5 and col["recency"][2] == 0.0
    assert np.all(col["mass_hit"] <= col["mass_retrieved"] + 1e-9)
    assert sorted(col["mass_rank"].tolist()) == [0, 1, 2, 3]
    assert relevance("q", "q", "t", ["t"]) == 3
    assert relevance("q", "q", "t", ["u"]) == 1
    assert relevance("q", "r", "t", ["t"]) == 0


def test_vocabulary_round_trips(tiny_models, tmp_path) -> None:
    tiny_models.vocab.save(tmp_path)
    again = QueryVocabulary.load(tmp_path)
    assert again.queries == tiny_models.vocab.queries
    assert again.retrieved == tiny_models.vocab.retrieved
    assert again.transitions.counts == tiny_models.vocab.transitions.counts


def test_fitted_baselines_on_the_tiny_catalog(tiny_models, tiny_dataset) -> None:
    from training.evaluation.baselines import Markov, RankerOnly, SASRecQuery

    examples = tiny_dataset.examples("test")
    history_of = lambda ex: list(ex.history)  # noqa: E731
    vocab = tiny_models.vocab
    markov = Markov(tiny_models, history_of)(examples)
    for ex, query in zip(examples, markov, strict=True):
        last = vocab.history_queries(ex.history)[0]
        assert query == vocab.transitions.top(last, 1)[0]  # the most frequent next query
    for method in (SASRecQuery, RankerOnly):
        queries = method(tiny_models, history_of)(examples)
        assert len(queries) == len(examples) and set(queries) <= set(vocab.queries)
    # the next-item model's likeliest item decides sasrec's query
    [probs] = tiny_models.next_item_probs([list(examples[0].history)])
    top = tiny_models.item_ids[int(np.argmax(probs))]
    assert SASRecQuery(tiny_models, history_of)(examples[:1]) == [vocab.query_of(top)]


def test_fit_threads_come_from_the_environment(monkeypatch, caplog) -> None:
    """QUERYAGENT_FIT_THREADS sets torch's threads for the fit only, and LightGBM's; a bad
    value is ignored with one warning; OpenMP's wait policy defaults to passive."""
    import torch  # heavy: only this test of the module needs it

    assert os.environ["OMP_WAIT_POLICY"]  # set on import unless the user set it
    monkeypatch.delenv(threads.FIT_THREADS_ENV, raising=False)
    assert threads.fit_threads() is None
    assert threads.lightgbm_threads() == threads.DEFAULT_LIGHTGBM_THREADS
    before = torch.get_num_threads()
    with threads.torch_threads() as n:
        assert n == before == torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    monkeypatch.setenv(threads.FIT_THREADS_ENV, str(wanted))
    assert threads.lightgbm_threads() == wanted
    with threads.torch_threads() as n:
        assert n == wanted == torch.get_num_threads()
    assert torch.get_num_threads() == before  # restored
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(threads.FIT_THREADS_ENV, bad)
        with caplog.at_level("WARNING"):
            assert threads.fit_threads() is None
        assert threads.FIT_THREADS_ENV in caplog.text


def test_the_rankers_trees_do_not_depend_on_its_thread_count(monkeypatch) -> None:
    """LightGBM's deterministic mode: the same trees at 1 and 2 threads, so
    QUERYAGENT_FIT_THREADS can change the ranker's speed and nothing else."""
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for _ in range(300):
        n = int(rng.integers(5, 20))
        x = rng.normal(size=(n, 4))
        y = np.zeros(n, dtype=int)
        y[int(np.argmax(x[:, 0] + rng.normal(size=n)))] = 3 if rng.random() < 0.4 else 1
        groups.append(x)
        labels.append(y)
    trees = []
    for n_threads in ("1", "2"):
        monkeypatch.setenv("QUERYAGENT_FIT_THREADS", n_threads)
        ranker = Ranker.fit(groups, labels, ["a", "b", "c", "d"])
        text = ranker.booster.model_to_string()  # type: ignore[attr-defined]
        trees.append((text[: text.index("parameters:")], ranker.calibration, ranker.threshold))
    assert trees[0] == trees[1]


def _synthetic_rows(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Shoppers of 6 candidates with FEATURES columns: the right query (relevance >= 1) has a
    higher feature 2; among right queries, the ones whose products hold the item (3) have a
    high mass_hit / mass_category share."""
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    hit_col, cat_col = FEATURES.index("mass_hit"), FEATURES.index("mass_category")
    for _ in range(400):
        x = rng.random((6, len(FEATURES)))
        y = np.zeros(6, dtype=int)
        right = int(rng.integers(6))
        x[right, 2] += 1.0
        y[right] = 3 if rng.random() < 0.5 else 1
        x[:, cat_col] = 0.5
        x[right, hit_col] = 0.45 if y[right] == 3 else 0.05
        groups.append(x)
        labels.append(y)
    return groups, labels


def test_the_factorized_check_adds_g_log_p_hit_to_the_rankers_score(tmp_path) -> None:
    from agent.ranking.ranker import RankerConfig

    groups, labels = _synthetic_rows()
    plain = Ranker.fit(groups, labels, list(FEATURES), RankerConfig(hit_gain=0.0))
    factorized = Ranker.fit(groups, labels, list(FEATURES), RankerConfig(hit_gain=0.25))
    assert plain.hit_booster is None and factorized.hit_booster is not None
    x = np.concatenate(groups[:20])
    p = factorized.hit_probability(x)
    assert ((p > 0) & (p < 1)).all()
    raw = np.asarray(factorized.booster.predict(x))  # type: ignore[attr-defined]
    assert np.allclose(factorized.score(x), raw + 0.25 * np.log(p))
    # The second model learned the share: among right queries, those that hold the item score
    # a higher chance.
    right = np.concatenate([y for y in labels[:20]]) >= 1
    held = np.concatenate([y for y in labels[:20]]) == 3
    assert p[right & held].mean() > p[right & ~held].mean() + 0.3
    factorized.save(tmp_path)
    loaded = Ranker.load(tmp_path)
    assert loaded.hit_gain == 0.25 and np.allclose(loaded.score(x), factorized.score(x))


def test_the_factorized_check_is_off_with_too_few_right_query_rows() -> None:
    from agent.ranking.ranker import RankerConfig

    groups, labels = _synthetic_rows()
    ranker = Ranker.fit(
        groups[:60], labels[:60], list(FEATURES), RankerConfig(hit_gain=0.25, hit_min_rows=50)
    )
    assert ranker.hit_booster is None and ranker.hit_gain == 0.0


def test_the_checks_features_come_from_the_history_before_the_target(
    tiny_models, tiny_dataset
) -> None:
    """A ranker row's features (the factorized check's second model reads the same) depend on
    the history before the target only: another target changes the labels, never a feature."""
    history = list(tiny_dataset.sequences["A1TINYUSER01"][:3])  # filament, filament, beakers
    # A target of the history's own category (its query is recalled from memory: a label of 1
    # or 3) and targets of other categories.
    targets = [history[-1], *sorted(set(tiny_models.item_ids) - set(history))[:3]]
    groups, labels, _ = fitmod.ranker_rows(
        tiny_models, [(history, t) for t in targets], FitConfig()
    )
    for x in groups[1:]:
        assert np.array_equal(x, groups[0])
    assert labels[0].max() >= 1
    assert any(not np.array_equal(y, labels[0]) for y in labels[1:])


def test_without_a_ranker_the_fit_is_a_probability_even_when_the_mass_rounds_above_one() -> None:
    """A catalog too small for a ranker scores a candidate by its next-item mass; a float32 sum
    of every product's probability can come out just above 1, and the check's fit must not."""
    from agent.ranking.fit import CatalogModels

    models = CatalogModels(QueryVocabulary(item_query={"i1": "q"}), None, None)
    x = np.zeros((2, len(FEATURES)))
    x[:, FEATURES.index("mass_hit")] = [np.float32(1.0000001), 0.25]
    raw, fit = models.score(x)
    assert raw[0] > 1.0  # the order keeps the raw mass
    assert fit.tolist() == [1.0, 0.25]
