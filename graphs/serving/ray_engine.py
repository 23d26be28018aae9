"""``queryagent precompute --engine ray``: the precompute step on a Ray Data actor pool.

Ray is an optional extra (``pip install -e '.[ray]'``), imported only when the engine is chosen
(this module imports without it). The shoppers to compute become a Ray dataset; ``map_batches``
hands batches of them to a pool of actors, each holding what is expensive to build once: the
drafter (the model), the catalog client and a store connection. An actor reads its shoppers'
memory from the store, runs them through ``graphs.offline.runner.OfflineRunner`` and writes the
results back with ``graphs.serving.results.store_results``, so the driver only sees the ids that
are done (its progress).

On one machine ``ray.init()`` starts a local Ray; with ``RAY_ADDRESS`` set it joins that cluster
(then the store and the catalog must be servers every node reaches: ``$QUERYAGENT_STORE_URL`` =
postgresql://..., ``$QUERYAGENT_CHROMA_HOST``; see the README).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from langgraph.store.base import BaseStore, GetOp, Item

from agent.context import Context
from graphs.offline.runner import OfflineRunner
from graphs.query_agent import Deps
from graphs.serving.results import PrecomputeError, Versions, store_results
from memory_store import USERS_NAMESPACE

# The folder holding agent/, graphs/, memory_store/ (this file is graphs/serving/ray_engine.py):
# local Ray workers import the same code as the driver (an editable install elsewhere, or none,
# would otherwise win).
CODE_ROOT = str(Path(__file__).resolve().parents[2])
FORWARDED_ENV = ("QUERYAGENT_", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")


class PrecomputeActor:
    """One member of the actor pool: built once, then called with batches of shopper ids."""

    def __init__(
        self,
        deps_factory: Callable[[], Deps],
        store_opener: Callable[[], BaseStore],
        context: Context,
        versions: Versions,
        batch_size: int,
    ) -> None:
        self.store = store_opener()
        deps = deps_factory()
        self.versions = versions
        self.runner = OfflineRunner(
            store=self.store,
            catalog=deps.catalog,
            drafter=deps.drafter,
            ranking=deps.ranking,
            context=context,
            model=versions.model,
            batch_size=batch_size,
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        users = [str(u) for u in batch["user_id"]]
        items = cast(
            "list[Item | None]", self.store.batch([GetOp(USERS_NAMESPACE, u) for u in users])
        )
        entries = {u: dict(i.value) for u, i in zip(users, items, strict=True) if i is not None}
        outputs = self.runner.run([{"user_id": u} for u in users]).outputs
        store_results(self.store, outputs, entries, self.versions)
        return {"user_id": np.array(users, dtype=object)}


def _init_ray() -> Any:
    try:
        import ray  # local: an optional extra, imported only when the engine is chosen
    except ImportError:
        raise PrecomputeError(
            "--engine ray needs Ray: pip install -e '.[ray]' (or use --engine local)"
        ) from None
    if not ray.is_initialized():
        path = os.pathsep.join(p for p in (CODE_ROOT, os.environ.get("PYTHONPATH")) if p)
        # The workers open the store, the catalog and the model as this process would: the
        # QUERYAGENT_* settings (store URL, Chroma host, model, home) and the offline switches.
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        ray.init(
            runtime_env={"env_vars": {**env, "PYTHONPATH": path}},
            include_dashboard=False,
            log_to_driver=False,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller's tqdm counts
    return ray


def run_on_ray(
    users: Sequence[str],
    *,
    deps_factory: Callable[[], Deps],
    store_opener: Callable[[], BaseStore],
    context: Context,
    versions: Versions,
    batch_size: int,
    actors: int = 1,
) -> Iterator[list[str]]:
    """Compute and store ``users`` on Ray; yields the ids of each finished batch.

    ``deps_factory`` and ``store_opener`` are pickled to the actors (module-level functions or
    ``functools.partial`` of them).
    """
    ray = _init_ray()
    dataset = ray.data.from_items([{"user_id": u} for u in users])
    done = dataset.map_batches(
        PrecomputeActor,
        fn_constructor_kwargs={
            "deps_factory": deps_factory,
            "store_opener": store_opener,
            "context": context,
            "versions": versions,
            "batch_size": batch_size,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=actors,
    )
    for batch in done.iter_batches(batch_size=None, batch_format="numpy"):
        yield [str(u) for u in batch["user_id"]]
