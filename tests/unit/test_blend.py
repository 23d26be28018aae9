"""The language model's vote in the check: the learned weight, the held-out rows it is learned
on, and the check node ranking by ranker score + weight x log-probability."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.ranking import fit as fitmod
from agent.ranking.blend import ModelWeight, combine, fit_weight
from agent.ranking.fit import CatalogModels, FitConfig, fit_catalog
from agent.ranking.nextitem import NextItemConfig
from graphs.query_agent import Deps, build_graph
from memory_store import Dataset, UserMemory
from memory_store.products import Product
from tests.helpers.fakes import FakeCatalog, ScriptedGroundedDrafter

ROOT = "Industrial & Scientific"
KINDS = ["beakers", "pipettes", "filament", "nozzles", "gloves", "masks", "tape", "glue"]


def test_combine_adds_the_weighted_log_probability() -> None:
    raw = np.array([1.0, 0.5, 0.2])
    assert combine(raw, None, 1.0).tolist() == raw.tolist()
    assert combine(raw, [-1.0, -0.1, -5.0], 0.0).tolist() == raw.tolist()
    assert combine(raw, [-1.0, -0.1, -5.0], 1.0).tolist() == pytest.approx([0.0, 0.4, -4.8])


def test_fit_weight_keeps_the_ranker_unless_the_model_helps() -> None:
    # The ranker puts the right candidate (label 3) second; the model puts it first by far.
    helps = [([1.0, 0.9, 0.0], [-9.0, -1.0, -9.0], [0, 3, 0])] * 10
    found = fit_weight("m", helps)
    assert found.weight > 0 and (found.wins, found.losses) == (10, 0) and found.p_value < 0.01
    assert found.table["0"] == 0.0 and found.table[f"{found.weight:g}"] == 3.0
    # The model points at the wrong candidate: the ranker alone (weight 0) stays best.
    hurts = [([1.0, 0.9, 0.0], [-9.0, -1.0, -9.0], [3, 0, 0])] * 10
    assert fit_weight("m", hurts).weight == 0.0
    # No difference at any weight: the smaller (0) wins the tie.
    same = [([1.0, 0.0], [-1.0, -9.0], [3, 0])] * 4
    assert fit_weight("m", same).weight == 0.0
    # A better mean from a handful of rows is not enough: 3 rows better, 1 worse, 20 alike.
    noisy = helps[:3] + hurts[:1] + same * 5
    found = fit_weight("m", noisy)
    assert max(found.table.values()) > found.table["0"]  # a weight looks better on average...
    assert (found.wins, found.losses) == (3, 1) and found.p_value > 0.05
    assert found.weight == 0.0  # ...but not on clearly more rows: the ranker alone


def _synthetic(
    n_users: int = 120, seed: int = 0, per_kind: int = 3
) -> tuple[dict[str, Product], dict]:
    """Shoppers who walk a cycle of categories (enough rows for the ranker to fit)."""
    rng = random.Random(seed)
    products = {}
    for k, kind in enumerate(KINDS):
        for j in range(per_kind):
            item = f"P{k}{j}"
            products[item] = Product(
                item_id=item, title=f"{kind} model {j}", category=f"{ROOT} Lab {kind}"
            )
    sequences = {}
    for u in range(n_users):
        # each history starts with a product of the shopper's own, so no two rows are alike
        own = f"Q{u:03d}"
        products[own] = Product(item_id=own, title=f"sample {u}", category=f"{ROOT} Misc")
        kind, seq = rng.randrange(len(KINDS)), [own]
        for _ in range(rng.randint(3, 6)):
            seq.append(f"P{kind}{rng.randrange(per_kind)}")
            # mostly the next category of the cycle; a third of the time any other
            step = 1 if rng.random() < 0.67 else rng.randrange(2, len(KINDS))
            kind = (kind + step) % len(KINDS)
        sequences[f"U{u:03d}"] = seq
    return products, sequences


def _fit(products: dict[str, Product], sequences: dict, holdout: int = 20) -> CatalogModels:
    """The synthetic catalog's models, ``holdout`` ranker rows held out."""
    catalog = FakeCatalog(products.values())
    return fit_catalog(
        products,
        sequences,
        catalog.search_many,
        FitConfig(nextitem=NextItemConfig(epochs=2), holdout_rows=holdout),
    )


_FIT_AND_SAVE = """
import sys
from tests.unit.test_blend import _fit, _synthetic
# 12 products a category: sums over sets of them (the vocabulary's hit share) whose order
# follows the string hashing would differ in their last bits
_fit(*_synthetic(200, per_kind=12)).save(__import__("pathlib").Path(sys.argv[1]))
"""


def test_the_fit_is_the_same_in_every_process(tmp_path) -> None:
    """Two processes with different string hashing fit byte-identical models (next-item
    weights, ranker trees, vocabulary, held-out rows): what lets an evaluation's cached rows,
    keyed by the fit's inputs, be resumed in another home."""
    import hashlib
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"fit-{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", _FIT_AND_SAVE, str(out)],
            check=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        files = {}
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if path.name == fitmod.META_FILE:  # its timings differ; the rest must not
                meta = json.loads(data)
                meta.pop("seconds"), meta.pop("timings")
                data = json.dumps(meta, sort_keys=True).encode()
            files[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
        digests.append(files)
    assert "ranker.txt" in digests[0] and len(digests[0]) >= 5
    assert digests[0] == digests[1]


def test_fit_holds_out_rows_the_ranker_never_sees(monkeypatch, tmp_path) -> None:
    products, sequences = _synthetic()
    seen: list[tuple[list[str], str]] = []
    real_rows = fitmod.ranker_rows

    def rows_spy(models, rows, config, **kw):  # type: ignore[no-untyped-def]
        seen.append(list(rows))
        return real_rows(models, rows, config, **kw)

    fitted_on: list[int] = []
    real_fit = fitmod.Ranker.fit

    def fit_spy(groups, labels, names, config=None, **kw):  # type: ignore[no-untyped-def]
        fitted_on.append(len(groups))
        return real_fit(groups, labels, names, config, **kw)

    monkeypatch.setattr(fitmod, "ranker_rows", rows_spy)
    monkeypatch.setattr(fitmod.Ranker, "fit", staticmethod(fit_spy))
    models = _fit(products, sequences)
    assert models.ranker is not None
    train_rows, held_rows = seen  # the ranker's rows, then the held-out ones
    assert fitted_on == [len(train_rows)]
    assert len(held_rows) == len(models.holdout) == 20 == models.meta["holdout_rows"]
    held_users = {r["user_id"] for r in models.holdout}
    assert len(held_users) == 20
    train_targets = {(tuple(h), t) for h, t in train_rows}
    for row, (history, target) in zip(models.holdout, held_rows, strict=True):
        user = row["user_id"]
        assert (tuple(history), target) not in train_targets
        assert history == sequences[user][:-1] and target == sequences[user][-1]
        # the prompt is the grounded draft prompt of the memory before the target
        assert row["messages"][0]["role"] == "system"
        assert f"{len(history)} purchases" in row["messages"][1]["content"]
        assert len(row["queries"]) == len(row["raw"]) == len(row["labels"])
    # saved and loaded with the models
    models.save(tmp_path / "m")
    loaded = CatalogModels.load(tmp_path / "m")
    assert loaded.holdout == models.holdout


@pytest.fixture(scope="module")
def fitted_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The synthetic catalog's models with 40 held-out rows, fitted once, saved: enough rows
    that a model which knows the answer beats the ranker on more of them than a sign test
    calls chance."""
    models = _fit(*_synthetic(), holdout=40)
    folder = tmp_path_factory.mktemp("blend") / "m"
    models.save(folder)
    return folder


def _models_with_holdout(folder, tmp_path) -> CatalogModels:  # type: ignore[no-untyped-def]
    """A private copy of the fitted models (a test may store weights beside them)."""
    import shutil

    shutil.copytree(folder, tmp_path / "m")
    return CatalogModels.load(tmp_path / "m")


def test_model_weight_is_learned_once_and_kept_beside_the_models(fitted_dir, tmp_path) -> None:
    models = _models_with_holdout(fitted_dir, tmp_path)
    calls = []

    def oracle(messages, queries):  # type: ignore[no-untyped-def]
        # a model that knows the answer: high log-probability for the labelled candidate
        calls.append(queries)
        row = next(r for r in models.holdout if r["messages"] == messages)
        return [0.0 if y else -20.0 for y in row["labels"]]

    learned = models.model_weight("digest-a", oracle)
    relevant = [r for r in models.holdout if any(r["labels"])]
    assert len(calls) == len(relevant)  # a row with no relevant candidate is not scored
    assert learned.rows == len(models.holdout)
    # the ranker misses some rows a model that knows the answer gets right: it earns a weight
    assert any(max(r["labels"]) > r["labels"][int(np.argmax(r["raw"]))] for r in models.holdout)
    assert learned.weight > 0
    n = len(calls)
    assert models.model_weight("digest-a", oracle) == learned and len(calls) == n  # kept
    again = CatalogModels.load(tmp_path / "m")
    assert again.model_weights["digest-a"] == learned  # stored beside the models
    assert again.model_weight("digest-a", oracle) == learned and len(calls) == n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_weight_skipping_irrelevant_rows_learns_what_scoring_all_would(
    fitted_dir, tmp_path, seed
) -> None:
    """Rows whose candidates are all irrelevant are not scored, and the weight, its table and
    its sign test are those of scoring every row (whatever the model says about those rows)."""
    models = _models_with_holdout(fitted_dir, tmp_path)
    rng = random.Random(seed)
    for row in rng.sample(models.holdout, 8):  # rows whose candidates are all irrelevant
        row["labels"] = [0] * len(row["labels"])
    logprobs = {
        r["user_id"]: [
            (0.0 if y and rng.random() < 0.6 else -rng.uniform(0, 30)) for y in r["labels"]
        ]
        for r in models.holdout
    }
    by_messages = {str(r["messages"]): r["user_id"] for r in models.holdout}

    def scorer(messages, queries):  # type: ignore[no-untyped-def]
        return logprobs[by_messages[str(messages)]]

    every_row = fit_weight(
        "digest-b",
        [(r["raw"], logprobs[r["user_id"]], r["labels"]) for r in models.holdout],
    )
    asked = []

    def counting(messages, queries):  # type: ignore[no-untyped-def]
        asked.append(messages)
        return scorer(messages, queries)

    assert models.model_weight("digest-b", counting, progress=False) == every_row
    relevant = sum(1 for r in models.holdout if any(r["labels"]))
    assert len(asked) == relevant <= len(models.holdout) - 8  # the 8 zeroed rows were skipped


class _NamedDrafter(ScriptedGroundedDrafter):
    identity = "digest-test"


def _run(models: CatalogModels, drafter, ctx: Context, tmp_path):  # type: ignore[no-untyped-def]
    products, sequences = _synthetic()
    dataset = Dataset(
        name="synthetic",
        root=tmp_path,
        products=products,
        users=list(sequences),
        sequences=sequences,
    )
    store = InMemoryStore()
    UserMemory(store).ingest_dataset(dataset, progress=False)
    catalog = FakeCatalog(products.values())
    graph = build_graph(Deps(drafter=drafter, catalog=catalog, ranking=models)).compile(store=store)
    return graph.invoke({"user_id": "U001"}, context=ctx)


def test_check_ranks_by_ranker_score_plus_weighted_log_probability(fitted_dir, tmp_path) -> None:
    models = _models_with_holdout(fitted_dir, tmp_path)
    models.model_weights["digest-test"] = ModelWeight("digest-test", 1.0, 20, {})
    drafter = _NamedDrafter([[]])  # no beams: the model only votes (asked for: off by default)
    vote = Context(beams=0, max_refinements=0, model_vote=True, write_query=False)
    out = _run(models, drafter, vote, tmp_path)
    first = [a for a in out["attempts"] if a.turn == 0]
    assert first and all(a.logprob is not None for a in first)
    # the fake scores -(number of tokens); the rank score is the ranker's plus 1.0 x that
    history = list(_synthetic()[1]["U001"])
    [probs] = models.next_item_probs([history])
    raw = models.score(models.features(history, [a.query for a in first], probs))[0]
    assert [a.rank_score for a in first] == pytest.approx(
        (raw + np.array([a.logprob for a in first])).tolist()
    )
    assert drafter.scored  # one scoring call

    # weight 0 (a model that does not help on this catalog): no scoring, the ranker's order
    models.model_weights["digest-test"] = ModelWeight("digest-test", 0.0, 20, {})
    drafter = _NamedDrafter([[]])
    out = _run(models, drafter, vote, tmp_path)
    assert not drafter.scored
    assert all(a.logprob is None for a in out["attempts"])
    # and Context(model_vote=False) leaves it out whatever the weight
    models.model_weights["digest-test"] = ModelWeight("digest-test", 1.0, 20, {})
    drafter = _NamedDrafter([[]])
    _run(models, drafter, replace(vote, model_vote=False), tmp_path)
    assert not drafter.scored
