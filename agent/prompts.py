"""Message builders for the drafter, shared by the graph and by training (train/serve parity).

The draft and its refinements form one conversation: system, memory, the draft, then for each
refinement an environment turn (what the query retrieved and what did not fit) and the new
query. Training renders exactly these messages, masking the environment turns out of the loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from agent.records import FitCheck, RetrievedProduct
from memory_store import UserProfile

# Products listed back to the model in a refine turn; titles are cut so the prompt stays short
# for a 135M-parameter model with a small context.
FEEDBACK_PRODUCTS = 5
TITLE_CHARS = 60

SYSTEM_PROMPT = (
    "You are a shopping assistant. Given a shopper's memory, write the search query they are "
    "most likely to type next: 2 to 6 words naming a product type. "
    "Reply with one line: Query: <words>"
)

# The answer is one line; generation stops after it (the model tends to ramble on otherwise,
# which costs about 80 ms a token on a CPU).
STOP = ("\n",)

# Two worked turns before the real one. An untrained 135M model copies its prompt back without
# them; with them it answers in the expected form (measured on 12 bundled shoppers: 11 of 12
# completions parsed, against none with the bare instruction). The shoppers are made up.
FEW_SHOT: tuple[tuple[str, str], ...] = (
    (
        "Identity: Buys mostly Glassware & Labware Beakers; 5 purchases.\n"
        "Latest intent (oldest first): Pyrex Griffin Beaker 250 ml | Glass Stirring Rod 10 in\n"
        "Categories: Lab & Scientific Products Glassware & Labware Beakers (1.80)",
        "Query: glass beakers",
    ),
    (
        "Identity: Buys mostly 3D Printing Filament; 4 purchases.\n"
        "Latest intent (oldest first): HATCHBOX PLA Filament 1.75 mm | SUNLU PETG Filament\n"
        "Categories: Additive Manufacturing Products 3D Printing Supplies 3D Printing Filament "
        "(2.40)",
        "Query: pla filament",
    ),
)


def prompt_fingerprint() -> str:
    """A short hash of the prompt template (system prompt, worked turns, stop strings): results
    cached by an evaluation are only reused for the same prompts."""
    text = repr((SYSTEM_PROMPT, FEW_SHOT, STOP, FEEDBACK_PRODUCTS, TITLE_CHARS))
    text += repr((GROUNDED_SYSTEM_PROMPT, FEEDBACK_CANDIDATES))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Bounds on the memory a prompt shows, in UTF-8 bytes per line and in all. A byte-level BPE token
# covers at least one byte, so they bound the prompt's tokens without a tokenizer here (the same
# bound in training and serving). Issue 25: one 10,000-word category kept `recommend` in the
# model's forward pass past 300 s. The bundled set's longest memory line is 921 characters and its
# longest memory 1,319, so nothing there is cut; they are left out of ``prompt_fingerprint`` for
# that reason (cached evaluations stay valid).
MEMORY_LINE_BYTES = 2048
MEMORY_BYTES = 4096


def _clip_bytes(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def bounded_memory(text: str) -> str:
    """``text`` with each line and the whole within ``MEMORY_LINE_BYTES`` / ``MEMORY_BYTES``."""
    lines = [_clip_bytes(line, MEMORY_LINE_BYTES) for line in text.split("\n")]
    return _clip_bytes("\n".join(lines), MEMORY_BYTES)


def memory_text(profile: UserProfile, popular_categories: Sequence[str] = ()) -> str:
    """The memory as the prompts show it, bounded (``bounded_memory``); a cold-start shopper
    gets the store's popular categories instead."""
    if profile.n_events == 0:
        popular = "; ".join(popular_categories[:5]) or "unknown"
        return bounded_memory(
            "Identity: New shopper with no purchase history.\n"
            f"Popular categories in the store: {popular}"
        )
    return bounded_memory(profile.to_text())


def draft_messages(
    profile: UserProfile, popular_categories: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The first turn: the shopper's memory (latest intent, interest graph, latent identity)."""
    memory = memory_text(profile, popular_categories)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for shopper, answer in FEW_SHOT:
        messages += [
            {"role": "user", "content": shopper},
            {"role": "assistant", "content": answer},
        ]
    messages.append({"role": "user", "content": memory})
    return messages


def _retrieved_lines(query: str, products: Sequence[RetrievedProduct]) -> list[str]:
    """What a query retrieved, as a refinement or a rewrite shows it to the model."""
    lines = [f'The query "{query}" retrieved:']
    for product in products[:FEEDBACK_PRODUCTS]:
        lines.append(f"{product.rank}. {product.title[:TITLE_CHARS]}")
    return lines


def refine_messages(
    previous: Sequence[dict[str, str]],
    completion: str,
    query: str | None,
    products: Sequence[RetrievedProduct],
    check: FitCheck | None,
) -> list[dict[str, str]]:
    """The next turn: the previous conversation, the model's last reply, and the environment's
    observation (retrieved products and the check's feedback)."""
    if query is None:
        observation = (
            "That reply was not a search query. Reply with one line: Query: <2 to 6 words>"
        )
    else:
        lines = _retrieved_lines(query, products)
        if check is not None and check.feedback:
            lines.append(check.feedback)
        lines.append("Write a better query for this shopper. Reply with one line: Query: <words>")
        observation = "\n".join(lines)
    return [
        *previous,
        {"role": "assistant", "content": completion},
        {"role": "user", "content": observation},
    ]


# --------------------------------------------------------------------------- grounded drafting

# Grounded drafting decodes inside the catalog's query trie, so the model needs no worked turns
# to answer in form: the prompt is the instruction and the memory (about 100-150 tokens instead
# of about 400), which is what makes scoring several candidates per shopper affordable on a CPU.
GROUNDED_SYSTEM_PROMPT = (
    "You are a shopping assistant for one online store. Given a shopper's memory, name the "
    "store category the shopper will search next. Reply with one line: Query: <category>"
)
# Candidates listed back to the model in a grounded refinement turn.
FEEDBACK_CANDIDATES = 3


def grounded_messages(
    profile: UserProfile, popular_categories: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The grounded draft prompt: system instruction and the shopper's memory, no worked turns."""
    memory = memory_text(profile, popular_categories)
    return [
        {"role": "system", "content": GROUNDED_SYSTEM_PROMPT},
        {"role": "user", "content": memory},
    ]


def grounded_refine_messages(
    previous: Sequence[dict[str, str]],
    best_query: str,
    checked: Sequence[tuple[str, float, Sequence[str]]],
) -> list[dict[str, str]]:
    """The refinement turn: the model's best query so far, then the check's verdict on the best
    candidates (query, chance that the shopper's next purchase is among its products, and the
    titles of its top products), asking for a different category."""
    lines = ["Checked against the catalog (chance the next purchase is among the products):"]
    for query, fit, titles in checked[:FEEDBACK_CANDIDATES]:
        shown = " | ".join(t[:TITLE_CHARS] for t in titles[:2])
        lines.append(f'- "{query}": {fit:.2f} ({shown})')
    lines.append("None fits well. Name a different store category. Reply: Query: <category>")
    return [
        *previous,
        {"role": "assistant", "content": f"Query: {best_query}"},
        {"role": "user", "content": "\n".join(lines)},
    ]


# --------------------------------------------------------------------------- the query text

# After the check picks the intent (a catalog query: a category path), the model writes the
# query text the shopper sees (``agent.writing``). The writer is trained for this prompt
# (``training.writer``), so it needs no worked turns, and the memory it sees is only what a
# query's specifics come from: the shopper's brands and latest titles. Short on purpose: the
# prompt is most of a recommendation's model time on a CPU.
WRITE_SYSTEM_PROMPT = "Write the search query this shopper would type for the category."
WRITE_BRANDS = 3  # the heaviest brand nodes shown
WRITE_TITLES = 2  # the latest titles shown
WRITE_TITLE_CHARS = 32


def writer_memory(profile: UserProfile) -> str:
    """The writer's view of the memory: the heaviest brands and the latest titles."""
    brands = " | ".join(n.name for n in profile.interest_graph.top("brand", WRITE_BRANDS))
    recent = profile.latest_intent[-WRITE_TITLES:]
    titles = " | ".join(_short(item.title, WRITE_TITLE_CHARS) for item in recent)
    return f"Brands: {brands or 'none'}\nRecent: {titles or 'none'}"


def _short(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "\u2026"


def writing_fingerprint() -> str:
    """A short hash of the query text's prompts: an evaluation's cached agent results (whose
    products come from the text) are only reused for the same prompts."""
    text = repr(
        (
            WRITE_SYSTEM_PROMPT,
            WRITE_BRANDS,
            WRITE_TITLES,
            WRITE_TITLE_CHARS,
            STOP,
            FEEDBACK_PRODUCTS,
            TITLE_CHARS,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def write_messages(profile: UserProfile, intent: str) -> list[dict[str, str]]:
    """The query text's prompt: the intent (the catalog query the check picked) and the
    writer's view of the shopper's memory (``writer_memory``)."""
    return [
        {"role": "system", "content": WRITE_SYSTEM_PROMPT},
        {"role": "user", "content": f"Category: {intent}\n{writer_memory(profile)}"},
    ]


def rewrite_messages(
    previous: Sequence[dict[str, str]],
    completion: str,
    text: str | None,
    intent: str,
    products: Sequence[RetrievedProduct],
    feedback: str,
) -> list[dict[str, str]]:
    """The rewrite turn: the previous conversation, the model's last reply, and what its text
    retrieved with the check's verdict (its products drifted from the intent's or the
    shopper's)."""
    if text is None:
        lines = ["That reply was not a search query."]
    else:
        lines = _retrieved_lines(text, products)
        if feedback:
            lines.append(feedback)
    lines.append(
        f'Write a query that finds the category "{intent}" for this shopper. '
        "Reply with one line: Query: <words>"
    )
    return [
        *previous,
        {"role": "assistant", "content": completion},
        {"role": "user", "content": "\n".join(lines)},
    ]
