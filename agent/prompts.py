"""Message builders for the drafter, shared by the graph and by training (train/serve parity).

The draft and its refinements form one conversation: system, memory, the draft, then for each
refinement an environment turn (what the query retrieved and what did not fit) and the new
query. Training renders exactly these messages, masking the environment turns out of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.records import ConsistencyReport, RetrievedProduct
from memory_store import UserProfile

# Products listed back to the model in a refine turn; titles are cut so the prompt stays short
# for a 135M-parameter model with a small context.
FEEDBACK_PRODUCTS = 5
TITLE_CHARS = 60

SYSTEM_PROMPT = (
    "You are a shopping assistant. Write the one search query this shopper is most likely to "
    "search next: 2 to 6 words naming a product type. Reply with one line: Query: <words>"
)


def draft_messages(
    profile: UserProfile, popular_categories: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The first turn: the shopper's memory (latest intent, interest graph, latent identity)."""
    if profile.n_events == 0:
        popular = "; ".join(popular_categories[:5]) or "unknown"
        memory = (
            f"New shopper with no purchase history.\nPopular categories in the store: {popular}"
        )
    else:
        memory = profile.to_text()
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Shopper memory:\n{memory}\n\nQuery:"},
    ]


def refine_messages(
    previous: Sequence[dict[str, str]],
    completion: str,
    query: str | None,
    products: Sequence[RetrievedProduct],
    report: ConsistencyReport | None,
) -> list[dict[str, str]]:
    """The next turn: the previous conversation, the model's last reply, and the environment's
    observation (retrieved products and the check's feedback)."""
    if query is None:
        observation = (
            "That reply was not a search query. Reply with one line: Query: <2 to 6 words>"
        )
    else:
        lines = [f'The query "{query}" retrieved:']
        for product in products[:FEEDBACK_PRODUCTS]:
            title = product.title[:TITLE_CHARS]
            lines.append(f"{product.rank}. {title}")
        if report is not None and report.feedback:
            lines.append(report.feedback)
        lines.append("Write a better query for this shopper. Reply with one line: Query: <words>")
        observation = "\n".join(lines)
    return [
        *previous,
        {"role": "assistant", "content": completion},
        {"role": "user", "content": observation},
    ]
