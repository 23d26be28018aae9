"""A token prefix trie over the served catalog's queries, for constrained decoding.

Every completion the grounded drafter may write is ``ANSWER_PREFIX + query`` followed by the end
of the turn, tokenized exactly as the model sees it; the trie holds those token sequences, so a
decoder that only follows its edges writes a query of the catalog by construction (on any
catalog, without retraining). A path's end allows the end-of-turn token and nothing else.

Built per (tokenizer, vocabulary): ``QueryTrie.build(tokenizer, queries)``; its ``key`` (a digest
of the queries and the tokenizer) says when a catalog change needs a rebuild.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["ANSWER_PREFIX", "QueryTrie", "tries_per_prompt"]

# The answer format of the draft prompt (see agent.prompts): one line "Query: <words>".
ANSWER_PREFIX = "Query: "


class QueryTrie:
    """Token-id prefix trie; ``allowed(prefix)`` lists the tokens that may follow ``prefix``."""

    def __init__(self, sequences: dict[str, list[int]], eos_id: int, key: str) -> None:
        self.eos_id = eos_id
        self.key = key
        self.sequences = sequences  # query -> completion token ids (ending with eos_id)
        self._children: dict[tuple[int, ...], set[int]] = {}
        self._query_of: dict[tuple[int, ...], str] = {}
        for query, ids in list(sequences.items()):
            if tuple(ids) in self._query_of:
                # Two queries the tokenizer cannot tell apart (unknown-word tokens): the first
                # one keeps the path.
                del sequences[query]
                continue
            for n in range(len(ids)):
                self._children.setdefault(tuple(ids[:n]), set()).add(ids[n])
            self._query_of[tuple(ids)] = query
        self._sorted: dict[tuple[int, ...], list[int]] = {
            k: sorted(v) for k, v in self._children.items()
        }
        # Queries under each node (a node = a token prefix; a whole path counts itself once).
        self._under: dict[tuple[int, ...], int] = {}
        for path in self._query_of:
            for n in range(1, len(path) + 1):
                self._under[path[:n]] = self._under.get(path[:n], 0) + 1

    @classmethod
    def build(cls, tokenizer: Any, queries: Iterable[str], eos_id: int | None = None) -> QueryTrie:
        """Tokenize ``ANSWER_PREFIX + query`` for each query and add the end-of-turn token."""
        eos = tokenizer.eos_token_id if eos_id is None else eos_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token to end a constrained query with")
        qs = sorted(set(queries))
        sequences = {
            q: list(tokenizer.encode(ANSWER_PREFIX + q, add_special_tokens=False)) + [int(eos)]
            for q in qs
        }
        digest = hashlib.sha256()
        digest.update(str(getattr(tokenizer, "name_or_path", "")).encode())
        digest.update(str(len(tokenizer)).encode())
        for q in qs:
            digest.update(q.encode() + b"\0")
        return cls(sequences, int(eos), digest.hexdigest()[:16])

    def __len__(self) -> int:
        return len(self.sequences)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that extend ``prefix`` along some query; after a complete query (its eos
        written) or off the trie, only eos (so a finished beam stays finished)."""
        return self._sorted.get(tuple(prefix), [self.eos_id])

    def choices(self, ids: Sequence[int]) -> list[int]:
        """For each token of a completion written inside this trie: 1 where the trie left a
        choice (two or more tokens allowed), 0 where it forced the token (the answer prefix, the
        rest of a word only one query continues). A forced token carries no decision of the
        model, whatever probability it gives it."""
        ids = list(ids)
        return [int(len(self.allowed(ids[:n])) > 1) for n in range(len(ids))]

    def without(self, queries: Iterable[str]) -> QueryTrie:
        """A view of this trie in which ``queries`` cannot be written (a refinement's beams then
        spend no width on candidates already tried). Edges whose every query is excluded go;
        the view shares this trie's tables, so it costs the excluded paths' lengths."""
        excluded = set(queries) & self.sequences.keys()
        if not excluded:
            return self
        gone: dict[tuple[int, ...], int] = {}
        for query in excluded:
            ids = self.sequences[query]
            for n in range(1, len(ids) + 1):
                gone[tuple(ids[:n])] = gone.get(tuple(ids[:n]), 0) + 1
        view = object.__new__(QueryTrie)
        view.__dict__.update(self.__dict__)
        view.sequences = {q: ids for q, ids in self.sequences.items() if q not in excluded}
        view._sorted = _Pruned(self._sorted, self._under, gone)  # type: ignore[assignment]
        return view

    def query(self, ids: Sequence[int]) -> str | None:
        """The query whose completion is ``ids`` (eos included or not), else None."""
        ids = list(ids)
        if not ids or ids[-1] != self.eos_id:
            ids = ids + [self.eos_id]
        return self._query_of.get(tuple(ids))

    def completion_ids(self, query: str) -> list[int] | None:
        return self.sequences.get(query)


def tries_per_prompt(trie: QueryTrie | Sequence[QueryTrie], prompts: int) -> list[QueryTrie]:
    """``GroundedDrafter.beams``' trie argument as one trie per prompt (one trie for all, or
    already one each)."""
    return [trie] * prompts if isinstance(trie, QueryTrie) else list(trie)


class _Pruned(dict[tuple[int, ...], list[int]]):
    """``QueryTrie._sorted`` without the edges whose queries are all excluded (computed per
    prefix on first use)."""

    def __init__(
        self,
        children: dict[tuple[int, ...], list[int]],
        under: dict[tuple[int, ...], int],
        gone: dict[tuple[int, ...], int],
    ) -> None:
        super().__init__()
        self._children, self._under, self._gone = children, under, gone

    def get(self, prefix: tuple[int, ...], default: Any = None) -> Any:
        if prefix in self:
            return self[prefix]
        children = self._children.get(prefix)
        if children is None:
            return default
        if prefix in self._gone:
            children = [
                t
                for t in children
                if self._gone.get((*prefix, t), 0) < self._under.get((*prefix, t), 0)
            ]
        self[prefix] = children
        return children if children else default
