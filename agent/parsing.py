"""Completion -> search query: one parser for the draft/refine nodes and the format reward."""

from __future__ import annotations

import re
from dataclasses import dataclass

from memory_store.queries import MAX_QUERY_CHARS, MAX_QUERY_WORDS

# A recommended query is a short search string; longer output is the model rambling or echoing
# its prompt, which the paper's format reward counts as malformed.

_PREFIX = re.compile(r"^\s*(?:search\s+)?query\s*[:=\-]\s*", re.IGNORECASE)
_WRAPPERS = "\"'`*_[](){}<>"
_WORD = re.compile(r"[a-z0-9]", re.IGNORECASE)
# Pieces of the prompt template that an untrained model copies back instead of answering. A
# real search query holds none of them (nor a colon, which only the template's labels use).
TEMPLATE_ECHOES = ("2 to 6 words", "<words>", "shopper", "identity", "latest intent", "categories")


@dataclass(frozen=True)
class ParsedQuery:
    """The parse result: ``query`` on success, otherwise ``error`` says why (kept as data)."""

    query: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.query is not None


def parse_query(completion: str) -> ParsedQuery:
    """Extract the query from a drafter completion.

    Accepted forms: ``Query: <words>`` anywhere on a line (preferred), otherwise the first
    non-empty line. The query is lower-cased, unwrapped from quotes/markdown and whitespace-
    normalized; it must hold 1-10 words and some letter or digit.
    """
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    if not lines:
        return ParsedQuery(None, "empty completion")
    tagged = [line for line in lines if _PREFIX.search(_strip_wrappers(line))]
    line = tagged[0] if tagged else lines[0]
    text = _PREFIX.sub("", _strip_wrappers(line), count=1)
    text = _strip_wrappers(text).rstrip(".;,!").strip()
    text = " ".join(text.lower().split())
    if not text or not _WORD.search(text):
        return ParsedQuery(None, "no query text in completion")
    if ":" in text or any(echo in text for echo in TEMPLATE_ECHOES):
        return ParsedQuery(None, "completion echoes the prompt instead of writing a query")
    n_words = len(text.split())
    if n_words > MAX_QUERY_WORDS or len(text) > MAX_QUERY_CHARS:
        return ParsedQuery(
            None, f"query too long ({n_words} words); expected at most {MAX_QUERY_WORDS}"
        )
    return ParsedQuery(text)


def _strip_wrappers(text: str) -> str:
    return text.strip().strip(_WRAPPERS).strip()
