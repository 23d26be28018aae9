"""The QueryAgent-R1 LangGraph state machine.

    recall_memory -> draft_query -> recall_candidates -> retrieve_products -> check_consistency
        -> (refine_query -> retrieve_products -> check_consistency)* -> finalize
        -> write_query -> check_text -> (rewrite_query -> check_text)* -> choose_text

``finalize`` recommends the intent (the catalog query the check picked); the last four nodes
(``agent.writing``) write the query text the shopper sees and check what it retrieves.

``build_graph(deps)`` returns the uncompiled builder (tests compile it with their own store,
checkpointer and fakes). ``graph`` is the module-level compiled graph that ``langgraph.json``
points at for ``langgraph dev`` / Studio; it is compiled without a checkpointer or store (the
server supplies them; see ``graphs/studio.py`` for the store that shares the CLI's memory).
Importing this module loads no model: the default drafter and catalog open on first use.

    langgraph dev --port 8123 --no-browser     # then open Studio (see README)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast

from langgraph.graph import END, START, StateGraph

from agent import nodes, writing
from agent.catalog import Catalog, ChromaCatalog
from agent.context import Context
from agent.drafting import DrafterError, HFDrafter, QueryDrafter
from agent.drafting.batching import micro_batched
from agent.drafting.constrained import GroundedDrafter, GroundedHFDrafter
from agent.ranking import load_served
from agent.ranking.fit import CatalogModels
from agent.search import Search, search_of
from agent.state import InputState, OutputState, State

T = TypeVar("T")


@dataclass
class Deps:
    """What the nodes need besides the state and the store.

    ``drafter`` is a ``GroundedDrafter`` for constrained drafting (a plain ``QueryDrafter``
    drafts freely; ``None`` runs recall and the check alone, the ``ranker`` ablation);
    ``ranking`` the catalog's fitted models (``agent.ranking``: ``CatalogModels``, the type the
    nodes take; there is no narrower protocol of it); ``search`` the store's search the
    products come from (``agent.search``; ``None``: the one the ranking models were fitted
    with and name, ``served_search``).
    """

    drafter: GroundedDrafter | QueryDrafter | None
    catalog: Catalog
    ranking: CatalogModels
    search: Search | None = None


def build_graph(deps: Deps) -> StateGraph[Any, Context, Any, Any]:
    """The agent's graph, uncompiled."""
    builder = StateGraph(
        State, input_schema=InputState, output_schema=OutputState, context_schema=Context
    )
    d, r = deps.drafter, deps.ranking
    # Without a search given: the one the ranking models were fitted with, resolved on first use
    # (Studio's graph is built at import, before any model or catalog opens).
    c: Search = (
        deps.search
        if deps.search is not None
        else _lazy(lambda: served_search(deps.catalog, deps.ranking))
    )
    builder.add_node("recall_memory", nodes.recall_memory)
    builder.add_node("draft_query", partial(nodes.draft_query, drafter=d, ranking=r))
    builder.add_node("recall_candidates", partial(nodes.recall_candidates, ranking=r))
    builder.add_node("retrieve_products", partial(nodes.retrieve_products, search=c, ranking=r))
    builder.add_node("check_consistency", partial(nodes.check_consistency, ranking=r, drafter=d))
    builder.add_node("refine_query", partial(nodes.refine_query, drafter=d, ranking=r))
    builder.add_node("finalize", partial(nodes.finalize, search=c, ranking=r))
    builder.add_node("write_query", partial(writing.write_query, drafter=d, ranking=r))
    builder.add_node("check_text", partial(writing.check_text, search=c, ranking=r))
    builder.add_node("rewrite_query", partial(writing.rewrite_query, drafter=d, ranking=r))
    builder.add_node("choose_text", writing.choose_text)
    builder.add_edge(START, "recall_memory")
    builder.add_edge("recall_memory", "draft_query")
    builder.add_edge("draft_query", "recall_candidates")
    builder.add_edge("recall_candidates", "retrieve_products")
    builder.add_edge("retrieve_products", "check_consistency")
    builder.add_conditional_edges("check_consistency", nodes.route_after_check)
    builder.add_edge("refine_query", "retrieve_products")
    builder.add_edge("finalize", "write_query")
    builder.add_edge("write_query", "check_text")
    builder.add_conditional_edges("check_text", writing.route_after_text_check)
    builder.add_edge("rewrite_query", "check_text")
    builder.add_edge("choose_text", END)
    return builder


class _Lazy(Generic[T]):
    """Builds the real object on first attribute access, so importing this module stays fast."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._obj: T | None = None
        self._lock = threading.Lock()

    def _get(self) -> T:
        with self._lock:
            if self._obj is None:
                self._obj = self._factory()
            return self._obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def _lazy(factory: Callable[[], T]) -> T:
    """A ``_Lazy`` typed as what it stands for: every attribute access reaches the real object."""
    return cast(T, _Lazy(factory))


def served_search(catalog: Catalog, ranking: CatalogModels) -> Search:
    """The search ``ranking`` was fitted with (``queryagent ingest --search``), as its meta names
    it; models that name none (fitted before the fused search, or fakes) used the dense one."""
    return search_of(getattr(ranking, "meta", {}), getattr(ranking, "folder", None), catalog)


def default_deps(
    model: str | None = None,
    home: str | None = None,
    *,
    drafter: GroundedDrafter | QueryDrafter | None = None,
) -> Deps:
    """The real drafter (``model`` resolved by ``agent.drafting.resolve_model``: ``None`` is
    ``$QUERYAGENT_MODEL``, else the shipped trained adapter; or the ``drafter`` given), the
    Chroma catalog in the QueryAgent home (or the server named by ``$QUERYAGENT_CHROMA_HOST``),
    its fitted models and its search.

    The drafter is behind the micro-batcher (``agent.drafting.batching.micro_batched``; a given
    one too, unless it already is), so the concurrent runs of ``graph.batch`` share model
    calls; one run at a time is served at once, without the batching window."""
    # Lazy: the model loads on the first call, the catalog, its models and search on first use.
    if drafter is None:
        drafter = GroundedHFDrafter(HFDrafter(model, home=home))
    if not isinstance(drafter, _UnavailableDrafter):  # its every attribute raises: kept bare
        # Eager: ``graph.invoke`` (one shopper) is served at once, never waiting the window.
        drafter = micro_batched(drafter, eager=True)
    catalog: Catalog = _lazy(lambda: ChromaCatalog.from_env(home=home))
    ranking: CatalogModels = _lazy(lambda: load_served(home))
    search: Search = _lazy(lambda: served_search(catalog, ranking))
    return Deps(drafter=drafter, catalog=catalog, ranking=ranking, search=search)


class _UnavailableDrafter:
    """Stands in for a drafter that $QUERYAGENT_MODEL / $QUERYAGENT_DTYPE name but that cannot be
    built: every command imports this module (for ``graph``), so the error is raised when the
    Studio graph first uses its drafter, and the CLI's own checks report it in one line, instead
    of a traceback at import time."""

    def __init__(self, error: DrafterError) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise self._error


def _studio_deps() -> Deps:
    try:
        return default_deps()
    except DrafterError as exc:
        return default_deps(drafter=cast(GroundedDrafter, _UnavailableDrafter(exc)))


graph = build_graph(_studio_deps()).compile(name="QueryAgent")
