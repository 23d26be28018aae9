"""The ``QueryDrafter`` protocol: chat prompts in, completions with their token ids out.

A drafter turns chat prompts (``[{"role": ..., "content": ...}, ...]``) into completions and
records the token ids exactly as generated: training (SFT, GRPO) needs them, and re-tokenizing the
decoded text does not round-trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agent.records import Generation

__all__ = ["DrafterError", "Messages", "QueryDrafter"]

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
