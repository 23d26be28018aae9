"""The query the shopper sees (``agent.writing``): the intent/text split in the graph's output,
the check of the text's products, the fallback to the intent's own text, and no model call
where there is nothing to write with. Fakes: a scripted grounded drafter that also writes, an
in-memory catalog (word overlap) and ranking models fitted on the tiny catalog.

The tiny catalog has 3 products per category, so ``top_k=3`` makes the intent's page its whole
category: a text that finds that category fits, one that finds another drifts."""

from __future__ import annotations

from dataclasses import replace

from agent.context import Context
from agent.prompts import WRITE_SYSTEM_PROMPT
from agent.records import RetrievedProduct, TextCheck, WrittenText
from agent.writing import page_check, text_fits
from graphs.query_agent import Deps, build_graph
from tests.helpers.fakes import FakeCatalog, ScriptedGroundedDrafter, ScriptedWritingDrafter

FILAMENT_USER = "A1TINYUSER01"  # bought filament (x3) then beakers
FILAMENT = "additive manufacturing products 3d printing supplies filament"
FILAMENT_IDS = {"B000TINY01", "B000TINY02", "B000TINY03"}
BEAKERS = "lab scientific products glassware labware beakers"
BEAKER_IDS = {"B000TINY04", "B000TINY05", "B000TINY06"}
TAPE_IDS = {"B000TINY07", "B000TINY08", "B000TINY09"}
TAPE = "tapes adhesives sealants adhesive duct tape"
# The default roles (issue 27): recall's candidates, the check picks the intent, the model
# writes its text; no refinement of the intent.
CTX = Context(fit_threshold=0.0, top_k=3, max_rewrites=1)  # one rewrite: the tests follow it


def run(tiny_dataset, store, models, drafter, ctx: Context = CTX):  # type: ignore[no-untyped-def]
    catalog = FakeCatalog(tiny_dataset.products.values())
    graph = build_graph(Deps(drafter=drafter, catalog=catalog, ranking=models)).compile(store=store)
    return graph.invoke({"user_id": FILAMENT_USER, "before": 4}, context=ctx)


def filament_intent(tiny_dataset, store, models, texts):  # type: ignore[no-untyped-def]
    """A run whose intent is the filament query (the check's pick for this shopper among
    recall's candidates, asserted), with the model writing ``texts`` in turn."""
    drafter = ScriptedWritingDrafter([[BEAKERS]], texts)
    out = run(tiny_dataset, store, models, drafter)
    assert out["query"] == FILAMENT  # the intent: the catalog query the check picked
    return out, drafter


def test_the_output_splits_intent_and_the_text_the_shopper_sees(
    tiny_dataset, store, tiny_models
) -> None:
    out, drafter = filament_intent(tiny_dataset, store, tiny_models, ["Query: PLA Filament"])
    assert out["query_text"] == "pla filament" and out["text_source"] == "model"
    # The products are the shown text's, through the graph's search: the filaments.
    assert {p.item_id for p in out["products"]} == FILAMENT_IDS
    # ... as the text retrieves them: "pla" and "filament" match only the PLA (the intent's page,
    # retrieved for the 8-word category path, scores every filament alike).
    assert [(p.item_id, p.score) for p in out["products"]][0] == ("B000TINY01", 1.0)
    assert [p.score for p in out["products"]][1:] == [0.5, 0.5]
    [text] = out["texts"]
    assert out["products"] == text.products
    assert isinstance(text, WrittenText) and text.kind == "write" and text.check is not None
    assert text.check.share == 1.0 and text.check.fits
    assert out["intent_check"].share == 1.0 and out["rewrites"] == 0
    # The compact prompt: the system line and one user turn naming the intent, the shopper's
    # brands and its two latest titles (no worked turns).
    [prompt] = drafter.written
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[0]["content"] == WRITE_SYSTEM_PROMPT
    category, brands, recent = prompt[1]["content"].split("\n")
    assert category == f"Category: {FILAMENT}"
    assert brands.startswith("Brands: ") and "HATCHBOX" in brands
    assert recent.startswith("Recent: ") and "Glass Beake" in recent and "PETG" in recent


def test_a_drifting_text_is_rewritten_and_the_rewrite_is_shown_when_it_fits(
    tiny_dataset, store, tiny_models
) -> None:
    out, drafter = filament_intent(
        tiny_dataset, store, tiny_models, ["Query: duct tape", "Query: hatchbox filament"]
    )
    assert [t.text for t in out["texts"]] == ["duct tape", "hatchbox filament"]
    first, second = out["texts"]
    assert first.check is not None and not first.check.fits and first.check.share == 0.0
    assert {p.item_id for p in first.products} == TAPE_IDS
    assert second.kind == "rewrite" and second.check is not None and second.check.fits
    assert out["rewrites"] == 1 and out["query_text"] == "hatchbox filament"
    assert {p.item_id for p in out["products"]} == FILAMENT_IDS
    # The rewrite saw what its text retrieved and the check's verdict.
    rewrite = drafter.written[1]
    assert rewrite[-2] == {"role": "assistant", "content": "Query: duct tape"}
    assert "Gorilla" in rewrite[-1]["content"] and "0 of its 3 products" in rewrite[-1]["content"]


def test_when_no_text_fits_the_intent_is_shown_with_its_own_products(
    tiny_dataset, store, tiny_models
) -> None:
    out, drafter = filament_intent(
        tiny_dataset, store, tiny_models, ["Query: duct tape", "Query: glass beaker"]
    )
    assert out["query_text"] == FILAMENT and out["text_source"] == "intent"
    assert {p.item_id for p in out["products"]} == FILAMENT_IDS  # the intent's page
    assert out["rewrites"] == 1 and len(drafter.written) == 2  # Context.max_rewrites bounds it
    assert all(t.check is not None and not t.check.fits for t in out["texts"])


def test_no_rewrite_when_the_first_text_fits_and_none_beyond_the_budget(
    tiny_dataset, store, tiny_models
) -> None:
    out, drafter = filament_intent(tiny_dataset, store, tiny_models, ["Query: filament"])
    assert len(drafter.written) == 1 and out["rewrites"] == 0
    drafter = ScriptedWritingDrafter([[BEAKERS]], ["Query: duct tape"])
    out = run(tiny_dataset, store, tiny_models, drafter, replace(CTX, max_rewrites=0))
    assert len(drafter.written) == 1 and out["text_source"] == "intent"


def test_a_completion_that_is_not_a_query_falls_back(tiny_dataset, store, tiny_models) -> None:
    out, _ = filament_intent(tiny_dataset, store, tiny_models, ["", "Query: shopper identity"])
    assert [t.text for t in out["texts"]] == [None, None]
    assert out["texts"][0].error and out["text_source"] == "intent"


def test_the_text_falls_back_when_its_products_hold_less_of_the_shoppers_next_purchase() -> None:
    intent = TextCheck(share=1.0, mass=0.4)
    assert text_fits(1.0, 0.4, intent, 0.5)  # as good as the intent's page
    assert text_fits(0.6, 0.5, intent, 0.5)  # the intent's enough, and the shopper's more
    assert not text_fits(1.0, 0.39, intent, 0.5)  # the intent's, but less of the shopper's
    assert not text_fits(0.4, 0.9, intent, 0.5)  # the shopper's, but drifted off the intent
    # An intent whose own page is mostly other categories asks no more than its own share.
    assert text_fits(0.3, 0.4, TextCheck(share=0.3, mass=0.4), 0.5)


def test_page_check_counts_the_category_share_and_the_next_item_mass(tiny_models) -> None:
    def page(ids: list[str]) -> list[RetrievedProduct]:
        return [
            RetrievedProduct(item_id=i, title=i, rank=k + 1, score=1.0) for k, i in enumerate(ids)
        ]

    history = ["B000TINY01", "B000TINY02"]
    [probs] = tiny_models.next_item_probs([history])
    beakers = sorted(BEAKER_IDS)
    share, mass = page_check(page(beakers), BEAKERS, tiny_models, history)
    assert share == 1.0
    expected = sum(probs[tiny_models.item_index[i]] for i in beakers)
    assert abs(mass - expected) < 1e-6 and 0 < mass < 1
    share, mass2 = page_check(page([*beakers[:1], "B000TINY07"]), BEAKERS, tiny_models, history)
    assert share == 0.5 and mass2 < mass
    assert page_check([], BEAKERS, tiny_models, history) == (0.0, 0.0)


def test_no_model_call_without_a_writer_or_with_writing_off(
    tiny_dataset, store, tiny_models
) -> None:
    out = run(tiny_dataset, store, tiny_models, None)  # the ranker ablation
    assert out["query_text"] == out["query"] and out["text_source"] == "intent"
    assert out["texts"] == [] and out["rewrites"] == 0

    drafter = ScriptedWritingDrafter([[BEAKERS]], ["Query: pla filament"])
    off = replace(CTX, write_query=False)
    out = run(tiny_dataset, store, tiny_models, drafter, off)
    assert drafter.written == [] and out["query_text"] == out["query"] == FILAMENT
    assert out["text_source"] == "intent" and len(out["products"]) == 3

    # A grounded drafter that cannot generate freely writes nothing either.
    out = run(tiny_dataset, store, tiny_models, ScriptedGroundedDrafter([[BEAKERS]]))
    assert out["query_text"] == out["query"] and out["texts"] == []


class CountingWritingDrafter(ScriptedWritingDrafter):
    """A ``ScriptedWritingDrafter`` that counts each kind of model call."""

    def __init__(self, script, texts) -> None:  # type: ignore[no-untyped-def]
        super().__init__(script, texts)
        self.counts = {"beams": 0, "score": 0, "generate": 0}

    def beams(self, *args, **kw):  # type: ignore[no-untyped-def]
        self.counts["beams"] += 1
        return super().beams(*args, **kw)

    def score(self, *args, **kw):  # type: ignore[no-untyped-def]
        self.counts["score"] += 1
        return super().score(*args, **kw)

    def generate(self, *args, **kw):  # type: ignore[no-untyped-def]
        self.counts["generate"] += 1
        return super().generate(*args, **kw)


def test_by_default_the_model_only_writes_the_text_of_the_rankers_intent(
    tiny_dataset, store, tiny_models
) -> None:
    """The default ``Context`` (issue 27): the check's candidates come from recall, so the
    intent is the ``ranker`` ablation's (no model) query, and the model's one call per run is
    the write: one free generation, no beams, no scoring (no vote)."""
    catalog = FakeCatalog(tiny_dataset.products.values())

    def graph(drafter):  # type: ignore[no-untyped-def]
        deps = Deps(drafter=drafter, catalog=catalog, ranking=tiny_models)
        return build_graph(deps).compile(store=store)

    ranker = graph(None)
    shoppers = [
        {"user_id": FILAMENT_USER, "before": 3},
        {"user_id": FILAMENT_USER, "before": 4},
        {"user_id": "A1TINYUSER03"},
        {"user_id": "A1TINYUSER05"},
        {"user_id": "A1TINYUSER07"},
    ]
    intents = set()
    for shopper in shoppers:
        expected = ranker.invoke(shopper, context=Context())
        assert expected["texts"] == [] and expected["query"] in tiny_models.vocab.queries
        # Beams that would change the pick if they were asked for; the text is the intent's,
        # which retrieves the intent's own page, so it fits and is not rewritten.
        drafter = CountingWritingDrafter([[TAPE, BEAKERS]], [f"Query: {expected['query']}"])
        out = graph(drafter).invoke(shopper, context=Context())
        assert drafter.counts == {"beams": 0, "score": 0, "generate": 1}, shopper
        assert out["query"] == expected["query"], shopper
        assert all("model" not in a.sources for a in out["attempts"])
        assert [t.kind for t in out["texts"]] == ["write"] and out["text_source"] == "model"
        intents.add(out["query"])
    assert len(intents) > 1  # the shoppers' intents differ: not one query for everyone


def test_the_studio_output_schema_has_both() -> None:
    from dataclasses import fields

    from agent.state import OutputState

    names = {f.name for f in fields(OutputState)}
    assert {"query", "query_text", "text_source", "texts", "intent_check"} <= names
