"""Contexts for tests of the model's drafting role.

Since issue 27 the default ``Context`` has the model write the query text only (``beams=0``,
``model_vote=False``, ``write_query=True``). Tests of drafting, the vote and refinement ask for
the drafting role explicitly with ``drafting(...)``; the text step is off there, as it was when
drafting was the default, so what they assert stays what they tested.
"""

from __future__ import annotations

from typing import Any

from agent.context import Context

# The drafting role's knobs (the defaults before issue 27).
DRAFTING: dict[str, Any] = {"beams": 4, "model_vote": True, "write_query": False}


def drafting(**overrides: Any) -> Context:
    """A ``Context`` in which the model drafts candidates and votes in the check (and writes no
    query text), with ``overrides`` on top."""
    return Context(**(DRAFTING | overrides))
