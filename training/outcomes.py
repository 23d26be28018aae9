"""Outcomes: each logged run joined with what the shopper bought after it.

    queryagent-train outcomes --from-trajectories runs.jsonl [--home DIR] --out joined.jsonl \
        [--replay-model M ...] [--replay-limit N] [--replay-out FILE]

A live run (``queryagent recommend --log``, ``queryagent precompute --log``) has no target: what
the shopper buys next is only known later. Its record keeps what its memory held
(``run.memory``: the number of events, a digest of them, the time of the last one) and the
catalog it ran on (``run.catalog``: version and ingest generation), written by
``graphs.record.run_stamp``. Once newer events are in the store (``queryagent events add``,
or ``queryagent ingest`` of a folder that extends the sequences), the run's **outcome** is the
shopper's first purchase recorded after it: the first purchase beyond the events its memory held
(by position) and, where events carry times, not before the run started (by time). The outcome
becomes the record's ``target`` (the item, its title, and its ground-truth query: the category
path minus the taxonomy root, ``memory_store.queries.ground_truth_query``) and ``run.outcome``,
so the reward terms (``training.rewards``) score the logged run, and GRPO's rollouts from it,
against what really happened: the item term (was the purchase among the products the recommended
query retrieved) and the query term (the outcome's ground-truth query).

Runs are skipped, and counted, when the shopper has no later purchase yet, when the shopper's
memory was rebuilt in between (its first events no longer digest as the run's did: position no
longer says what came after), when the shopper is no longer in the store, or when the record has
neither a target nor a memory stamp (logged before stamps existed). A record that already has a
target (exported from a data split) is kept as it is. A run logged on another catalog version
than the store's is refused (``OutcomeError``): its retrieved products are another catalog's.

The live metrics of the joined runs are the online counterparts of the evaluation's I_Hit@10
and Q_EM (Cons@10 is both): the share whose later purchase was among the retrieved products, and
the share whose recommended query was the purchase's category query, each with its 95%
bootstrap interval (``training.evaluation.metrics.aggregate``). ``--replay-model`` runs the same
shoppers again at the memory each run held, with another drafter on the same store, catalog and
fitted models, and reports the same figures: a before/after comparison of a retrained model on
the shoppers it was retrained from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import bootstrap
from tqdm.auto import tqdm

from agent.catalog import ChromaCatalog
from agent.context import Context
from agent.drafting import HFDrafter
from agent.drafting.constrained import GroundedHFDrafter
from agent.ranking import load_served
from graphs.offline.ingest import catalog_stats
from graphs.offline.runner import OfflineRunner
from graphs.record import Target, TrajectoryRecord, load_trajectories
from memory_store import DataError, UserMemory, events_digest, load_dataset, open_store
from memory_store.queries import common_root, ground_truth_query, normalize_query
from training.common import TrainingError

__all__ = [
    "JoinResult",
    "OutcomeError",
    "check_outcome_paths",
    "join_outcomes",
    "live_metrics",
    "load_joined",
    "query_root",
]

HIT_K = 10  # the evaluation's I_Hit@10 cut-off, and the graph's default retrieval depth


class OutcomeError(TrainingError):
    """Logged runs that cannot be joined with this store (one line for the CLI)."""


def check_outcome_paths(
    runs: str | os.PathLike[str], out: str | os.PathLike[str], home: str | os.PathLike[str] | None
) -> None:
    """Refuse an ``outcomes`` command that would lose what it reads, before anything is read.

    ``--out`` naming the logged runs (or a link to them) would overwrite them with the joined
    ones only, losing the runs still waiting for a purchase; a ``--home`` that does not exist
    would be created empty (``open_store``) and join nothing.

    Raises:
        OutcomeError: one line naming the flag.
    """
    runs_path, out_path = Path(runs), Path(out)
    same = runs_path.resolve() == out_path.resolve()
    if not same and runs_path.exists() and out_path.exists():
        same = os.path.samefile(runs_path, out_path)
    if same:
        raise OutcomeError(
            f"--out {out_path} is the --from-trajectories file: the joined records would "
            "replace the logged runs (and lose those still waiting for a purchase); write "
            "them to another file"
        )
    if home is not None and not Path(home).is_dir():
        raise OutcomeError(f"--home {home}: no such folder; give the home the runs were logged on")


@dataclass
class JoinResult:
    """The joined records (input order) and what was skipped, by reason."""

    records: list[TrajectoryRecord] = field(default_factory=list)
    total: int = 0
    had_target: int = 0
    no_later: int = 0
    rebuilt: int = 0
    unknown_user: int = 0
    unstamped: int = 0

    @property
    def joined(self) -> int:
        """Runs given an outcome by this join (not counting those that had a target)."""
        return len(self.records) - self.had_target

    def summary(self) -> list[str]:
        """The lines ``queryagent-train outcomes`` prints about the join."""
        lines = [
            f"{self.joined} of {self.total} runs joined with the shopper's next purchase"
            + (f" ({self.had_target} already had a target, kept)" if self.had_target else "")
        ]
        if self.no_later:
            lines.append(
                f"{self.no_later} of {self.total} runs have no later purchase yet; skipped"
            )
        if self.rebuilt:
            lines.append(
                f"{self.rebuilt} of {self.total} runs skipped: the shopper's memory was rebuilt "
                "since (its first events are not the ones the run held)"
            )
        if self.unknown_user:
            lines.append(
                f"{self.unknown_user} of {self.total} runs skipped: the shopper is not in the store"
            )
        if self.unstamped:
            lines.append(
                f"{self.unstamped} of {self.total} runs skipped: no target and no memory stamp "
                "(logged before runs recorded their memory; log them again)"
            )
        return lines


def query_root(store: Any) -> str:
    """The taxonomy root the served catalog's ground-truth queries drop (from its last ingest).

    Raises:
        OutcomeError: the store was never ingested, or by a version that did not record it and
            whose data folder is gone.
    """
    stats = catalog_stats(store)
    if "query_root" in stats:
        return str(stats["query_root"])
    if not stats.get("data"):
        raise OutcomeError("the store holds no ingested catalog: run `queryagent ingest` first")
    try:  # a home ingested before the root was recorded: the folder it was ingested from
        dataset = load_dataset(stats["data"])
    except DataError as err:
        raise OutcomeError(
            f"cannot find the catalog's category root ({err}); run `queryagent ingest` again"
        ) from None
    return common_root(p.category for p in dataset.products.values())


def _stamp(record: TrajectoryRecord) -> Mapping[str, Any] | None:
    memory = record.run.get("memory")
    return memory if isinstance(memory, Mapping) and "n_events" in memory else None


def _check_catalog(records: Sequence[TrajectoryRecord], store: Any) -> None:
    current = catalog_stats(store).get("catalog_version")
    versions = [
        (r.run.get("catalog") or {}).get("version")
        for r in records
        if r.target is None and _stamp(r) is not None
    ]
    other = [v for v in versions if v != current]
    if other:
        raise OutcomeError(
            f"{len(other)} of {len(records)} runs were logged on catalog version {other[0]!r}, "
            f"but the store serves {current!r}: join them against the home they were logged on "
            "(--home), or log them again"
        )


def _created(record: TrajectoryRecord) -> float | None:
    try:
        return datetime.fromisoformat(record.created).timestamp()
    except ValueError:
        return None


def join_outcomes(records: Iterable[TrajectoryRecord], store: Any) -> JoinResult:
    """Give each logged run its outcome from the store's events (see the module docstring).

    Args:
        records: logged runs (``load_trajectories``), any mix of live and exported ones.
        store: the memory's store, holding the events recorded since the runs.

    Returns:
        The joined records (those with an outcome, and those that had a target), in input order,
        and the counts of the skipped ones.

    Raises:
        OutcomeError: a live run was logged on another catalog version than the store's.
    """
    records = list(records)
    _check_catalog(records, store)
    result = JoinResult(total=len(records))
    memory = UserMemory(store)
    root: str | None = None
    histories: dict[str, list[Any] | None] = {}  # None: the shopper is not in the store
    for record in records:
        if record.target is not None:
            result.records.append(record)
            result.had_target += 1
            continue
        stamp = _stamp(record)
        if stamp is None:
            result.unstamped += 1
            continue
        if record.user_id not in histories:
            known = memory.known(record.user_id)
            histories[record.user_id] = memory.events(record.user_id) if known else None
        events = histories[record.user_id]
        if events is None:
            result.unknown_user += 1
            continue
        held = int(stamp["n_events"])
        if len(events) < held or events_digest(events[:held]) != stamp.get("digest"):
            result.rebuilt += 1
            continue
        started = _created(record)
        later = [
            e
            for e in events[held:]
            if e.kind == "purchase"
            # by time, where events carry times: a purchase made before the run started was not
            # something the run could have led to, even if it reached the store after it
            and (e.timestamp is None or started is None or e.timestamp >= started)
        ]
        if not later:
            result.no_later += 1
            continue
        outcome = later[0]
        if root is None:
            root = query_root(store)
        target = Target(
            item_id=outcome.item_id,
            title=outcome.title,
            query=ground_truth_query(outcome.category, root),
        )
        run = {
            **record.run,
            "outcome": {"seq": outcome.seq, "timestamp": outcome.timestamp, "after": held},
        }
        result.records.append(record.model_copy(update={"target": target, "run": run}))
    return result


def load_joined(
    path: str | os.PathLike[str], home: str | os.PathLike[str] | None, *, prog: str
) -> tuple[list[TrajectoryRecord], bool]:
    """A trajectory file for training, live runs joined with their outcomes.

    Records that all carry a target (exported from a split, or a file this module joined) are
    returned as they are; otherwise the runs are joined in ``home``'s store and what the join
    skipped is printed, one ``{prog}: ...`` line per reason.

    Returns:
        ``(records, live)``: ``live`` when they are live-logged runs (their home is the
        environment rollouts run in).
    """
    records = list(load_trajectories(path))
    live = any(r.target is None for r in records)
    if live:
        joined = join_outcomes(records, open_store(home))
        for line in joined.summary():
            print(f"{prog}: {line}")
        records = joined.records
    return records, live or any("outcome" in r.run for r in records)


# --------------------------------------------------------------------------- live metrics


def _hit(record: TrajectoryRecord, k: int = HIT_K) -> float:
    assert record.target is not None
    return float(record.target.item_id in record.final.product_ids[:k])


def _query_match(record: TrajectoryRecord) -> float:
    assert record.target is not None
    truth = record.target.query
    query = normalize_query(record.final.query) if record.final.query else ""
    return float(bool(truth) and query == truth)


def live_metrics(records: Sequence[TrajectoryRecord], *, seed: int = 0) -> dict[str, Any]:
    """Shares of joined runs whose later purchase was among the retrieved products (hit@10),
    whose query was the purchase's category query (query match), and both (consistent), each
    ``{"mean", "low", "high"}`` with its 95% percentile-bootstrap interval; plus ``runs``."""
    rows = [r for r in records if r.target is not None]
    out: dict[str, Any] = {"runs": len(rows)}
    rng = np.random.default_rng(seed)
    columns = {
        "hit@10": [_hit(r) for r in rows],
        "query_match": [_query_match(r) for r in rows],
        "consistent@10": [_hit(r) * _query_match(r) for r in rows],
    }
    for name, values in columns.items():
        array = np.array(values, dtype=float)
        mean = float(array.mean()) if len(array) else math.nan
        low = high = mean
        if len(array) > 1 and np.ptp(array) > 0:
            ci = bootstrap(
                (array,),
                np.mean,
                n_resamples=1000,
                confidence_level=0.95,
                method="percentile",
                random_state=rng,
            ).confidence_interval
            low, high = float(ci.low), float(ci.high)
        out[name] = {"mean": mean, "low": low, "high": high}
    return out


def metrics_line(label: str, metrics: Mapping[str, Any]) -> str:
    """One printed line of live metrics."""
    parts = [
        f"{name} {m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
        for name, m in metrics.items()
        if isinstance(m, Mapping)
    ]
    return f"{label} ({metrics['runs']} runs): " + ", ".join(parts)


# --------------------------------------------------------------------------- replay


def replay(
    records: Sequence[TrajectoryRecord],
    model: str,
    home: str | os.PathLike[str] | None,
    *,
    max_refinements: int = 0,
    batch_size: int = 8,
) -> list[TrajectoryRecord]:
    """Run the joined runs' shoppers again, each at the memory the run held, with ``model``.

    Same store, catalog and fitted models as the live runs; each new record keeps the joined
    run's target and outcome, so ``live_metrics`` compares the two.
    """
    home_text = str(home) if home is not None else None
    runner = OfflineRunner(
        store=open_store(home),
        catalog=ChromaCatalog.from_env(home=home),
        drafter=GroundedHFDrafter(HFDrafter(model, home=home_text, batch_size=batch_size)),
        ranking=load_served(home),
        context=Context(max_refinements=max_refinements),
        model=model,
        batch_size=batch_size,
    )
    inputs = [
        {"user_id": r.user_id, "before": int((r.run.get("memory") or {}).get("n_events", 0))}
        for r in records
    ]
    with tqdm(total=len(inputs), desc=f"replay {model}", unit="run") as bar:
        result = runner.run(
            inputs, records=True, targets=[r.target for r in records], on_chunk=bar.update
        )
    return [
        new.model_copy(update={"run": {**new.run, "outcome": old.run.get("outcome")}})
        for new, old in zip(result.records, records, strict=True)
    ]
