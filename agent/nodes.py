"""The query agent's nodes: recall_memory -> draft_query -> retrieve_products -> check_consistency
-> (refine_query -> retrieve_products -> check_consistency)* -> finalize.

Each node is ``(state, runtime)`` plus the dependency it needs (drafter or catalog) as a keyword
argument that ``graphs.query_agent.build_graph`` binds. Memory is read through ``runtime.store``.
A model mistake (a completion that is not a query) is recorded in the attempt and routed to
refinement; only infrastructure failures raise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from langgraph.runtime import Runtime

from agent.catalog import Catalog
from agent.consistency import score_products
from agent.context import Context
from agent.drafting import QueryDrafter
from agent.parsing import parse_query
from agent.prompts import STOP, draft_messages, refine_messages
from agent.records import ConsistencyReport, QueryAttempt, RetrievedProduct
from agent.state import State
from memory_store import UnknownUserError, UserMemory, UserProfile

CATALOG_NAMESPACE = ("queryagent", "catalog")
CATALOG_STATS_KEY = "stats"


def _memory(runtime: Runtime[Context]) -> UserMemory:
    if runtime.store is None:
        raise RuntimeError("the query agent needs a store: compile the graph with store=...")
    return UserMemory(runtime.store)


def _context(runtime: Runtime[Context]) -> Context:
    return runtime.context if isinstance(runtime.context, Context) else Context()


def recall_memory(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Fetch_Memory: the shopper's cached profile (built from events before ``state.before``)."""
    memory = _memory(runtime)
    if not memory.known(state.user_id):
        raise UnknownUserError(state.user_id)
    profile = memory.profile(state.user_id, before=state.before)
    update: dict[str, Any] = {"profile": profile.model_dump(mode="json")}
    if profile.n_events == 0:
        item = runtime.store.get(CATALOG_NAMESPACE, CATALOG_STATS_KEY)  # type: ignore[union-attr]
        update["popular_categories"] = list(
            (item.value if item else {}).get("popular_categories", [])
        )
    return update


def _generate(
    drafter: QueryDrafter, messages: list[dict[str, str]], ctx: Context
) -> tuple[str, list[int], list[int]]:
    gen = drafter.generate(
        [messages],
        max_new_tokens=ctx.max_new_tokens,
        temperature=ctx.temperature,
        top_p=ctx.top_p,
        seed=ctx.seed,
        stop=STOP,
    )[0]
    return gen.text, list(gen.prompt_token_ids), list(gen.completion_token_ids)


def _attempt(
    turn: int, kind: str, messages: list[dict[str, str]], gen: tuple[str, list[int], list[int]]
) -> dict[str, Any]:
    text, prompt_ids, completion_ids = gen
    parsed = parse_query(text)
    return QueryAttempt(
        turn=turn,
        kind=kind,  # type: ignore[arg-type]
        messages=messages,
        completion=text,
        prompt_token_ids=prompt_ids,
        completion_token_ids=completion_ids,
        query=parsed.query,
        error=parsed.error,
    ).model_dump(mode="json")


def draft_query(
    state: State, runtime: Runtime[Context], *, drafter: QueryDrafter
) -> dict[str, Any]:
    """Draft a first query from the shopper's memory."""
    profile = UserProfile.model_validate(state.profile)
    messages = draft_messages(profile, state.popular_categories)
    return {
        "current": _attempt(0, "draft", messages, _generate(drafter, messages, _context(runtime)))
    }


def retrieve_products(
    state: State, runtime: Runtime[Context], *, catalog: Catalog
) -> dict[str, Any]:
    """Search the catalog with the current query (nothing to search when it did not parse)."""
    current = dict(state.current or {})
    query = current.get("query")
    products = catalog.search(query, k=_context(runtime).top_k) if query else []
    current["products"] = [p.model_dump(mode="json") for p in products]
    return {"current": current}


def check_consistency(
    state: State, runtime: Runtime[Context], *, catalog: Catalog
) -> dict[str, Any]:
    """Score the retrieved products against the profile and close the attempt."""
    ctx = _context(runtime)
    current = dict(state.current or {})
    profile = UserProfile.model_validate(state.profile)
    products = [RetrievedProduct.model_validate(p) for p in current.get("products", [])][
        : ctx.check_k
    ]
    if current.get("query") is None:
        report = ConsistencyReport(score=0.0, feedback=f"Not a query: {current.get('error')}.")
    elif profile.n_events == 0:
        # Cold start: nothing to check against, so the draft is accepted as it is.
        report = ConsistencyReport(score=0.0, feedback="New shopper: no history to check against.")
    else:
        ids = [p.item_id for p in products] + [i.item_id for i in profile.latest_intent]
        report = score_products(
            products, profile, embeddings=catalog.embeddings(ids), fit_threshold=ctx.fit_threshold
        )
    current["consistency"] = report.model_dump(mode="json")
    return {"attempts": [current], "current": None}


def route_after_check(
    state: State, runtime: Runtime[Context]
) -> Literal["refine_query", "finalize"]:
    """Refine while the products do not fit and the refinement budget lasts."""
    ctx = _context(runtime)
    last = state.attempts[-1]
    profile_events = (state.profile or {}).get("n_events", 0)
    fits = last.get("query") is not None and last["consistency"]["score"] >= ctx.fit_threshold
    if fits or profile_events == 0 and last.get("query") is not None:
        return "finalize"
    if state.refinements >= ctx.max_refinements:
        return "finalize"
    return "refine_query"


def refine_query(
    state: State, runtime: Runtime[Context], *, drafter: QueryDrafter
) -> dict[str, Any]:
    """Write a better query, seeing what the last one retrieved and what did not fit."""
    last = state.attempts[-1]
    report = (
        ConsistencyReport.model_validate(last["consistency"]) if last.get("consistency") else None
    )
    messages = refine_messages(
        last["messages"],
        last["completion"],
        last.get("query"),
        [RetrievedProduct.model_validate(p) for p in last.get("products", [])],
        report,
    )
    ctx = _context(runtime)
    if ctx.refine_temperature is not None:
        ctx = replace(ctx, temperature=ctx.refine_temperature)
    attempt = _attempt(state.refinements + 1, "refine", messages, _generate(drafter, messages, ctx))
    return {"current": attempt, "refinements": 1}


def finalize(state: State, runtime: Runtime[Context], *, catalog: Catalog) -> dict[str, Any]:
    """Recommend the best-fitting parsed query; else fall back to the strongest interest."""
    valid = [a for a in state.attempts if a.get("query")]
    if valid:
        # Highest consistency wins; on a tie the later (more refined) attempt.
        best = max(enumerate(valid), key=lambda ia: (ia[1]["consistency"]["score"], ia[0]))[1]
        return {
            "query": best["query"],
            "products": best["products"],
            "consistency": best["consistency"]["score"],
            "source": "model",
        }
    profile = UserProfile.model_validate(state.profile)
    top = profile.interest_graph.top("category", 1)
    query = top[0].name.lower() if top else (state.popular_categories or [""])[0]
    products = catalog.search(query, k=_context(runtime).top_k) if query else []
    return {
        "query": query or None,
        "products": [p.model_dump(mode="json") for p in products],
        "consistency": None,
        "source": "fallback",
    }
