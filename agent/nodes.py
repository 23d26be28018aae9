"""The query agent's nodes (recall, then rank):

    recall_memory -> draft_query -> recall_candidates -> retrieve_products -> check_consistency
        -> (refine_query -> retrieve_products -> check_consistency)* -> finalize

* ``draft_query``: the language model's constrained beams over the served catalog's query trie
  (``Context.grounded``; free generation otherwise);
* ``recall_candidates``: candidates from the memory, the catalog's transitions and the next-item
  model beside the model's (each attempt names its sources);
* ``retrieve_products``: what each candidate retrieves (cached per query at ingest for
  vocabulary queries; the catalog is searched for anything else);
* ``check_consistency``: the learned check (``agent.ranking``): each candidate's ``FitCheck``,
  whose ``fit`` is the chance that the shopper's next purchase is among its products;
* ``refine_query``: when the best chance is below the learned threshold, the model sees the
  verdict and proposes new candidates;
* ``finalize``: the best-scored attempt (the recommendation's intent), with its products
  searched in the catalog; ``agent.writing``'s nodes then write the query text the shopper sees.

Each node is ``(state, runtime)`` plus the dependency it needs as a keyword argument that
``graphs.query_agent.build_graph`` binds. Memory is read through ``runtime.store``. A model
mistake (a free completion that is not a query) is recorded in the attempt; only infrastructure
failures raise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from langgraph.runtime import Runtime

from agent.attempts import (
    beam_attempts,
    catalog_trie,
    free_attempt,
    grounded_drafter,
    model_logprobs,
)
from agent.context import Context, run_context
from agent.drafting.protocol import GroundedDrafter
from agent.drafting.trie import QueryTrie
from agent.prompts import (
    draft_messages,
    grounded_messages,
    grounded_refine_messages,
    refine_messages,
)
from agent.ranking.blend import ModelWeight, combine
from agent.ranking.fit import CatalogModels
from agent.records import FitCheck, QueryAttempt, RetrievedProduct
from agent.search.protocol import Search
from agent.state import State
from memory_store import UnknownUserError, UserMemory, UserProfile
from memory_store.namespaces import CATALOG_NAMESPACE

CATALOG_STATS_KEY = "stats"


def _memory(runtime: Runtime[Context]) -> UserMemory:
    if runtime.store is None:
        raise RuntimeError("the query agent needs a store: compile the graph with store=...")
    return UserMemory(runtime.store)


def recall_memory(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Fetch_Memory: the shopper's cached profile and purchases (events before ``before``)."""
    memory = _memory(runtime)
    if not memory.known(state.user_id):
        raise UnknownUserError(state.user_id)
    profile = memory.profile(state.user_id, before=state.before)
    history = [e.item_id for e in memory.events(state.user_id, before=state.before)]
    update: dict[str, Any] = {"profile": profile, "history": history}
    if profile.n_events == 0:
        item = runtime.store.get(CATALOG_NAMESPACE, CATALOG_STATS_KEY)  # type: ignore[union-attr]
        update["popular_categories"] = list(
            (item.value if item else {}).get("popular_categories", [])
        )
    return update


def draft_query(
    state: State, runtime: Runtime[Context], *, drafter: Any, ranking: CatalogModels
) -> dict[str, Any]:
    """The model's first candidates: constrained beams over the catalog's queries (or one free
    completion when ``Context.grounded`` is off or the catalog has no category queries)."""
    ctx = run_context(runtime)
    profile = _profile(state)
    grounded = grounded_drafter(drafter, ranking, ctx)
    if drafter is None or ctx.beams == 0:
        return {"pending": [], "can_refine": False}
    if grounded is not None:
        messages = grounded_messages(profile, state.popular_categories)
        trie = catalog_trie(grounded, ranking)
        pending = beam_attempts(
            grounded, trie, 0, "draft", messages, ctx.beams, set(), ctx.temperature
        )
        return {"pending": pending, "can_refine": True}
    messages = draft_messages(profile, state.popular_categories)
    return {"pending": [free_attempt(drafter, 0, "draft", messages, ctx)], "can_refine": True}


def _profile(state: State) -> UserProfile:
    if state.profile is None:
        raise RuntimeError("no profile in the state: recall_memory runs before this node")
    return state.profile


def recall_candidates(
    state: State, runtime: Runtime[Context], *, ranking: CatalogModels
) -> dict[str, Any]:
    """Add the memory's, the transitions' and the next-item model's candidates to the model's.

    A query the model also proposed keeps one attempt, listing every source.
    """
    ctx = run_context(runtime)
    pending = list(state.pending)
    if not ctx.recall:
        return {"pending": pending}  # the model's candidates alone (GRPO's group)
    [probs] = ranking.next_item_probs([state.history])
    model_queries = [a.query for a in pending if a.query]
    candidates = ranking.recall(state.history, probs, model_queries=model_queries)
    # query -> its attempt's position in ``pending``
    position = {a.query: i for i, a in enumerate(pending) if a.query}
    for cand in candidates:
        if cand.query in position:
            i = position[cand.query]
            pending[i] = pending[i].model_copy(update={"sources": cand.sources})
        elif len(pending) < ctx.max_candidates:
            position[cand.query] = len(pending)
            pending.append(
                QueryAttempt(turn=0, kind="draft", sources=cand.sources, query=cand.query)
            )
    return {"pending": pending}


def retrieve_products(
    state: State, runtime: Runtime[Context], *, search: Search, ranking: CatalogModels
) -> dict[str, Any]:
    """What each pending candidate retrieves: the ingest-time cache for vocabulary queries (the
    catalog's search's results, kept by the fit), one batched search for the rest (nothing for a
    completion that did not parse)."""
    ctx = run_context(runtime)
    pending = list(state.pending)
    missing: list[int] = []  # positions of the queries the cache does not hold
    for i, a in enumerate(pending):
        cached = _cached_products(ranking, a.query, ctx.top_k)
        if cached is not None:
            pending[i] = a.model_copy(update={"products": cached})
        elif a.query:
            missing.append(i)
    if missing:
        queries = [pending[i].query or "" for i in missing]
        found = search.search_many(queries, k=ctx.top_k)
        for i, products in zip(missing, found, strict=True):
            pending[i] = pending[i].model_copy(update={"products": list(products)})
    return {"pending": pending}


def _cached_products(
    ranking: CatalogModels, query: str | None, k: int
) -> list[RetrievedProduct] | None:
    """The top ``k`` products the catalog returned for ``query`` at ingest, when the
    vocabulary's retrieval cache holds that many; None means: search the catalog."""
    cached = ranking.vocab.products.get(query) if query else None
    if cached is None or len(cached) < k:
        return None
    return [RetrievedProduct.model_validate(p) for p in cached[:k]]


def learned_model_weight(drafter: Any, ranking: CatalogModels) -> ModelWeight | None:
    """The drafter's learned weight in this catalog's check (learned now on the catalog's
    held-out rows when not yet stored; ``queryagent ingest`` does it for the served model);
    None for a drafter that cannot score candidates or does not name its model."""
    identity = getattr(drafter, "identity", None)
    if not isinstance(drafter, GroundedDrafter) or not identity or not ranking.vocab.queries:
        return None
    trie = catalog_trie(drafter, ranking)

    def scorer(messages: list[dict[str, str]], queries: list[str]) -> list[float]:
        return model_logprobs(drafter, trie, messages, queries)

    return ranking.model_weight(identity, scorer)


def _model_vote(
    drafter: Any, ranking: CatalogModels, ctx: Context
) -> tuple[GroundedDrafter, QueryTrie, float] | None:
    """The grounded drafter, its trie and its learned weight in the check, when the model votes
    (``Context.model_vote``, a grounded drafter that names its model, a weight above 0)."""
    grounded = grounded_drafter(drafter, ranking, ctx)
    if grounded is None or not ctx.model_vote:
        return None
    learned = learned_model_weight(grounded, ranking)
    if learned is None or learned.weight <= 0:
        return None
    return grounded, catalog_trie(grounded, ranking), learned.weight


def check_consistency(
    state: State,
    runtime: Runtime[Context],
    *,
    ranking: CatalogModels,
    drafter: Any = None,
) -> dict[str, Any]:
    """The learned check: each candidate's chance that the shopper's next purchase is among the
    products it retrieves, ranked by the ranker's score plus the model's weighted vote (its
    log-probability of the query after the draft prompt, ``agent.ranking.blend``); the round's
    attempts close with it."""
    ctx = run_context(runtime)
    pending = list(state.pending)
    valid = [i for i, a in enumerate(pending) if a.query]
    for i, a in enumerate(pending):
        if not a.query:
            check = FitCheck(fit=0.0, feedback=f"Not a query: {a.error}.")
            pending[i] = a.model_copy(update={"check": check})
    if valid:
        [probs] = ranking.next_item_probs([state.history])
        queries = [pending[i].query or "" for i in valid]
        x = ranking.features(state.history, queries, probs)
        raw, fit = ranking.score(x)
        vote = _model_vote(drafter, ranking, ctx)
        if vote is not None:
            grounded, trie, weight = vote
            messages = grounded_messages(_profile(state), state.popular_categories)
            # One shared-prompt call scores every candidate, the model's beams too, so all
            # log-probabilities are on one scale (a beam's own is the constrained search's).
            logprobs = model_logprobs(grounded, trie, messages, queries)
            for i, lp in zip(valid, logprobs, strict=True):
                pending[i] = pending[i].model_copy(update={"logprob": lp})
            raw = combine(raw, logprobs, weight)
        for i, r, f in zip(valid, raw, fit, strict=True):
            check = FitCheck(
                fit=float(f),
                feedback=(
                    f"{f:.2f} chance that the next purchase is among the products "
                    f"(threshold {_threshold(ctx, ranking):.2f})."
                ),
            )
            pending[i] = pending[i].model_copy(update={"rank_score": float(r), "check": check})
    return {"attempts": pending, "pending": [], "threshold": _threshold(ctx, ranking)}


def _threshold(ctx: Context, ranking: CatalogModels) -> float:
    return ranking.threshold if ctx.fit_threshold is None else ctx.fit_threshold


def _scored(attempts: list[QueryAttempt]) -> list[tuple[str, FitCheck, QueryAttempt]]:
    """The attempts the check scored that are queries, as ``(query, check, attempt)``."""
    return [(a.query, a.check, a) for a in attempts if a.query and a.check is not None]


def _best(attempts: list[QueryAttempt]) -> tuple[str, FitCheck, QueryAttempt] | None:
    scored = _scored(attempts)
    if not scored:
        return None

    def rank(i: int) -> tuple[float, int]:
        _, check, a = scored[i]
        return (check.fit if a.rank_score is None else a.rank_score, -i)

    # Highest ranking score wins; on a tie the earlier attempt (stable order of recall).
    return scored[max(range(len(scored)), key=rank)]


def route_after_check(
    state: State, runtime: Runtime[Context]
) -> Literal["refine_query", "finalize"]:
    """Refine while the best candidate's chance is below the threshold (recorded by the check)
    and the budget lasts; a run without a model has nothing to refine with."""
    ctx = run_context(runtime)
    best = _best(state.attempts)
    if not state.can_refine or state.refinements >= ctx.max_refinements:
        return "finalize"
    if (state.profile is None or state.profile.n_events == 0) and best is not None:
        return "finalize"  # cold start: nothing to check against
    if best is not None and best[1].fit >= state.threshold:
        return "finalize"
    return "refine_query"


def refine_query(
    state: State, runtime: Runtime[Context], *, drafter: Any, ranking: CatalogModels
) -> dict[str, Any]:
    """New candidates from the model, after seeing what the best ones retrieve and how well
    they fit; queries already tried are not proposed again."""
    ctx = run_context(runtime)
    turn = state.refinements + 1
    grounded = grounded_drafter(drafter, ranking, ctx)
    profile = _profile(state)
    if grounded is None:
        last = state.attempts[-1]
        messages = refine_messages(
            last.messages or draft_messages(profile, state.popular_categories),
            last.completion,
            last.query,
            last.products,
            last.check,
        )
        if ctx.refine_temperature is not None:
            ctx = replace(ctx, temperature=ctx.refine_temperature)
        return {
            "pending": [free_attempt(drafter, turn, "refine", messages, ctx)],
            "refinements": 1,
        }
    scored = sorted(_scored(state.attempts), key=lambda s: -s[1].fit)
    model_best = next((a for a in state.attempts if "model" in a.sources), None)
    if model_best is not None:
        best_query = model_best.query or ""  # a beam always has one
    else:
        best_query = scored[0][0] if scored else ""
    checked = [(query, check.fit, [p.title for p in a.products]) for query, check, a in scored]
    messages = grounded_refine_messages(
        grounded_messages(profile, state.popular_categories), best_query, checked
    )
    tried = {a.query for a in state.attempts if a.query}
    trie = catalog_trie(grounded, ranking)
    temperature = ctx.temperature if ctx.refine_temperature is None else ctx.refine_temperature
    pending = beam_attempts(grounded, trie, turn, "refine", messages, ctx.beams, tried, temperature)
    return {"pending": pending, "refinements": 1}


def finalize(
    state: State, runtime: Runtime[Context], *, search: Search, ranking: CatalogModels
) -> dict[str, Any]:
    """Recommend the best-scored attempt, its products searched in the catalog; with no
    candidate at all, the catalog's most purchased query."""
    ctx = run_context(runtime)
    best = _best(state.attempts)
    fit: float | None
    if best is not None:
        query, check, attempt = best
        source = (attempt.sources or ["model"])[0]
        fit = check.fit
    else:
        top = _profile(state).interest_graph.top("category", 1)
        popular = ranking.vocab.transitions.popular(1)
        query = top[0].name.lower() if top else (popular or state.popular_categories or [""])[0]
        source, fit = "fallback", None
    products = _cached_products(ranking, query, ctx.top_k)
    if products is None:
        products = search.search(query, k=ctx.top_k)
    return {"query": query or None, "products": products, "fit": fit, "source": source}
