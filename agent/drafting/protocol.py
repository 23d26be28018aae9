"""The drafting protocols: chat prompts in, completions with their token ids out.

A drafter turns chat prompts (``[{"role": ..., "content": ...}, ...]``) into completions and
records the token ids exactly as generated: training (SFT, GRPO) needs them, and re-tokenizing the
decoded text does not round-trip.

- ``QueryDrafter``: free generation, one completion per prompt;
- ``GroundedDrafter``: beams constrained to the catalog's query trie (``Beam``), and the score of
  given completions (``agent.drafting.constrained`` implements it on a Hugging Face model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agent.drafting.trie import QueryTrie
from agent.records import Generation

__all__ = ["Beam", "DrafterError", "GroundedDrafter", "Messages", "QueryDrafter"]

Messages = list[dict[str, str]]


class DrafterError(RuntimeError):
    """The drafter cannot be loaded (missing package, bad model path or id)."""


@runtime_checkable
class QueryDrafter(Protocol):
    """Generates one completion per chat prompt. Implementations must be thread-safe."""

    name: str

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        """One ``Generation`` per prompt, in order. ``temperature == 0`` means greedy decoding;
        generation of a prompt ends after the first of the ``stop`` strings it writes."""
        ...


@dataclass(frozen=True)
class Beam:
    """One constrained completion: the query, its log-probability and its token ids."""

    query: str
    logprob: float
    completion_token_ids: tuple[int, ...]
    prompt_token_ids: tuple[int, ...] = ()


@runtime_checkable
class GroundedDrafter(Protocol):
    """What grounded drafting needs from a model. Implementations must be thread-safe."""

    name: str

    def beams(
        self,
        prompts: Sequence[Messages],
        trie: QueryTrie | Sequence[QueryTrie],
        n: int,
        temperature: float = 0.0,
    ) -> list[list[Beam]]:
        """Up to ``n`` distinct trie queries per prompt, best first (beam search; sampled inside
        the trie when ``temperature > 0``); one trie for all prompts or one per prompt."""
        ...

    def score(
        self, prompts: Sequence[Messages], completions: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[float]]:
        """Log-probability of each completion (token ids) after its prompt."""
        ...

    def trie(self, queries: Sequence[str]) -> QueryTrie:
        """The query trie of ``queries`` for this drafter's tokenizer."""
        ...
