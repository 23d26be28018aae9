"""``ScriptedDrafter``: a deterministic ``QueryDrafter`` for unit tests and demos of the wiring."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence

from agent.drafting.protocol import Messages
from agent.records import Generation

__all__ = ["ScriptedDrafter"]


class ScriptedDrafter:
    """A deterministic drafter for tests and demos of the wiring.

    Args:
        script: completions returned in order (cycling when exhausted), or a function from the
            prompt's messages to the completion.

    Token ids are the UTF-8 bytes of the rendered prompt and of the completion: stable, fake, and
    enough for code that only stores or counts them. Every prompt received is appended to
    ``calls``.
    """

    name = "scripted"

    def __init__(self, script: Sequence[str] | Callable[[Messages], str]) -> None:
        if callable(script):
            self._fn: Callable[[Messages], str] | None = script
            self._cycle: itertools.cycle[str] | None = None
        else:
            completions = list(script)
            if not completions:
                raise ValueError("ScriptedDrafter needs at least one completion or a callable")
            self._fn = None
            self._cycle = itertools.cycle(completions)
        self.calls: list[Messages] = []
        self.temperatures: list[float] = []  # the sampling temperature of each call's prompts
        self._lock = threading.Lock()

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        out: list[Generation] = []
        with self._lock:
            for messages in prompts:
                self.calls.append([dict(m) for m in messages])
                self.temperatures.append(temperature)
                if self._fn is not None:
                    text = self._fn(messages)
                else:
                    assert self._cycle is not None
                    text = next(self._cycle)
                rendered = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
                out.append(
                    Generation(
                        text=text,
                        prompt_token_ids=list(rendered.encode("utf-8")),
                        completion_token_ids=list(text.encode("utf-8")),
                    )
                )
        return out
