"""The query the shopper sees: the model writes the text of the recommendation's intent.

The check (``agent.nodes``) picks the **intent**, a catalog query such as ``additive
manufacturing products 3d printing supplies filament``: exact for the evaluation (Q_EM is taken on
it), unnatural as a search suggestion. After ``finalize`` these nodes write the **query text** the
shopper sees, and check it on what it retrieves:

    finalize -> write_query -> check_text -> (rewrite_query -> check_text)* -> choose_text

* ``write_query``: the language model writes a short, natural query for the intent and the
  shopper (``agent.prompts.write_messages``);
* ``check_text``: the text goes through the catalog's search; its products are judged against the
  intent's own page (``finalize``'s products): the share of them in the intent's category, and the
  next-item model's probability mass on them (``text_fits``);
* ``rewrite_query``: when the text's products drifted, the model sees them and the verdict and
  writes again (at most ``Context.max_rewrites`` times);
* ``choose_text``: the best text that fits becomes ``query_text`` and its products the
  recommendation's ``products`` (``text_source`` "model"); when none fits, the intent's own text
  and page (``text_source`` "intent").

No cost without value: without a model that writes (``Deps(drafter=None)``, the ``ranker``
ablation; a drafter with no free generation; free drafting, whose intent is already the model's
text) or with ``Context(write_query=False)``, no node here calls a model, and the text is the
intent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langgraph.runtime import Runtime

from agent.attempts import complete, grounded_drafter
from agent.context import Context, run_context
from agent.drafting.batching import MicroBatchingDrafter
from agent.prompts import rewrite_messages, write_messages
from agent.ranking.fit import CatalogModels
from agent.records import RetrievedProduct, TextCheck, WrittenText
from agent.search.protocol import Search
from agent.state import State

__all__ = [
    "can_write",
    "check_text",
    "choose_text",
    "page_check",
    "rewrite_query",
    "route_after_text_check",
    "text_fits",
    "write_query",
]


def can_write(drafter: Any, ranking: CatalogModels, ctx: Context) -> bool:
    """Whether this run writes a query text: on (``Context.write_query``), a grounded drafter
    (the intent is a catalog query; free drafting's intent is the model's own text already)
    that can also generate freely (a micro-batcher's wrapped drafter is asked)."""
    if drafter is None or not ctx.write_query or grounded_drafter(drafter, ranking, ctx) is None:
        return False
    inner = drafter
    while isinstance(inner, MicroBatchingDrafter):
        inner = inner.drafter
    return callable(getattr(inner, "generate", None))


def page_check(
    products: Sequence[RetrievedProduct], intent: str, ranking: CatalogModels, history: list[str]
) -> tuple[float, float]:
    """``(share, mass)`` of a result page: the share of its products in the intent's category
    (``vocab.item_query``), and the next-item model's probability that the shopper's next
    purchase is among them (0 without a next-item model or a history)."""
    if not products:
        return 0.0, 0.0
    share = sum(ranking.vocab.query_of(p.item_id) == intent for p in products) / len(products)
    [probs] = ranking.next_item_probs([history])
    mass = 0.0
    if probs is not None:
        index = ranking.item_index
        mass = float(sum(probs[index[p.item_id]] for p in products if p.item_id in index))
    return share, mass


def text_fits(share: float, mass: float, intent: TextCheck, min_share: float) -> bool:
    """A text's products fit when they are the intent's (a share in its category at least
    ``min_share``, or the intent page's own share when that is lower) and the shopper's (the
    next-item model's mass on them at least the intent page's)."""
    return share >= min(min_share, intent.share) and mass >= intent.mass


def _feedback(share: float, mass: float, intent: TextCheck, n: int) -> str:
    ratio = f"{mass / intent.mass:.2f}x" if intent.mass > 0 else "no"
    return (
        f"{round(share * n)} of its {n} products are in the category; they hold {ratio} the "
        "chance of the shopper's next purchase that the category's own page holds."
    )


def _generate(drafter: Any, messages: list[dict[str, str]], turn: int, ctx: Context) -> WrittenText:
    gen, parsed = complete(drafter, messages, ctx)
    return WrittenText(
        turn=turn,
        kind="write" if turn == 0 else "rewrite",
        messages=messages,
        completion=gen.text,
        prompt_token_ids=list(gen.prompt_token_ids),
        completion_token_ids=list(gen.completion_token_ids),
        text=parsed.query,
        error=parsed.error,
    )


def write_query(
    state: State, runtime: Runtime[Context], *, drafter: Any, ranking: CatalogModels
) -> dict[str, Any]:
    """The model's query text for the intent (``state.query``) and the shopper; nothing (and
    no model call) when this run does not write (``can_write``) or there is no intent."""
    ctx = run_context(runtime)
    if not state.query or state.profile is None or not can_write(drafter, ranking, ctx):
        return {"texts": []}  # an update all the same: Studio shows a null one as missing
    share, mass = page_check(state.products, state.query, ranking, state.history)
    intent = TextCheck(share=share, mass=mass)
    messages = write_messages(state.profile, state.query)
    return {"intent_check": intent, "texts": [_generate(drafter, messages, 0, ctx)]}


def check_text(
    state: State, runtime: Runtime[Context], *, search: Search, ranking: CatalogModels
) -> dict[str, Any]:
    """The last written text through the catalog's search, and the check's verdict on its
    products against the intent's page (``text_fits``)."""
    ctx = run_context(runtime)
    if not state.texts or state.texts[-1].check is not None or state.intent_check is None:
        return {"texts": []}
    last = state.texts[-1]
    intent = state.intent_check
    if last.text is None:
        check = TextCheck(share=0.0, mass=0.0, fits=False, feedback=f"Not a query: {last.error}.")
        return {"texts": [last.model_copy(update={"check": check})]}
    products = search.search(last.text, k=ctx.top_k)
    share, mass = page_check(products, state.query or "", ranking, state.history)
    check = TextCheck(
        share=share,
        mass=mass,
        fits=text_fits(share, mass, intent, ctx.text_min_share),
        feedback=_feedback(share, mass, intent, len(products)),
    )
    # Same turn: the reducer (``agent.state.merge_texts``) replaces the unchecked text.
    return {"texts": [last.model_copy(update={"products": products, "check": check})]}


def route_after_text_check(
    state: State, runtime: Runtime[Context]
) -> Literal["rewrite_query", "choose_text"]:
    """Rewrite only when the last text's products drifted (the check says it does not fit) and
    the budget lasts."""
    ctx = run_context(runtime)
    last = state.texts[-1] if state.texts else None
    if last is None or last.check is None or last.check.fits:
        return "choose_text"
    if state.rewrites >= ctx.max_rewrites:
        return "choose_text"
    return "rewrite_query"


def rewrite_query(
    state: State, runtime: Runtime[Context], *, drafter: Any, ranking: CatalogModels
) -> dict[str, Any]:
    """A new text, after the model sees what its last one retrieved and the check's verdict."""
    ctx = run_context(runtime)
    last = state.texts[-1]
    messages = rewrite_messages(
        last.messages,
        last.completion,
        last.text,
        state.query or "",
        last.products,
        last.check.feedback if last.check is not None else "",
    )
    return {"texts": [_generate(drafter, messages, state.rewrites + 1, ctx)], "rewrites": 1}


def choose_text(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The text the shopper sees: the fitting text whose products hold the most next-item mass
    (on a tie the earlier), with its products; else the intent's own text and page."""
    fitting = [t for t in state.texts if t.text and t.check is not None and t.check.fits]
    if not fitting:
        return {"query_text": state.query, "text_source": "intent"}
    best = max(fitting, key=lambda t: (t.check.mass if t.check else 0.0, -t.turn))
    return {"query_text": best.text, "text_source": "model", "products": best.products}
