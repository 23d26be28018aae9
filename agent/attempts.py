"""The language model's part in the nodes: its candidates as attempts, and its scores.

``draft_query`` and ``refine_query`` (``agent.nodes``) ask the model for candidates: one free
completion, parsed into a query (``free_attempt``), or constrained beams over the catalog's
query trie (``beam_attempts``), each recorded as a ``QueryAttempt``. The check asks it for its
log-probability of every candidate (``model_logprobs``). A completion that is not a query is
recorded in its attempt, not raised.
"""

from __future__ import annotations

from typing import Any

from agent.context import Context
from agent.drafting.protocol import GroundedDrafter
from agent.drafting.trie import QueryTrie
from agent.parsing import parse_query
from agent.prompts import STOP
from agent.ranking.fit import CatalogModels
from agent.records import QueryAttempt

__all__ = [
    "beam_attempts",
    "catalog_trie",
    "complete",
    "free_attempt",
    "grounded_drafter",
    "model_logprobs",
]


def complete(drafter: Any, messages: list[dict[str, str]], ctx: Context) -> tuple[Any, Any]:
    """One free completion of ``messages`` with ``Context``'s sampling settings, and its parse
    (``agent.parsing.parse_query``): the drafted query's and the written text's model call."""
    gen = drafter.generate(
        [messages],
        max_new_tokens=ctx.max_new_tokens,
        temperature=ctx.temperature,
        top_p=ctx.top_p,
        seed=ctx.seed,
        stop=STOP,
    )[0]
    return gen, parse_query(gen.text)


def free_attempt(
    drafter: Any, turn: int, kind: str, messages: list[dict[str, str]], ctx: Context
) -> QueryAttempt:
    """One free completion of ``messages`` (``Context``'s sampling settings), parsed."""
    gen, parsed = complete(drafter, messages, ctx)
    return QueryAttempt(
        turn=turn,
        kind=kind,  # type: ignore[arg-type]
        sources=["model"],
        messages=messages,
        completion=gen.text,
        prompt_token_ids=list(gen.prompt_token_ids),
        completion_token_ids=list(gen.completion_token_ids),
        query=parsed.query,
        error=parsed.error,
    )


def beam_attempts(
    drafter: GroundedDrafter,
    trie: QueryTrie,
    turn: int,
    kind: str,
    messages: list[dict[str, str]],
    n: int,
    exclude: set[str],
    temperature: float = 0.0,
) -> list[QueryAttempt]:
    # The beams run over the trie without the queries already tried, so all ``n`` of them are
    # new candidates (extra beams to make room for tried ones would cost decoding width).
    beams = drafter.beams([messages], trie.without(exclude), n, temperature)[0]
    out = []
    for beam in beams:
        if beam.query in exclude:
            continue
        out.append(
            QueryAttempt(
                turn=turn,
                kind=kind,  # type: ignore[arg-type]
                sources=["model"],
                messages=messages,
                completion=f"Query: {beam.query}",
                prompt_token_ids=list(beam.prompt_token_ids),
                completion_token_ids=list(beam.completion_token_ids),
                query=beam.query,
                logprob=beam.logprob,
            )
        )
        if len(out) >= n:
            break
    return out


def grounded_drafter(drafter: Any, models: CatalogModels, ctx: Context) -> GroundedDrafter | None:
    """The drafter as a grounded drafter when grounded decoding applies, else None."""
    if not ctx.grounded or not models.vocab.queries or not isinstance(drafter, GroundedDrafter):
        return None
    return drafter


def catalog_trie(drafter: GroundedDrafter, models: CatalogModels) -> QueryTrie:
    """The trie of the catalog's queries for the drafter's tokenizer."""
    return drafter.trie(models.vocab.queries)


def model_logprobs(
    grounded: GroundedDrafter, trie: QueryTrie, messages: list[dict[str, str]], queries: list[str]
) -> list[float]:
    """The model's log-probability of answering each query after ``messages``, in one call; a
    query the trie could not keep (two queries with one tokenization) gets the lowest."""
    known = [q for q in queries if q in trie.sequences]
    scored = grounded.score([messages], [[trie.sequences[q] for q in known]])[0] if known else []
    by_query = dict(zip(known, scored, strict=True))
    floor = min(by_query.values(), default=0.0)
    return [float(by_query.get(q, floor)) for q in queries]
