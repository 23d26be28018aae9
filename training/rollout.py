"""The graph as GRPO's rollout: each generation of a group is one full run of the agent graph,
rendered as one conversation for the policy-gradient loss.

    [draft prompt] [draft completion] [env: retrieved products + check feedback] [refinement] ...
     prompt_ids    '----------------------- completion_ids -------------------------------'
                   env_mask:  1 ... 1             0 ... 0                         1 ... 1

Model tokens are the ids recorded at generation time (never re-tokenized); the environment turns
between them (end of the assistant turn, the user's observation, the next assistant header) are
the chat template's rendering of the refine prompt minus what came before, tokenized, and masked
out of the loss (``env_mask`` 0), which TRL's ``GRPOTrainer`` reads from a ``rollout_func``.
When the policy writes inside the catalog's query trie, the tokens the trie forced (the answer
prefix, a word only one query continues) are masked too (``QueryTrie.choices``): the loss and the
KL see only the tokens where the policy chose.

``GraphRollout`` is that ``rollout_func``: the prompt copies of one step run through
``graphs.offline.runner.OfflineRunner`` (one ``graph.batch``, outputs in input order), and each
output's trajectory record (``graphs.record.record_from_output``) is rendered here.

A grounded run's turns form a tree, not a line: every refinement is asked from the draft prompt,
the model's best draft and the check's verdict on everything tried so far
(``agent.prompts.grounded_refine_messages``), so turn 2's prompt extends the draft's reply, not
turn 1's. One token sequence can hold only one path of that tree with each turn under the very
prompt it was sampled from, so the rollout renders the path from the draft to the last turn
(``conversation_path``: the last refinement's prompt already lists what the earlier ones tried
and how they fitted) and leaves the turns off that path out of the loss, counted per step in
``rollout/turns_left_out``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.context import Context
from agent.drafting import HFDrafter
from agent.drafting.constrained import GroundedHFDrafter
from graphs.offline.runner import OfflineRunner


class RolloutError(RuntimeError):
    """A trajectory could not be rendered as one conversation."""


@dataclass
class RenderedRollout:
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]  # 1: a model token (trained on), 0: an environment token (masked)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each model turn: [start, end)

    @property
    def turns(self) -> int:
        return 1 + sum(
            1 for a, b in zip(self.env_mask, self.env_mask[1:], strict=False) if a == 0 and b == 1
        )


def _render(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    return str(
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    )


def _every_token(ids: Sequence[int]) -> list[int]:
    return [1] * len(ids)


Mask = Callable[[Sequence[int]], list[int]]


def render_conversation(
    steps: Sequence[dict[str, Any]],
    tokenizer: Any,
    decided: Mask | Sequence[Mask] | None = None,
) -> RenderedRollout:
    """Join a trajectory's steps (draft, then refinements) into one token sequence with its mask.

    Args:
        steps: attempts or trajectory steps in turn order, each with ``messages``, ``completion``,
            ``prompt_token_ids`` and ``completion_token_ids``.
        tokenizer: the policy's tokenizer (its chat template renders the environment turns).
        decided: the mask of a turn's own tokens (1: trained on), one for every turn or one per
            turn; ``None``: all of them. With a query trie, ``QueryTrie.choices`` (of the trie
            each turn was written in): tokens the trie forced stay out of the loss.
    """
    if not steps:
        raise RolloutError("a trajectory needs at least one step")
    if decided is None or callable(decided):
        masks: list[Mask] = [decided or _every_token] * len(steps)
    elif len(decided) == len(steps):
        masks = list(decided)
    else:
        raise RolloutError(f"{len(decided)} turn masks for {len(steps)} turns")
    first = steps[0]
    prompt_ids = list(first["prompt_token_ids"])
    completion_ids = list(first["completion_token_ids"])
    env_mask = masks[0](completion_ids)
    spans = [(0, len(completion_ids))]
    eos = tokenizer.eos_token or ""
    for own, prev, cur in zip(masks[1:], steps, steps[1:], strict=False):
        before = _render(tokenizer, prev["messages"])
        after = _render(tokenizer, cur["messages"])
        if not after.startswith(before):
            raise RolloutError(
                f"turn {cur.get('turn')}: its prompt does not extend the previous one"
            )
        rest = after[len(before) :]
        reply = prev["completion"]
        if not rest.startswith(reply):
            raise RolloutError(f"turn {cur.get('turn')}: the previous reply is not in its prompt")
        env_text = rest[len(reply) :]
        # A reply that ended with eos already holds the template's end-of-turn token.
        ended = (
            bool(prev["completion_token_ids"])
            and prev["completion_token_ids"][-1] == tokenizer.eos_token_id
        )
        if ended and eos and env_text.startswith(eos):
            env_text = env_text[len(eos) :]
        env_ids = list(tokenizer(env_text, add_special_tokens=False)["input_ids"])
        model_ids = list(cur["completion_token_ids"])
        completion_ids += env_ids
        spans.append((len(completion_ids), len(completion_ids) + len(model_ids)))
        completion_ids += model_ids
        env_mask += [0] * len(env_ids) + own(model_ids)
    return RenderedRollout(prompt_ids, completion_ids, env_mask, spans)


def conversation_path(steps: Sequence[dict[str, Any]], tokenizer: Any) -> list[int]:
    """The turns (indices into ``steps``, in turn order) that one conversation can hold: from the
    draft to the last turn asked in the draft's conversation, each turn's parent the latest
    earlier turn its prompt continues. A free run (each refinement continues the previous turn)
    keeps every turn; a grounded run (each refinement continues the draft) keeps the draft and
    its last refinement. ``render_conversation`` of the kept turns reproduces each one's prompt.
    """
    if not steps:
        raise RolloutError("a trajectory needs at least one step")
    prompts = [_render(tokenizer, step["messages"]) for step in steps]
    parent: dict[int, int | None] = {0: None}
    for i in range(1, len(steps)):
        for j in sorted(parent, reverse=True):
            # turn i was asked after turn j: its prompt is j's prompt, then j's reply, then more
            said = prompts[i][len(prompts[j]) :] if prompts[i].startswith(prompts[j]) else None
            if said is not None and said.startswith(steps[j]["completion"]):
                parent[i] = j
                break
    path: list[int] = []
    node: int | None = max(parent)
    while node is not None:
        path.append(node)
        node = parent[node]
    return path[::-1]


def model_turns(steps: Sequence[Any]) -> list[dict[str, Any]]:
    """The steps the policy wrote (one per turn, in turn order): candidates recalled from other
    sources carry no prompt and are not part of the conversation the loss is computed on."""
    turns: dict[int, dict[str, Any]] = {}
    for step in steps:
        dumped = step.model_dump() if hasattr(step, "model_dump") else dict(step)
        if dumped.get("messages") and dumped["turn"] not in turns:
            turns[dumped["turn"]] = dumped
    return [turns[t] for t in sorted(turns)]


def turn_tries(trie: Any, steps: Sequence[Any], turns: Sequence[dict[str, Any]]) -> list[Any]:
    """The trie each model turn was written in: the catalog's, less the queries tried in earlier
    turns (a refinement's candidates are new ones, ``agent.nodes.refine_query``)."""
    dumped = [s.model_dump() if hasattr(s, "model_dump") else dict(s) for s in steps]
    return [
        trie.without(d["query"] for d in dumped if d.get("query") and d["turn"] < turn["turn"])
        for turn in turns
    ]


def prompt_key(prompt: Any) -> str:
    """A stable key for a dataset prompt (conversational or plain), to find its row again."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


class GraphRollout:
    """TRL ``rollout_func``: runs the agent graph once per prompt copy with the current policy.

    Args:
        rows: the prompt rows (``prompt``, ``user_id``, ``before``), found again by their prompt.
        catalog: the environment's catalog.
        store: the environment's memory store (ingested with ``graphs.offline.ingest.ingest``).
        ranking: the catalog's fitted models (``agent.ranking``) the nodes use.
        context: the run context; the trainer's sampling temperature replaces its own.
        grounded: sample inside the catalog's query trie (the served agent's drafting); off,
            free generation.
    """

    def __init__(
        self,
        *,
        rows: list[dict[str, Any]],
        catalog: Any,
        store: Any,
        context: Context,
        ranking: Any = None,
        grounded: bool = True,
    ) -> None:
        self.rows = {prompt_key(r["prompt"]): r for r in rows}
        self.catalog = catalog
        self.ranking = ranking
        self.store = store
        self.context = context
        self.grounded = grounded
        self.history: list[dict[str, float]] = []  # per call: mean refinements, distinct queries
        self._lock = threading.Lock()
        self._written: dict[tuple[int, ...], tuple[list[tuple[int, int]], list[Any]]] = {}

    def allowed_tokens(self, completion_ids: Sequence[int]) -> list[list[int] | None] | None:
        """For each token of a completion the last call rendered: the tokens its query trie
        allowed at that point (the support of the distribution it was sampled from), ``None``
        outside the model's turns; ``None`` for a completion written without a trie."""
        with self._lock:
            entry = self._written.get(tuple(completion_ids))
        if entry is None:
            return None
        spans, tries = entry
        allowed: list[list[int] | None] = [None] * len(completion_ids)
        for (start, end), trie in zip(spans, tries, strict=True):
            own = list(completion_ids[start:end])
            for n in range(len(own)):
                allowed[start + n] = trie.allowed(own[:n])
        return allowed

    def run(
        self, rows: Sequence[dict[str, Any]], model: Any, tokenizer: Any, temperature: float
    ) -> tuple[list[Any], Any]:
        """One graph run per row with ``model`` as the drafter (sampling at ``temperature``;
        0: its greedy pick), in row order; returns the trajectory records and the drafter."""
        # GRPO over the constrained space: each generation of a group samples one query inside
        # the catalog's query trie, and only the policy's own candidates are checked (no
        # recall from other sources), so the group's rewards differ by what the policy wrote.
        policy = HFDrafter.from_loaded(model, tokenizer, name="policy")
        drafter = GroundedHFDrafter(policy) if self.grounded else policy
        runner = OfflineRunner(
            store=self.store,
            catalog=self.catalog,
            ranking=self.ranking,
            drafter=drafter,
            batch_size=len(rows),
        )
        ctx = replace(
            self.context,
            # Every turn samples at the trainer's temperature, the one the loss divides by.
            temperature=temperature,
            refine_temperature=None,
            seed=None,
            beams=1,
            recall=False,
            grounded=self.grounded,
            # The policy changes every step: a vote weight learned for it would be stale at once.
            model_vote=False,
            # This rollout trains the drafting role: its reward scores the intent's own page.
            write_query=False,
        )
        # One graph.batch over every copy; record i is prompt i's run (input order).
        records = runner.run(
            [{"user_id": r["user_id"], "before": r["before"]} for r in rows],
            context=ctx,
            records=True,
            chunk_size=len(rows),
        ).records
        return records, drafter

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        rows = [self.rows[prompt_key(p)] for p in prompts]
        records, drafter = self.run(rows, model, tokenizer, trainer.args.temperature)
        # Inside the trie, a token it forces is no decision of the policy: trained on, its
        # probability would drift freely (nothing samples it against the others), and the KL
        # estimate on it exploded (k3 in the thousands) in a CPU run before these were masked.
        trie = None
        if isinstance(drafter, GroundedHFDrafter) and self.ranking and self.ranking.vocab.queries:
            trie = drafter.trie(self.ranking.vocab.queries)
        rendered = []
        written: dict[tuple[int, ...], tuple[list[tuple[int, int]], list[Any]]] = {}
        left_out = 0
        for rec in records:
            turns = model_turns(rec.steps)
            path = conversation_path(turns, tokenizer)
            left_out += len(turns) - len(path)
            kept = [turns[i] for i in path]
            if trie is None:
                rendered.append(render_conversation(kept, tokenizer))
                continue
            every = turn_tries(trie, rec.steps, turns)
            tries = [every[i] for i in path]
            out = render_conversation(kept, tokenizer, [t.choices for t in tries])
            written[tuple(out.completion_ids)] = (out.spans, tries)
            rendered.append(out)
        with self._lock:
            # Kept until the next rollout: TRL scores a generation batch's completions (old
            # policy, reference, loss) before it asks for the next one.
            self._written = written
        queries = [rec.final.query for rec in records]
        with self._lock:
            self.history.append(
                {
                    "rollout/mean_refinements": sum(rec.run["refinements"] for rec in records)
                    / len(records),
                    "rollout/distinct_queries": len(set(queries)) / len(queries),
                    "rollout/parsed_final": sum(q is not None for q in queries) / len(queries),
                    # model turns off the rendered conversation's path (conversation_path)
                    "rollout/turns_left_out": left_out / len(records),
                }
            )
        return {
            "prompt_ids": [r.prompt_ids for r in rendered],
            "completion_ids": [r.completion_ids for r in rendered],
            "logprobs": None,  # no vLLM: TRL computes the old policy's log-probs itself
            "env_mask": [r.env_mask for r in rendered],
            "trajectory": [rec.model_dump(mode="json") for rec in records],
        }
