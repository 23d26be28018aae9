"""``PrefixCache``: attention keys/values of recent prompt prefixes, reused across ``generate``."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

__all__ = ["PrefixCache", "RowPrefixes"]


def _longest_prefix(kept: Iterable[tuple[int, ...]], ids: list[int]) -> tuple[int, ...] | None:
    """The longest of ``kept`` that ``ids`` starts with and is longer than, or None."""
    best: tuple[int, ...] | None = None
    for key in kept:
        if len(key) < len(ids) and (best is None or len(key) > len(best)):
            if tuple(ids[: len(key)]) == key:
                best = key
    return best


def _nbytes(layers: list[tuple[Any, Any]]) -> int:
    return sum(k.nbytes + v.nbytes for k, v in layers)


class PrefixCache:
    """Attention keys/values of recent prompt prefixes, for prompts generated one at a time.

    Consecutive prompts share long prefixes: every draft prompt starts with the same system
    prompt and worked turns, and a refinement prompt starts with its own draft prompt. After a
    call, the prompt itself and its longest common prefix with the previous prompt are kept
    (least recently used first out); a later prompt that starts with a kept prefix only runs
    the model over the rest. This is transformers' documented prefix-reuse pattern (a copy of a
    ``DynamicCache`` handed to ``generate``); written here because transformers keeps no
    such cache across ``generate`` calls itself. Batches are left-padded, so their rows do not
    share positions and they are generated without it.
    """

    def __init__(self, size: int = 4, min_tokens: int = 32) -> None:
        self.size = size
        self.min_tokens = min_tokens
        self._kept: dict[tuple[int, ...], Any] = {}  # insertion order = least recent first
        self._previous: list[int] | None = None
        self.hits = 0
        self.reused_tokens = 0

    def lookup(self, ids: list[int]) -> Any:
        """A private copy of the longest kept prefix of ``ids`` (shorter than ``ids``), or None."""

        best = _longest_prefix(self._kept, ids)
        if best is None:
            return None
        cache = self._kept.pop(best)
        self._kept[best] = cache  # most recently used
        self.hits += 1
        self.reused_tokens += len(best)
        return copy.deepcopy(cache)  # generate() appends to the cache it is given

    def remember(self, ids: list[int], cache: Any) -> None:
        """Keep ``ids``' own prefix and its common prefix with the previous prompt; ``cache``
        (the one ``generate`` returned for ``ids``) is taken over, not copied."""

        # Some caches cannot be cut back (recurrent or sliding-window layers): keep nothing then.
        if cache is None or not hasattr(cache, "crop") or not getattr(cache, "is_croppable", True):
            return
        previous, self._previous = self._previous, ids
        lengths = {len(ids)}
        if previous is not None:
            common = next(
                (i for i, (a, b) in enumerate(zip(previous, ids, strict=False)) if a != b),
                min(len(previous), len(ids)),
            )
            lengths.add(common)
        # The caller is done with ``cache`` (generate() returned it), so the longest new prefix
        # keeps it itself; only a shorter one needs a copy. Shorter prefixes are kept first, as
        # the least recently used of the two.
        new: dict[int, Any] = {}
        for n in sorted(lengths, reverse=True):
            if n < self.min_tokens or tuple(ids[:n]) in self._kept:
                continue
            kept = copy.deepcopy(cache) if new else cache
            extra = kept.get_seq_length() - n
            if extra > 0:
                kept.crop(-extra)  # a negative count removes that many trailing positions
            new[n] = kept
        for n in sorted(new):
            self._kept[tuple(ids[:n])] = new[n]
        while len(self._kept) > self.size:
            self._kept.pop(next(iter(self._kept)))


class RowPrefixes:
    """Attention keys/values of single prompts of a batch, for later prompts that extend them.

    A grounded refinement prompt is its draft prompt (or the previous refinement's) followed by
    the model's reply and the check's feedback; the prefill of the prompt it extends is most of
    its cost on a CPU (a batch of 16 refinement prompts: 3.7 s of prefill in 6.7 s). After a
    batch's prefill, each row's keys/values (its real tokens only, no padding) are kept under
    its token ids; a later prompt that starts with kept ids reuses them and only its new tokens
    are run (every refinement of a shopper extends the same draft prompt, so a row stays kept
    after use). Rows are evicted least recently used first beyond ``max_bytes``. Unlike
    ``PrefixCache`` this works across batches with different padding: a row's keys/values are
    position-correct whatever padding its batch had, because positions come from the attention
    mask, not from the column.
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._kept: dict[tuple[int, ...], list[tuple[Any, Any]]] = {}
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(layers) for layers in self._kept.values())

    def __contains__(self, ids: object) -> bool:
        """Whether exactly these ids are kept (a lookup that is not a reuse)."""
        return isinstance(ids, list | tuple) and tuple(ids) in self._kept

    def find(self, ids: list[int]) -> tuple[int, list[tuple[Any, Any]]] | None:
        """The longest kept prefix of ``ids`` shorter than ``ids``: its length and per-layer
        ``(keys, values)`` of shape ``[heads, length, head_dim]`` (read, not to be changed)."""
        best = _longest_prefix(self._kept, ids)
        if best is None:
            return None
        layers = self._kept[best] = self._kept.pop(best)  # most recently used
        self.hits += 1
        self.reused_tokens += len(best)
        return len(best), layers

    def keep(self, ids: list[int], layers: list[tuple[Any, Any]]) -> None:
        """Keep one prompt's per-layer ``(keys, values)`` (``[heads, len(ids), head_dim]``)."""
        key = tuple(ids)
        if _nbytes(layers) > self.max_bytes:
            return
        self._kept.pop(key, None)
        self._kept[key] = layers
        total = self.nbytes
        while total > self.max_bytes:
            total -= _nbytes(self._kept.pop(next(iter(self._kept))))
