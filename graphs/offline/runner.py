"""The one offline path: ingest, then the compiled graph over many inputs with ``graph.batch``.

Evaluation (``training.evaluation.runner``), the trajectory export, GRPO's rollout, the bench and
the nearline precompute all run the agent through ``OfflineRunner``::

    runner = OfflineRunner.from_dataset(dataset, catalog=catalog, drafter=drafter,
                                        context=Context(top_k=10), batch_size=16)
    result = runner.run([{"user_id": u, "before": n} for u, n in cuts], records=True)
    result.outputs[i], result.records[i]      # input i's OutputState and trajectory record

``from_dataset`` ingests with ``graphs.offline.ingest.ingest``, the function ``queryagent ingest``
calls (memory, catalog statistics, the catalog when it is writable), into a fresh
``InMemoryStore`` unless a store is given; ``OfflineRunner(store=...)`` runs on a store ingested
before (the CLI's home, a Postgres store). The drafter is wrapped in a ``MicroBatchingDrafter``,
so the concurrent runs of one ``graph.batch`` call share model calls. ``graph.batch`` returns
outputs in input order, so output ``i`` belongs to input ``i``: trajectory records are built from
the outputs (``graphs.record.record_from_output``), never matched back by key. The outputs come
back as JSON (``agent.state.output_json``): what the callers keep in files, caches and stores.

``profile_at`` / ``draft_prompt_at`` are the "profile cut at ``before``, then the draft prompt"
that training builds its rows from (SFT pairs, GRPO rows, the LLM-direct baseline): the same
messages ``draft_query`` would build from the memory at that cut.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from agent.catalog import Catalog
from agent.context import Context
from agent.drafting.batching import micro_batched
from agent.prompts import draft_messages
from agent.ranking import RANKING_DIR, fit_on_search
from agent.ranking.fit import CatalogModels
from agent.search import DEFAULT_SEARCH, SEARCH_DIR, Search, prepare_search
from agent.state import output_json
from graphs.offline.ingest import ingest
from graphs.query_agent import Deps, build_graph
from graphs.record import Target, TrajectoryRecord, record_from_output
from memory_store import (
    Dataset,
    UserProfile,
    build_profile,
    events_from_sequence,
    target_position,
)
from memory_store.fingerprint import data_fingerprint
from memory_store.paths import queryagent_home

__all__ = [
    "CHUNK_BATCHES",
    "OfflineRunner",
    "RunResult",
    "draft_prompt_at",
    "fit_sequences",
    "offline_ranking",
    "profile_at",
]

# Graph runs handed to one ``graph.batch`` call, in multiples of the drafter batch: enough to keep
# the micro-batcher full, few enough that a chunk's results are small and progress is smooth.
CHUNK_BATCHES = 4


def profile_at(dataset: Dataset, user_id: str, before: int | None = None) -> UserProfile:
    """The shopper's profile built from their first ``before`` events (all when None)."""
    sequence = dataset.sequences[user_id]
    cut = sequence if before is None else sequence[:before]
    return build_profile(user_id, events_from_sequence(user_id, cut, dataset.products))


def draft_prompt_at(
    dataset: Dataset,
    user_id: str,
    before: int | None = None,
    popular_categories: Sequence[str] = (),
) -> tuple[UserProfile, list[dict[str, str]]]:
    """The profile cut at ``before`` and the draft prompt the graph would build from it."""
    profile = profile_at(dataset, user_id, before)
    return profile, draft_messages(profile, list(popular_categories))


def fit_sequences(dataset: Dataset, split: str) -> dict[str, list[str]]:
    """Every sequence cut before its held-out item for a run over ``split``: the ``valid`` /
    ``test`` targets for those splits, the ``valid`` targets for ``train`` (its rows lie before
    them), so models fitted on them never saw what the run predicts or what is held out."""
    held_out = "valid" if split == "train" else split
    cut = {u: list(s) for u, s in dataset.sequences.items()}
    for ex in dataset.examples(held_out):
        cut[ex.user_id] = cut[ex.user_id][: target_position(dataset, ex, held_out)]
    return cut


def offline_ranking(
    dataset: Dataset,
    catalog: Catalog,
    split: str,
    home: str | os.PathLike[str] | None = None,
    *,
    search: str = DEFAULT_SEARCH,
    progress: bool = False,
) -> CatalogModels:
    """The catalog's fitted models (``agent.ranking``) for an offline run over ``split``: the
    search (``"fused"`` or ``"dense"``) and the models fitted on ``fit_sequences`` once, kept in
    the home (``search/offline-<data>-<split>-<digest>``, ``ranking/offline-...``). The models
    name their search, so a runner built on them (``OfflineRunner``) serves with it."""
    sequences = fit_sequences(dataset, split)
    digest = data_fingerprint(dataset.products, sequences)
    name = f"offline-{dataset.name.lower()}-{split}-{digest}"
    search_folder = queryagent_home(home) / SEARCH_DIR / name
    found = prepare_search(search, catalog, search_folder, dataset.products, sequences)
    # Per search, so switching between them does not refit the other's models.
    folder = (
        queryagent_home(home) / RANKING_DIR / (name if search == "dense" else f"{name}-{search}")
    )
    models, _ = fit_on_search(
        folder,
        dataset.products,
        sequences,
        found,
        catalog,
        search_folder=search_folder,
        progress=progress,
    )
    return models


@dataclass
class RunResult:
    """Outputs (as JSON, ``agent.state.output_json``) in input order; trajectory records too
    when asked for (same order)."""

    outputs: list[dict[str, Any]] = field(default_factory=list)
    records: list[TrajectoryRecord] = field(default_factory=list)
    wall_s: float = 0.0


class OfflineRunner:
    """The compiled agent graph on a store, a catalog and a micro-batched drafter.

    Args:
        store: the memory's store, already ingested (see ``from_dataset``).
        catalog: the product catalog the graph searches.
        drafter: a ``QueryDrafter`` or ``GroundedDrafter``, put behind the micro-batcher
            (``agent.drafting.batching.micro_batched``) so the concurrent runs of ``graph.batch``
            share model calls (free generation and constrained beams alike); ``None`` runs
            recall and the check alone.
        ranking: the catalog's fitted models (``agent.ranking``) the nodes use.
        search: the search the products come from (``agent.search``; default: the one
            ``ranking`` names, the search it was fitted with, as ``build_graph`` resolves it).
        context: the default run context (``run`` may pass another).
        model: the model id written into trajectory records (default: the drafter's ``name``).
        batch_size: the most prompts per model call, and the concurrency of ``graph.batch``.
    """

    def __init__(
        self,
        *,
        store: BaseStore,
        catalog: Catalog,
        drafter: Any,
        ranking: Any = None,
        search: Search | None = None,
        context: Context | None = None,
        model: str | None = None,
        batch_size: int = 16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.store = store
        self.catalog = catalog
        self.batch_size = batch_size
        self.drafter = None if drafter is None else micro_batched(drafter, max_batch=batch_size)
        self.ranking = ranking
        self.search = search
        self.context = context or Context()
        inner = getattr(self.drafter, "drafter", drafter)
        self.model = model or getattr(inner, "name", None) or getattr(drafter, "name", None)
        self.graph = build_graph(
            Deps(drafter=self.drafter, catalog=catalog, ranking=ranking, search=search)
        ).compile(store=store, name="QueryAgent")

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        *,
        catalog: Catalog,
        drafter: Any,
        store: BaseStore | None = None,
        progress: bool = False,
        **kwargs: Any,
    ) -> OfflineRunner:
        """Ingest ``dataset`` (``graphs.offline.ingest.ingest``) into ``store`` (default: a new
        ``InMemoryStore``) and build a runner on it; ``kwargs`` go to ``OfflineRunner``."""
        if store is None:
            store = InMemoryStore()
        ingest(dataset, store, catalog, progress=progress)
        return cls(store=store, catalog=catalog, drafter=drafter, **kwargs)

    def iter_chunks(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        context: Context | None = None,
        records: bool = False,
        targets: Sequence[Target | Mapping[str, Any] | None] | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[tuple[int, list[dict[str, Any]], list[TrajectoryRecord]]]:
        """Run ``inputs`` chunk by chunk; yields ``(start, outputs, records)`` per chunk, in order.

        For callers that write as they go (export, precompute): what was yielded is done.
        ``records`` is empty unless asked for; ``targets[i]`` goes into input ``i``'s record.
        """
        if targets is not None and len(targets) != len(inputs):
            raise ValueError(f"{len(targets)} targets for {len(inputs)} inputs")
        ctx = context or self.context
        size = chunk_size or self.batch_size * CHUNK_BATCHES
        for start in range(0, len(inputs), size):
            chunk = [dict(i) for i in inputs[start : start + size]]
            run_ids = [uuid4() for _ in chunk]
            # All of a chunk's runs at once: the micro-batcher groups their model calls.
            configs: list[Any] = [{"run_id": r, "max_concurrency": len(chunk)} for r in run_ids]
            created = datetime.now(UTC).isoformat()
            outputs = [output_json(o) for o in self.graph.batch(chunk, configs, context=ctx)]
            recs: list[TrajectoryRecord] = []
            if records:
                recs = [
                    record_from_output(
                        out,
                        inp,
                        model=self.model,
                        run_id=str(run_id),
                        created=created,
                        target=targets[start + n] if targets is not None else None,
                    )
                    for n, (out, inp, run_id) in enumerate(
                        zip(outputs, chunk, run_ids, strict=True)
                    )
                ]
            yield start, outputs, recs

    def run(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        context: Context | None = None,
        records: bool = False,
        targets: Sequence[Target | Mapping[str, Any] | None] | None = None,
        chunk_size: int | None = None,
        on_chunk: Callable[[int], None] | None = None,
    ) -> RunResult:
        """Run the graph over ``inputs``; outputs (and records) in input order.

        Args:
            inputs: ``{"user_id", "before"?}`` per run.
            context: the run context (default: the runner's).
            records: build a trajectory record per run.
            targets: held-out targets for the records (same length as ``inputs``).
            chunk_size: runs per ``graph.batch`` call (default ``CHUNK_BATCHES`` drafter batches).
            on_chunk: called with the number of runs each finished chunk held (progress bars).
        """
        t0 = time.perf_counter()
        result = RunResult()
        for _, outputs, recs in self.iter_chunks(
            inputs, context=context, records=records, targets=targets, chunk_size=chunk_size
        ):
            result.outputs.extend(outputs)
            result.records.extend(recs)
            if on_chunk is not None:
                on_chunk(len(outputs))
        result.wall_s = time.perf_counter() - t0
        return result
