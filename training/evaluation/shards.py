"""Which of the split's users a process runs: a shard of them (``--shard-id``/``--shard-num``,
as pyserini's split a corpus), or only those every method has cached (``--cached-only``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from memory_store import Example
from training.evaluation.specs import EvalError

Pairs = list[tuple[Example, str]]  # (example, ground-truth query)


def shard(pairs: Sequence[tuple[Example, str]], shard_id: int, shard_num: int) -> Pairs:
    """Every ``shard_num``-th user from ``shard_id`` on, so that processes (or machines) given
    ``0 .. shard_num - 1`` split the users between them. The shards share the cache: each
    appends whole lines, and a run without shards (or ``--cached-only``) reports them together."""
    if not 0 <= shard_id < shard_num:
        raise EvalError(f"shard {shard_id} of {shard_num}: expected 0 <= id < num")
    return list(pairs[shard_id::shard_num])


def cached_by_all(
    pairs: Sequence[tuple[Example, str]],
    cached: Iterable[tuple[str, set[str]]],
    cache_dir: Path,
) -> Pairs:
    """The users every method has cached (``cached``: each method's label and cached user ids,
    in the order the methods were named); raises EvalError at the first method without any, or
    when none is shared."""
    common: set[str] | None = None
    for label, users in cached:
        if not users:
            raise EvalError(f"{label}: no cached users under this configuration in {cache_dir}")
        common = users if common is None else common & users
    kept = [(ex, truth) for ex, truth in pairs if ex.user_id in (common or set())]
    if not kept:
        raise EvalError(f"the methods' caches in {cache_dir} share no user")
    return kept
