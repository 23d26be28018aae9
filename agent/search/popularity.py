"""The popularity prior: purchases per product, counted only from events before a cutoff.

A store's search puts the products people buy first among equally good matches. The evaluation
must not let the prior see what it predicts, so counts come only from events before the evaluated
split's targets: from the sequences cut before them (``graphs.offline.runner.fit_sequences``), or
from timestamped events before a cutoff time. The prior is ``log(1 + purchases)`` divided by its
catalog maximum, in [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from memory_store.events import BehaviorEvent

__all__ = ["Popularity"]


@dataclass(frozen=True)
class Popularity:
    """Purchases per item id (items never bought are absent)."""

    counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]]) -> Popularity:
        """Every item of every sequence is one purchase (the sequences are already cut)."""
        return cls(dict(Counter(item for seq in sequences for item in seq)))

    @classmethod
    def from_events(
        cls, events: Iterable[BehaviorEvent], *, cutoff: float | None = None
    ) -> Popularity:
        """Purchase events, only those with ``timestamp < cutoff`` when a cutoff is given.

        An event without a timestamp cannot be shown to precede the cutoff, so with a cutoff it
        is not counted (the prior must never see a target); without one every purchase counts.
        """
        return cls().with_events(events, cutoff=cutoff)

    def with_events(
        self, events: Iterable[BehaviorEvent], *, cutoff: float | None = None
    ) -> Popularity:
        """These counts plus the purchase events (same cutoff rule as ``from_events``)."""
        counts = Counter(self.counts)
        for event in events:
            if event.kind != "purchase":
                continue
            if cutoff is not None and (event.timestamp is None or event.timestamp >= cutoff):
                continue
            counts[event.item_id] += 1
        return Popularity(dict(counts))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def prior(self, item_ids: Sequence[str]) -> np.ndarray:
        """``log(1 + purchases)`` per item, divided by the largest over the catalog (float32,
        in [0, 1]; all zeros when nothing was bought)."""
        raw = np.asarray([math.log1p(self.counts.get(i, 0)) for i in item_ids], dtype=np.float32)
        top = float(raw.max(initial=0.0))
        return raw / top if top > 0 else raw
