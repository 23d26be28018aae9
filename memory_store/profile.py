"""The paper's memory abstraction: a shopper's raw behaviour compressed into a three-part profile.

- **latest intent**: the last few items (short-term intent);
- **interest graph**: category and brand nodes weighted by recency-discounted counts, with
  co-occurrence edges (long-term interests);
- **latent identity**: one deterministic sentence derived from the graph (who the shopper seems
  to be).

:func:`build_profile` is pure and leak-free: with ``before=t`` it reads only events with
``seq < t``, so a profile used to predict the item at position ``t`` never sees it or anything
later. ``UserProfile.to_text()`` is the compact rendering that goes into prompts;
:func:`raw_history_text` is the uncompressed history it is measured against (the paper reports
about 10x; on the bundled set, whose histories are short, see the README table).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memory_store.events import BehaviorEvent

__all__ = [
    "DEFAULT_DECAY",
    "ROOT_PREFIX",
    "IntentItem",
    "InterestEdge",
    "InterestGraph",
    "InterestNode",
    "UserProfile",
    "build_profile",
    "category_name",
    "node_key",
    "raw_history_text",
]

DEFAULT_DECAY = 0.8
# The root level every category of the bundled set starts with; it carries no information, so
# category node names drop it.
ROOT_PREFIX = "Industrial & Scientific "
LATEST_INTENT_SIZE = 3
MAX_NODES_PER_KIND = 8
MAX_EDGES = 10

NodeKind = Literal["category", "brand"]


def category_name(category: str, root_prefix: str = ROOT_PREFIX) -> str:
    """The interest-graph name of a category path: the path without ``root_prefix``.

    Use it to compare a product's ``category`` with the profile's category nodes.
    """
    category = category.strip()
    if root_prefix and category.startswith(root_prefix):
        return category[len(root_prefix) :].strip()
    return category


def node_key(kind: NodeKind, name: str) -> str:
    """The key of a node, used by edges: ``"category:<name>"`` or ``"brand:<name>"``."""
    return f"{kind}:{name}"


class IntentItem(BaseModel):
    """One recent item. ``category`` is the graph's name for it (see :func:`category_name`)."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    title: str
    category: str = ""
    brand: str = ""


class InterestNode(BaseModel):
    """A category or brand the shopper bought.

    ``weight`` is a recency-discounted purchase count: each occurrence adds ``decay ** age``,
    where ``age`` is how many events came after it (the latest event adds 1.0). ``count`` is the
    plain number of occurrences.
    """

    model_config = ConfigDict(frozen=True)

    kind: NodeKind
    name: str
    weight: float
    count: int

    @property
    def key(self) -> str:
        return node_key(self.kind, self.name)


class InterestEdge(BaseModel):
    """An undirected co-occurrence between two nodes (``source < target``, as node keys).

    Two nodes co-occur when they are the category and the brand of the same item, or the
    categories (or the brands) of two consecutive items; ``weight`` adds the later item's
    recency weight for each co-occurrence, in the same units as node weights.
    """

    model_config = ConfigDict(frozen=True)

    source: str
    target: str
    weight: float


class InterestGraph(BaseModel):
    """Nodes sorted by weight (highest first, at most 8 per kind) and the top 10 edges."""

    nodes: list[InterestNode] = Field(default_factory=list)
    edges: list[InterestEdge] = Field(default_factory=list)

    def top(self, kind: NodeKind, k: int | None = None) -> list[InterestNode]:
        """The nodes of one kind, heaviest first (the first ``k`` when given)."""
        nodes = [n for n in self.nodes if n.kind == kind]
        return nodes if k is None else nodes[:k]


class UserProfile(BaseModel):
    """A shopper's compressed memory: latest intent, interest graph, latent identity."""

    user_id: str
    n_events: int = Field(ge=0, description="how many events the profile was built from")
    latest_intent: list[IntentItem] = Field(
        default_factory=list, description="the last items, oldest first"
    )
    interest_graph: InterestGraph = Field(default_factory=InterestGraph)
    latent_identity: str = ""

    @property
    def is_cold_start(self) -> bool:
        return self.n_events == 0

    def to_text(self, *, max_title_chars: int = 48, max_nodes: int = 3) -> str:
        """The compact rendering used in prompts: at most four short lines.

        Titles are clipped (brands and categories have their own lines); category names are kept
        whole because they are the vocabulary the recommended query is judged on.
        """
        lines = [f"Identity: {self.latent_identity}"]
        if self.latest_intent:
            recent = " | ".join(_clip(it.title, max_title_chars) for it in self.latest_intent)
            lines.append(f"Latest intent (oldest first): {recent}")
        for kind, label in (("category", "Categories"), ("brand", "Brands")):
            nodes = self.interest_graph.top(kind, max_nodes)  # type: ignore[arg-type]
            if nodes:
                lines.append(f"{label}: " + " | ".join(f"{n.name} ({n.weight:.2f})" for n in nodes))
        return "\n".join(lines)

    def compression_ratio(self, raw_chars: int) -> float:
        """How many times shorter ``to_text()`` is than a raw history of ``raw_chars`` chars."""
        return raw_chars / max(1, len(self.to_text()))


def raw_history_text(events: Iterable[BehaviorEvent]) -> str:
    """The uncompressed history, one line per event (kind, title, category, brand), oldest first."""
    return "\n".join(
        f"{e.kind}: {e.title} | {e.category} | {e.brand}"
        for e in sorted(events, key=lambda e: e.seq)
    )


def build_profile(
    user_id: str,
    events: Iterable[BehaviorEvent],
    *,
    before: int | None = None,
    decay: float = DEFAULT_DECAY,
    root_prefix: str = ROOT_PREFIX,
) -> UserProfile:
    """Compress a user's events into a profile; pure and deterministic.

    Args:
        user_id: whose events these are.
        events: the user's events, in any order.
        before: when given, only events with ``seq < before`` are used (no leakage: the profile
            used to predict position ``t`` is built with ``before=t``).
        decay: recency decay per event, in (0, 1]; 1.0 counts every occurrence equally.
        root_prefix: the category root stripped from node names (see :func:`category_name`).

    Raises:
        ValueError: an event of another user, two events with the same ``seq``, or a bad decay.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    used = sorted((e for e in events if before is None or e.seq < before), key=lambda e: e.seq)
    for i, e in enumerate(used):
        if e.user_id != user_id:
            raise ValueError(f"event seq={e.seq} belongs to user {e.user_id!r}, not {user_id!r}")
        if i and used[i - 1].seq == e.seq:
            raise ValueError(f"two events of user {user_id!r} have seq={e.seq}")
    n = len(used)
    if n == 0:
        return UserProfile(user_id=user_id, n_events=0, latent_identity=_identity(None, Counter()))

    weights: dict[str, float] = {}
    counts: Counter[str] = Counter()
    edge_weights: dict[tuple[str, str], float] = {}
    previous: tuple[str | None, str | None] = (None, None)
    for i, e in enumerate(used):
        w = decay ** (n - 1 - i)
        cat = category_name(e.category, root_prefix)
        brand = e.brand.strip()
        cat_key = node_key("category", cat) if cat else None
        brand_key = node_key("brand", brand) if brand else None
        for key in (cat_key, brand_key):
            if key is not None:
                weights[key] = weights.get(key, 0.0) + w
                counts[key] += 1
        pairs = [(cat_key, brand_key), (previous[0], cat_key), (previous[1], brand_key)]
        for a, b in pairs:
            if a is not None and b is not None and a != b:
                edge = (min(a, b), max(a, b))
                edge_weights[edge] = edge_weights.get(edge, 0.0) + w
        previous = (cat_key, brand_key)

    nodes: list[InterestNode] = []
    for kind in ("category", "brand"):
        of_kind = [
            InterestNode(
                kind=kind,  # type: ignore[arg-type]
                name=key.split(":", 1)[1],
                weight=round(weights[key], 6),
                count=counts[key],
            )
            for key in weights
            if key.startswith(kind + ":")
        ]
        of_kind.sort(key=_node_order)
        nodes.extend(of_kind[:MAX_NODES_PER_KIND])
    nodes.sort(key=_node_order)
    kept = {node.key for node in nodes}
    edges = sorted(
        (
            InterestEdge(source=a, target=b, weight=round(w, 6))
            for (a, b), w in edge_weights.items()
            if a in kept and b in kept
        ),
        key=lambda edge: (-edge.weight, edge.source, edge.target),
    )[:MAX_EDGES]

    latest = [
        IntentItem(
            item_id=e.item_id,
            title=e.title,
            category=category_name(e.category, root_prefix),
            brand=e.brand.strip(),
        )
        for e in used[-LATEST_INTENT_SIZE:]
    ]
    graph = InterestGraph(nodes=nodes, edges=edges)
    distinct = Counter(key.split(":", 1)[0] for key in weights)  # before the top-8 cut
    return UserProfile(
        user_id=user_id,
        n_events=n,
        latest_intent=latest,
        interest_graph=graph,
        latent_identity=_identity(graph, Counter(e.kind for e in used), distinct),
    )


def _node_order(node: InterestNode) -> tuple[float, int, str, str]:
    return (-node.weight, -node.count, node.kind, node.name)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _short_category(name: str, words: int = 3) -> str:
    """The most specific end of a category path: its last ``words`` words ("&" not counted)."""
    tokens = name.split()
    taken: list[str] = []
    real = 0
    for token in reversed(tokens):
        if real == words:
            break
        taken.append(token)
        if token != "&":
            real += 1
    return " ".join(reversed(taken))


def _identity(
    graph: InterestGraph | None, kinds: Counter[str], distinct: Counter[str] | None = None
) -> str:
    """The latent identity: one sentence derived from the graph and the counts, deterministic.

    ``kinds`` counts the events by kind; ``distinct`` counts the distinct categories and brands.
    """
    n = kinds.total()
    distinct = distinct or Counter()
    if graph is None or n == 0:
        return "New shopper: no purchase history yet (cold start)."
    unit = "purchases" if kinds.get("purchase", 0) == n else "events"
    parts = []
    cats = graph.top("category")
    if not cats:
        parts.append("Buys uncategorised items")
    elif len(cats) == 1 or cats[0].count / n >= 0.6:
        parts.append(f"Buys mostly {_short_category(cats[0].name)}")
    else:
        parts.append(
            f"Buys mostly {_short_category(cats[0].name)} and {_short_category(cats[1].name)}"
        )
    if distinct["category"] >= 3:
        parts[-1] += f" (across {distinct['category']} categories)"
    brands = sorted(graph.top("brand"), key=lambda b: (-b.count, -b.weight, b.name))
    if brands and brands[0].count >= 2 and brands[0].count / n >= 0.3:
        parts.append(f"loyal to {brands[0].name} ({brands[0].count} of {n} {unit})")
    elif distinct["brand"] > 1:
        parts.append(f"no favourite brand ({distinct['brand']} brands)")
    if unit == "purchases":
        parts.append(_count(n, "purchase"))
    else:
        detail = ", ".join(_count(kinds[k], k) for k in ("purchase", "click", "search") if kinds[k])
        parts.append(f"{_count(n, 'event')} ({detail})")
    return "; ".join(parts) + "."


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun}es" if noun.endswith("h") else f"{n} {noun}s"
