"""Products-vs-profile consistency: does what a query retrieves fit the shopper?

Pure functions, shared by the check node and (later) the reward. A product fits the shopper when
its category is among the interest graph's category nodes, its brand among the brand nodes, and
its embedding is close to the items the shopper bought most recently (latest intent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from agent.records import ConsistencyReport, ProductScore, RetrievedProduct
from memory_store import UserProfile, category_name

# Weights of the three signals in a product's score (sum to 1). Category carries most: the
# ground-truth query of the paper's protocol is the category path.
W_CATEGORY = 0.5
W_BRAND = 0.2
W_SIMILARITY = 0.3


def category_overlap(a: str, b: str) -> float:
    """Share of leading category-path tokens two category strings have in common (0-1).

    Category levels are joined by spaces in the data, so level boundaries are lost; a shared
    token prefix is the closest we get to "same branch of the taxonomy".
    """
    ta, tb = a.lower().split(), b.lower().split()
    if not ta or not tb:
        return 0.0
    common = 0
    for x, y in zip(ta, tb, strict=False):
        if x != y:
            break
        common += 1
    return common / max(len(ta), len(tb))


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(y * y for y in v))
    return dot / (nu * nv) if nu and nv else 0.0


def score_products(
    products: Sequence[RetrievedProduct],
    profile: UserProfile,
    *,
    embeddings: Mapping[str, Sequence[float]] | None = None,
    fit_threshold: float = 0.55,
) -> ConsistencyReport:
    """Score each product against the profile; the report's score is their mean.

    Args:
        products: the retrieved products to check (typically the top few).
        profile: the shopper's memory.
        embeddings: catalog vectors by item id, covering the products and the profile's
            latest-intent items; missing vectors give similarity 0.
        fit_threshold: a product with score >= this fits.
    """
    if not products:
        return ConsistencyReport(score=0.0, feedback="The query retrieved no products.")
    embeddings = embeddings or {}
    cat_nodes = [(n.name, n.weight) for n in profile.interest_graph.nodes if n.kind == "category"]
    brand_nodes = {
        n.name.lower(): n.weight for n in profile.interest_graph.nodes if n.kind == "brand"
    }
    top_cat = max((w for _, w in cat_nodes), default=0.0)
    top_brand = max(brand_nodes.values(), default=0.0)
    recent = [embeddings[i.item_id] for i in profile.latest_intent if i.item_id in embeddings]

    scores: list[ProductScore] = []
    for product in products:
        category = category_name(product.category)
        cat = max(
            (category_overlap(category, name) * (0.5 + 0.5 * w / top_cat) for name, w in cat_nodes),
            default=0.0,
        )
        bw = brand_nodes.get(product.brand.lower()) if product.brand else None
        brand = 0.5 + 0.5 * bw / top_brand if bw is not None and top_brand else 0.0
        vec = embeddings.get(product.item_id)
        sim = max((cosine(vec, r) for r in recent), default=0.0) if vec is not None else 0.0
        sim = min(max(sim, 0.0), 1.0)
        total = W_CATEGORY * cat + W_BRAND * brand + W_SIMILARITY * sim
        scores.append(
            ProductScore(
                item_id=product.item_id,
                category_match=round(cat, 4),
                brand_match=round(brand, 4),
                similarity=round(sim, 4),
                score=round(total, 4),
                fits=total >= fit_threshold,
            )
        )
    mean = sum(s.score for s in scores) / len(scores)
    return ConsistencyReport(
        score=round(mean, 4), products=scores, feedback=_feedback(products, scores, cat_nodes)
    )


def _feedback(
    products: Sequence[RetrievedProduct],
    scores: Sequence[ProductScore],
    cat_nodes: Sequence[tuple[str, float]],
) -> str:
    misfits = [p for p, s in zip(products, scores, strict=True) if not s.fits]
    if not misfits:
        return "All checked products fit the shopper."
    shown = "; ".join(
        f"{p.title[:40]} ({p.category.split(' ')[-1] if p.category else 'no category'})"
        for p in misfits[:3]
    )
    interests = ", ".join(name for name, _ in sorted(cat_nodes, key=lambda x: -x[1])[:3])
    text = f"{len(misfits)} of {len(products)} products do not fit the shopper: {shown}."
    if interests:
        text += f" The shopper buys mostly: {interests}."
    return text
