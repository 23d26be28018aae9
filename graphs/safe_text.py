"""Text a command prints to a terminal, with control characters made visible.

Product titles, brands, categories and shopper ids come from data files and event streams, so
they may hold terminal escape sequences (``\\x1b[2J`` clears the screen, ``\\x1b]0;...\\x07``
retitles the window) or line breaks that forge extra output lines. ``safe`` replaces every such
character by its ``\\xNN`` / ``\\uNNNN`` escape (as ``repr`` writes it), so what a user sees is what
the data holds and nothing is executed by the terminal. ``--json`` output is already safe
(``json.dumps`` escapes control characters).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["safe"]

# C0 controls (tab and newline included: one printed field stays on its line), DEL, C1 controls,
# and the Unicode line/paragraph separators and bidirectional overrides a terminal acts on.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object) -> str:
    """``str(value)`` with control characters replaced by visible escapes."""
    text = str(value)
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape, text)


def is_safe(text: str) -> bool:
    """Whether ``text`` holds no character ``safe`` would replace (and no other ``Cc``)."""
    return _UNSAFE.search(text) is None and not any(unicodedata.category(c) == "Cc" for c in text)
