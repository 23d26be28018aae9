"""The evaluation scores the text the shopper sees: the agent's I_Hit/NDCG/Cons come from its
written text's results, Q_EM from its intent; a baseline's text is its intent. Fakes: the
in-memory catalog (word overlap, as the dense search's catalog), a scripted grounded drafter
that writes, ranking models fitted on the tiny data set's sequences before its test targets."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.fakes import FakeCatalog, ScriptedWritingDrafter
from training.evaluation.runner import EvalConfig, Evaluator, MethodSpec


def test_the_agents_metrics_come_from_its_written_text(tiny_dataset, tmp_path: Path) -> None:
    drafters: list[ScriptedWritingDrafter] = []

    def factory(model: str | None) -> ScriptedWritingDrafter:
        drafters.append(ScriptedWritingDrafter([], ["Query: duct tape"]))
        return drafters[-1]

    config = EvalConfig(
        data="tiny", split="test", home=str(tmp_path), search="dense", write_query=True
    )
    evaluator = Evaluator(
        tiny_dataset,
        config,
        cache_dir=tmp_path / "cache",
        catalog=FakeCatalog(tiny_dataset.products.values()),
        drafter_factory=factory,
    )
    catalog = evaluator.catalog
    agent = evaluator.run(MethodSpec("agent", "scripted"), progress=False)
    assert drafters and drafters[0].written  # the model wrote texts
    duct_tape = [p.item_id for p in catalog.search("duct tape", k=10)]
    for o in agent.outcomes:
        assert o.query is not None
        if o.text is not None:  # shown: the text's products, not the intent's
            assert o.text == "duct tape" and o.retrieved == duct_tape
        else:
            assert o.retrieved == [p.item_id for p in catalog.search(o.query, k=10)]
    shown = [o for o in agent.outcomes if o.text is not None]
    assert shown  # (the tiny catalog's pages hold 10 of its 12 products: most texts fit)
    assert agent.metrics["text_differs"]["mean"] == len(shown) / len(agent.outcomes)
    ranker = evaluator.run(MethodSpec("ranker"), progress=False)
    assert all(o.text is None for o in ranker.outcomes)
    assert ranker.metrics["text_differs"]["mean"] == 0.0
    # Q_EM is the intent's: the agent without a model's vote recommends the ranker's intents.
    assert [o.query for o in agent.outcomes] == [o.query for o in ranker.outcomes]
    assert agent.metrics["q_em"] == ranker.metrics["q_em"]
    assert agent.metrics["text_words"]["mean"] < ranker.metrics["text_words"]["mean"]
