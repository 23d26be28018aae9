"""The next-item model (agent.ranking.nextitem): it learns, starts from text, round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from agent.ranking.nextitem import NextItemConfig, NextItemModel, text_init

ITEMS = [f"I{i}" for i in range(8)]
# Every shopper walks the same cycle I0 -> I1 -> ... -> I7 -> I0 from a different start.
CYCLE = {f"U{u}": [ITEMS[(u + k) % len(ITEMS)] for k in range(6)] for u in range(24)}
SMALL = NextItemConfig(max_len=8, dim=16, blocks=1, dropout=0.0, lr=1e-2, batch_size=8, seed=0)


def nll(model: NextItemModel, sequences: dict[str, list[str]]) -> float:
    """Mean negative log-likelihood of each next item given the items before it."""
    histories, targets = [], []
    for seq in sequences.values():
        for k in range(1, len(seq)):
            histories.append(seq[:k])
            targets.append(model.item_ids.index(seq[k]))
    probs = model.predict(histories)
    return float(-np.log(probs[np.arange(len(targets)), targets]).mean())


def test_training_lowers_the_loss_and_learns_a_deterministic_pattern() -> None:
    untrained = NextItemModel.fit(CYCLE, ITEMS, NextItemConfig(**{**SMALL.__dict__, "epochs": 0}))
    losses: list[float] = []
    model = NextItemModel.fit(
        CYCLE,
        ITEMS,
        NextItemConfig(**{**SMALL.__dict__, "epochs": 30}),
        on_epoch=lambda _epoch, m: losses.append(nll(m, CYCLE)),
    )
    assert len(losses) == 30
    assert losses[-1] < 0.5 * nll(untrained, CYCLE)
    assert losses[-1] < losses[0]
    probs = model.predict([["I2", "I3"], ["I6"], ["I5", "I6", "I7"]])
    assert [ITEMS[i] for i in probs.argmax(axis=1)] == ["I4", "I7", "I0"]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_text_init_starts_similar_items_close_and_keeps_the_init_norm() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ITEMS), 384)).astype(np.float32)
    vectors[1] = vectors[0] + 0.01 * rng.normal(size=384)  # I1 reads like I0
    vectors[7] = 0.0  # no vector for I7: it keeps its random start
    config = NextItemConfig(**{**SMALL.__dict__, "epochs": 0})
    random_start = NextItemModel.fit(CYCLE, ITEMS, config)
    model = NextItemModel.fit(CYCLE, ITEMS, config, item_vectors=vectors)
    emb = model.module.items.weight.detach().numpy()[1:]  # row 0 is padding
    base = random_start.module.items.weight.detach().numpy()[1:]

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(emb[0], emb[1]) > 0.99
    assert all(cos(emb[0], emb[j]) < 0.9 for j in range(2, 7))
    assert np.allclose(emb[7], base[7])
    assert not np.allclose(emb[0], base[0])
    # The text rows' mean norm is the random init's, so the learning rate means the same.
    norms = np.linalg.norm(emb[:7], axis=1).mean()
    assert norms == pytest.approx(np.linalg.norm(base, axis=1).mean(), rel=0.2)


def test_text_init_reduces_to_the_model_dim_and_refuses_a_wrong_row_count() -> None:
    vectors = np.eye(5, 12, dtype=np.float32)
    out = text_init(vectors, dim=16, scale=4.0)
    assert out.shape == (5, 16)
    assert np.allclose(out[:, 5:], 0.0)  # 5 items span at most 5 directions
    assert np.linalg.norm(out, axis=1).mean() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="rows"):
        NextItemModel.fit(CYCLE, ITEMS, SMALL, item_vectors=vectors)


def test_text_init_still_trains() -> None:
    vectors = np.random.default_rng(1).normal(size=(len(ITEMS), 32))
    model = NextItemModel.fit(
        CYCLE, ITEMS, NextItemConfig(**{**SMALL.__dict__, "epochs": 30}), item_vectors=vectors
    )
    assert ITEMS[int(model.predict([["I3", "I4"]])[0].argmax())] == "I5"


def test_save_and_load_keep_the_predictions(tmp_path) -> None:
    model = NextItemModel.fit(CYCLE, ITEMS, NextItemConfig(**{**SMALL.__dict__, "epochs": 3}))
    model.save(tmp_path / "nextitem")
    loaded = NextItemModel.load(tmp_path / "nextitem")
    histories = [["I1", "I2"], ["I7"], [], ["unknown", "I4"]]
    assert loaded.item_ids == model.item_ids
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict(histories), model.predict(histories))
    # no known history: uniform
    assert np.allclose(loaded.predict([["unknown"]])[0], 1 / len(ITEMS))


def test_a_prediction_does_not_depend_on_the_other_histories_of_its_batch() -> None:
    """Batches are cut to their longest history and padding is masked: a short history scores
    the same alone, beside a long one, and padded to ``max_len`` by hand."""
    import torch  # heavy: the hand-padded forward pass below

    model = NextItemModel.fit(
        CYCLE, ITEMS, NextItemConfig(**{**SMALL.__dict__, "blocks": 2, "epochs": 3})
    )
    alone = model.predict([["I1", "I2"]])[0]
    beside = model.predict([["I1", "I2"], ["I3", "I4"] * 4])[0]
    with torch.inference_mode():
        seq = torch.tensor([model._encode(["I1", "I2"])])  # padded to max_len
        full = torch.softmax(model.module.logits(model.module(seq)[:, -1]), dim=-1)[0].numpy()
    np.testing.assert_allclose(alone, beside, atol=1e-6)
    np.testing.assert_allclose(alone, full, atol=1e-6)


def test_load_or_fit_starts_from_the_text_vectors_and_refits_without_them(
    tiny_dataset, tmp_path
) -> None:
    from agent.ranking import load_or_fit
    from tests.helpers.fakes import FakeCatalog

    catalog = FakeCatalog(tiny_dataset.products.values())
    asked: list[list[str]] = []

    def vectors(ids):  # type: ignore[no-untyped-def]
        asked.append(list(ids))
        return np.random.default_rng(0).normal(size=(len(ids), 24))

    args = (tmp_path / "m", tiny_dataset.products, tiny_dataset.sequences, catalog.search_many)
    models, fitted = load_or_fit(*args, progress=False, item_vectors=vectors)
    assert fitted and models.meta["nextitem_text_init"] is True
    assert asked == [sorted(tiny_dataset.products)]  # once, in the model's item order
    assert load_or_fit(*args, progress=False, item_vectors=vectors)[1] is False  # reused
    models, fitted = load_or_fit(*args, progress=False)  # no vectors: not the same fit
    assert fitted and models.meta["nextitem_text_init"] is False
