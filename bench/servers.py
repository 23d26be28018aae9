"""The two servers against the embedded defaults (figures go in the README, "Where things live").

    python -m bench.servers [--parts ingest,memory,concurrent] [--runs 32] \
        [--out bench/results/servers.json]

Starts a throwaway PostgreSQL cluster and a ``chroma run`` server on free loopback ports (the
helpers of ``bench/throwaway_servers.py``, which the integration tests use too; PostgreSQL 15
binaries and the ``postgres`` extra are needed), then measures:

1. ``queryagent ingest`` of the bundled data set (4,385 products, 8,442 shoppers) into a fresh
   home, embedded (local Chroma + SQLite) and then into the two servers
   (``QUERYAGENT_CHROMA_HOST`` + ``QUERYAGENT_STORE_URL``), wall clock of the whole command.
2. ``--runs`` concurrent graph runs (threads, one store object) against the SQLite memory and
   against the PostgreSQL one: each run writes a new shopper's purchases and runs the graph
   (scripted drafter, the ingested catalog), which reads them and caches the profile. Wall time,
   and every write checked afterwards (events seq 0..n-1 each once, registry count, one profile).

Expected on this project's 2-core x86_64 CPU VM: see the README; timings are wall clock, so name
the machine next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.catalog import ChromaCatalog
from agent.context import Context
from agent.ranking import fit_served, load_served
from agent.search import DenseSearch
from bench import machine
from bench.throwaway_servers import ChromaServer, PostgresCluster
from graphs.cli import BUNDLED_DATA
from graphs.cli import main as cli_main
from graphs.query_agent import Deps, build_graph
from memory_store import (
    PROFILES_NAMESPACE,
    UserMemory,
    build_profile,
    events_from_sequence,
    events_namespace,
    load_dataset,
    open_store,
)


@contextmanager
def environment(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def timed_ingest(home: Path) -> float:
    t0 = time.perf_counter()
    assert cli_main(["ingest", "--home", str(home)]) == 0
    return round(time.perf_counter() - t0, 1)


def concurrent_runs(
    store: Any, catalog: Any, ranking: Any, items: list[str], runs: int
) -> dict[str, Any]:
    """``runs`` threads: write a new shopper (purchases among ``items``), run the graph for it;
    then check every write."""
    dataset = load_dataset(BUNDLED_DATA)
    wanted = {
        f"BENCH{i:03d}": events_from_sequence(
            f"BENCH{i:03d}", [items[(i * 7 + k * 13) % len(items)] for k in range(3 + i % 8)],
            dataset.products,
        )
        for i in range(runs)
    }  # fmt: skip
    # No drafter: recall and the check alone, so the figure is the store's and not the LM's.
    graph = build_graph(Deps(drafter=None, catalog=catalog, ranking=ranking)).compile(store=store)

    def one(user: str) -> dict[str, Any]:
        UserMemory(store).add_events(wanted[user])
        return graph.invoke({"user_id": user}, context=Context(max_refinements=1))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=runs) as pool:
        outputs = list(pool.map(one, wanted))
    wall = time.perf_counter() - t0

    memory, checked = UserMemory(store), 0
    for (user, events), out in zip(wanted.items(), outputs, strict=True):
        assert out["user_id"] == user and out["query"]
        assert memory.n_events(user) == len(events)
        keys = sorted(i.key for i in store.search(events_namespace(user), limit=1000))
        assert keys == [f"{s:08d}" for s in range(len(events))]
        assert memory.events(user) == events
        assert store.get(PROFILES_NAMESPACE, f"{user}@{len(events)}") is not None
        assert memory.profile(user) == build_profile(user, events)
        checked += len(events) + 2  # the events, the registry entry, the cached profile
    return {"runs": runs, "wall_s": round(wall, 2), "writes_checked": checked}


def memory_ingest(store: Any) -> float:
    dataset = load_dataset(BUNDLED_DATA)
    t0 = time.perf_counter()
    UserMemory(store).ingest_dataset(dataset, progress=False)
    return round(time.perf_counter() - t0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="ingest,memory,concurrent")
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench/results/servers.json"))
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"ingest", "memory", "concurrent"}:
        raise SystemExit(f"bench.servers: unknown part in --parts {args.parts!r}")
    for helper in (PostgresCluster, ChromaServer):
        reason = helper.skip_reason()
        if reason:
            raise SystemExit(f"bench.servers: {reason}")

    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    result["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="qa-bench-servers-") as tmp:
        embedded_home = Path(tmp) / "embedded"
        with PostgresCluster() as pg, ChromaServer() as chroma:
            if "ingest" in parts:
                result["ingest_embedded_s"] = timed_ingest(embedded_home)
                with environment(QUERYAGENT_STORE_URL=pg.url, **chroma.env):
                    result["ingest_servers_s"] = timed_ingest(Path(tmp) / "servers")
            if "memory" in parts:
                sqlite = open_store(url=f"sqlite:///{Path(tmp) / 'memory-only.sqlite'}")
                result["memory_ingest_sqlite_s"] = memory_ingest(sqlite)
                postgres = open_store(url=pg.create_database("memory_only"))
                result["memory_ingest_postgres_s"] = memory_ingest(postgres)
                postgres.conn.close()  # type: ignore[attr-defined]
            if "concurrent" in parts:
                catalog = ChromaCatalog(home=embedded_home)  # the same catalog for both stores
                if catalog.count() == 0:  # no ingest part: a slice of the catalog is enough
                    dataset = load_dataset(BUNDLED_DATA)
                    products = dict(list(dataset.products.items())[:256])
                    catalog.upsert(products.values(), progress=False)
                    sequences = {
                        u: [i for i in s if i in products] for u, s in dataset.sequences.items()
                    }
                    fit_served(products, sequences, DenseSearch(catalog), catalog, embedded_home)
                ranking = load_served(embedded_home)
                in_catalog = sorted(catalog.get(sorted(load_dataset(BUNDLED_DATA).products)))
                sqlite = open_store(url=f"sqlite:///{embedded_home / 'memory.sqlite'}")
                result["concurrent_sqlite"] = concurrent_runs(
                    sqlite, catalog, ranking, in_catalog, args.runs
                )
                postgres = open_store(url=pg.create_database("concurrent"))
                result["concurrent_postgres"] = concurrent_runs(
                    postgres, catalog, ranking, in_catalog, args.runs
                )
                postgres.conn.close()  # type: ignore[attr-defined]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
