"""Behaviour events: what a shopper did, the raw material the memory compresses into a profile.

Each event carries a snapshot of the item (title, category, brand) so that the memory and the
profile never need the catalog: a profile can be rebuilt from the stored events alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memory_store.products import Product

__all__ = ["BehaviorEvent", "EventKind", "events_digest", "events_from_sequence"]

EventKind = Literal["purchase", "click", "search"]


class BehaviorEvent(BaseModel):
    """One behaviour of one user.

    ``seq`` is the event's 0-based position in the user's history: events ``0 .. n-1`` are the
    user's first ``n`` behaviours, oldest first. The bundled Amazon set only has reviews (a
    purchase proxy) and no timestamps, so ``kind`` is ``"purchase"`` and ``timestamp`` is ``None``.
    """

    model_config = ConfigDict(frozen=True)

    user_id: str
    seq: int = Field(ge=0)
    item_id: str
    kind: EventKind = "purchase"
    title: str = ""
    category: str = ""
    brand: str = ""
    timestamp: float | None = None  # seconds since the Unix epoch, when known


def events_from_sequence(
    user_id: str,
    item_ids: Sequence[str],
    products: Mapping[str, Product],
    *,
    kind: EventKind = "purchase",
) -> list[BehaviorEvent]:
    """Purchase events (``seq`` 0, 1, ...) for a chronological item-id sequence.

    Raises:
        KeyError: an item id that is not in ``products``.
    """
    events = []
    for seq, item_id in enumerate(item_ids):
        product = products.get(item_id)
        if product is None:
            raise KeyError(
                f"item {item_id!r} (position {seq} of user {user_id!r}) is not in the catalog"
            )
        events.append(
            BehaviorEvent(
                user_id=user_id,
                seq=seq,
                item_id=item_id,
                kind=kind,
                title=product.title,
                category=product.category,
                brand=product.brand,
            )
        )
    return events


def events_digest(events: Iterable[BehaviorEvent]) -> str:
    """A short digest of a history's item ids and kinds, in order.

    A logged run keeps the digest of the events its memory held; when the shopper's first ``n``
    events later digest differently, the memory was rebuilt or rewritten in between and what came
    "after" the run cannot be told from position (``training.outcomes``).
    """
    digest = hashlib.sha256()
    for event in events:
        digest.update(f"{event.kind}\0{event.item_id}\0".encode())
    return digest.hexdigest()[:16]
