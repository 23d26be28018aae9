"""Fit everything the check learns from one catalog's sequences, and load it back.

``fit_catalog`` runs at ``queryagent ingest`` (and in the evaluation, on the training part of the
folder it evaluates), so a catalog the project never saw works without a training run:

1. the vocabulary (item -> category query) and what each query retrieves from the catalog;
2. stage A, for the ranker's training rows: each shopper's last purchase is held out; the
   transitions and the next-item model are fitted on the purchases before it, and the rows'
   features come from those (leave-one-out: no event at or after a row's target is seen);
3. the ranker (LightGBM lambdarank) on those rows;
4. stage B, for serving: transitions and the next-item model refitted on whole sequences.

Everything is written to one folder with a ``meta.json`` (data fingerprint, sizes, times, ranker
feature importance, threads). ``CatalogModels.load(folder)`` gives the check what it needs. With
``progress``, each step prints a bar or its time (a fresh ``queryagent ingest`` spends minutes
here); threads: ``agent.ranking.threads``.

Over 400 lines on purpose: the fitted models (``CatalogModels``) and the one function that fits
them are kept side by side, since every field ``fit_catalog`` stores is one ``load`` reads back.

    queryagent ingest --data DIR --home /tmp/qa   # fits them (agent.ranking.fit_served)
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from agent.prompts import grounded_messages
from agent.ranking.blend import ModelWeight, fit_weight
from agent.ranking.candidates import Candidate, RecallConfig, recall
from agent.ranking.features import FEATURES, candidate_features
from agent.ranking.nextitem import NextItemConfig, NextItemModel
from agent.ranking.ranker import Ranker, RankerConfig
from agent.ranking.threads import lightgbm_threads, torch_threads
from agent.ranking.vocabulary import QueryVocabulary
from agent.records import RetrievedProduct
from memory_store.events import events_from_sequence
from memory_store.files import atomic_folder, atomic_write
from memory_store.fingerprint import data_fingerprint
from memory_store.products import Product
from memory_store.profile import build_profile
from memory_store.queries import catalog_queries

__all__ = [
    "CatalogModels",
    "FitConfig",
    "data_fingerprint",
    "fit_catalog",
    "fit_key",
    "relevance",
]

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
HOLDOUT_FILE = "holdout.json"  # the held-out rows (see FitConfig.holdout_rows)
WEIGHTS_FILE = "model-weights.json"  # model digest -> its learned weight on this catalog
# Shoppers whose next-item probabilities are kept (concurrent graph runs of one batch each ask
# two or three times for their own).
RECENT_HISTORIES = 64
NEXTITEM_DIR = "nextitem"


class SearchMany(Protocol):
    """``Catalog.search_many``: products per query; ``exact`` scores every product."""

    def __call__(
        self, queries: list[str], k: int, *, exact: bool = ...
    ) -> list[list[RetrievedProduct]]: ...


# item ids -> their text vectors, one row each (zeros for an id without one)
ItemVectors = Callable[[Sequence[str]], np.ndarray]
# (prompt messages, candidate queries) -> the model's log-probability of each query
LogprobScorer = Callable[[list[dict[str, str]], list[str]], Sequence[float]]


@dataclass(frozen=True)
class FitConfig:
    """What ``fit_catalog`` fits and how long it may take."""

    retrieve_k: int = 10  # products retrieved per query (the evaluation's top 10)
    # Exact retrieval (``Catalog.search_many(exact=True)``) so the fit is the same in every home:
    # the approximate index's top 10 differed for 2 of 756 queries between two fresh homes, and
    # the fitted ranker with them (a held-out relevance of 0.217 to 0.247 across four homes).
    exact_retrieval: bool = True
    # The next-item model, its item embeddings started from the catalog's text vectors
    # (``item_vectors``). bench/next_item.py (bench/results/next_item.json), bundled valid split,
    # one torch thread of a shared 2-core VM: 20 epochs at batch 128, lr 5e-3, and a 2-epoch
    # refit reach HR@10 0.127, NDCG@10 0.066 in 90 s (load average 4.5-6.6), against 0.0995 /
    # 0.059 in 1,341 s (load 7.5-8.5) for the schedule before (random start, batch 32, lr 2e-3,
    # 40 + 5 epochs, every batch padded to 50 items). 10 epochs: 0.117 in 80 s (load 8); dim 128:
    # 0.126 in 125 s. The schedule needs the text start: from a random one, 0.057 (20 + 2 epochs).
    nextitem: NextItemConfig = field(
        default_factory=lambda: NextItemConfig(epochs=20, batch_size=128, lr=5e-3)
    )
    refit_for_serving: bool = True  # stage B; False serves with the stage-A model
    refit_epochs: int = 2  # stage B starts from the stage-A weights
    max_rows: int = 10_000  # ranker training rows (shoppers), a seeded sample beyond that
    recall: RecallConfig = field(default_factory=RecallConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    # Ranker rows held out of its fit, kept with their prompts, candidates and ranker scores:
    # a served language model's weight in the check is learned on them (``agent.ranking.blend``).
    holdout_rows: int = 300
    seed: int = 0


def fit_key(
    products: Mapping[str, Product], sequences: Mapping[str, Sequence[str]], search: str = "dense"
) -> str:
    """What a fit depends on: the data's fingerprint, the fitting configuration and the search
    whose results it learns from (``search``: ``"dense"``, or the fused search's name and key;
    the dense search keeps the digest it always had)."""
    config = json.dumps(asdict(FitConfig()), sort_keys=True, default=str)
    suffix = "" if search == "dense" else f":search={search}"
    return hashlib.sha256(
        (data_fingerprint(products, sequences) + config + suffix).encode()
    ).hexdigest()[:16]


def relevance(query: str, truth: str | None, target: str, retrieved: Sequence[str]) -> int:
    """0; 1 for the real next query (Q_EM); 3 when it also retrieves the real next item."""
    if truth is None or query != truth:
        return 0
    return 3 if target in retrieved else 1


class CatalogModels:
    """The fitted vocabulary, next-item model and ranker of one catalog."""

    def __init__(
        self,
        vocab: QueryVocabulary,
        nextitem: NextItemModel | None,
        ranker: Ranker | None,
        meta: dict[str, object] | None = None,
        holdout: list[dict[str, object]] | None = None,
        folder: Path | None = None,
    ) -> None:
        self.vocab = vocab
        self.nextitem = nextitem
        self.ranker = ranker
        self.meta = meta or {}
        # Held-out rows: {"user_id", "messages", "queries", "raw", "labels"} (FitConfig).
        self.holdout = holdout or []
        self.folder = folder  # where it was loaded from (learned model weights are kept there)
        self.model_weights: dict[str, ModelWeight] = {}
        self._weights_lock = threading.Lock()
        self.item_ids = nextitem.item_ids if nextitem else sorted(vocab.item_query)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self._recent: dict[tuple[str, ...], np.ndarray | None] = {}  # oldest first
        self._recent_lock = threading.Lock()

    # ----------------------------------------------------------------- scoring

    def next_item_probs(self, histories: Sequence[Sequence[str]]) -> list[np.ndarray | None]:
        """Next-item probabilities per history (None for an empty one). A single history's
        are kept for the next calls (a graph run's recall and each of its checks ask for the
        same shopper's)."""
        if self.nextitem is None:
            return [None] * len(histories)
        if len(histories) == 1:
            key = tuple(histories[0])
            with self._recent_lock:
                if key in self._recent:
                    return [self._recent[key]]
        probs = self.nextitem.predict(histories)
        out = [probs[i] if histories[i] else None for i in range(len(histories))]
        if len(histories) == 1:
            with self._recent_lock:
                self._recent[key] = out[0]
                while len(self._recent) > RECENT_HISTORIES:
                    self._recent.pop(next(iter(self._recent)))
        return out

    def recall(
        self,
        history: Sequence[str],
        probs: np.ndarray | None,
        *,
        model_queries: Sequence[str] = (),
        config: RecallConfig | None = None,
    ) -> list[Candidate]:
        return recall(
            self.vocab, history, probs, self.item_ids, config, model_queries=model_queries
        )

    def features(
        self, history: Sequence[str], queries: Sequence[str], probs: np.ndarray | None
    ) -> np.ndarray:
        return candidate_features(self.vocab, history, queries, probs, self.item_index)

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw ranking scores and calibrated fit probabilities of candidate features ``x``.

        Without a fitted ranker (a catalog too small to fit one) the next-item mass on the
        query's products (``mass_hit``) is both the score and the fit.
        """
        if self.ranker is None:
            mass = x[:, FEATURES.index("mass_hit")] if len(x) else np.zeros(0)
            # A float32 sum of every product's probability can round to just above 1.
            return mass, np.clip(mass, 0.0, 1.0)
        return self.ranker.score(x), self.ranker.fit_probability(x)

    @property
    def threshold(self) -> float:
        return self.ranker.threshold if self.ranker is not None else 0.0

    def model_weight(
        self, model: str, scorer: LogprobScorer, *, progress: bool = True
    ) -> ModelWeight:
        """The learned weight of the model whose digest is ``model`` in this catalog's check
        (``agent.ranking.blend``): stored, or learned now on the held-out rows, with ``scorer``
        giving the model's log-probabilities of a row's candidate queries after its prompt,
        and stored beside the models. ``progress``: a bar over the rows the model scores."""
        with self._weights_lock:
            if model in self.model_weights:
                return self.model_weights[model]
            rows = [r for r in self.holdout if r["queries"]]
            if self.ranker is None or not rows:
                learned = ModelWeight(model, 0.0, 0, {})
            else:
                # A row whose candidates are all irrelevant (labels all 0) has a top candidate of
                # relevance 0 at every weight: it counts in the means but never wins or loses,
                # whatever the model says, so the model is not run on it (zeros stand in).
                asked = [r for r in rows if any(r["labels"])]  # type: ignore[arg-type]
                logger.warning(
                    "learning the model's weight in the check on %d held-out rows of this "
                    "catalog, the model scoring the %d with a relevant candidate (once per "
                    "model; about a second a row on a CPU)",
                    len(rows),
                    len(asked),
                )
                t = time.perf_counter()
                scored = []
                with tqdm(
                    total=len(asked), desc="model weight", unit="row", disable=not progress
                ) as bar:
                    for r in rows:
                        if any(r["labels"]):  # type: ignore[arg-type]
                            logprobs = scorer(r["messages"], r["queries"])  # type: ignore[arg-type]
                            bar.update()
                        else:
                            logprobs = [0.0] * len(r["queries"])  # type: ignore[arg-type]
                        scored.append((r["raw"], logprobs, r["labels"]))
                learned = fit_weight(model, scored)  # type: ignore[arg-type]
                logger.warning("model %s; %.0f s", learned.describe(), time.perf_counter() - t)
            self.model_weights[model] = learned
            if self.folder is not None:
                data = {k: v.to_json() for k, v in self.model_weights.items()}
                atomic_write(self.folder / WEIGHTS_FILE, json.dumps(data, indent=2))
            return learned

    # ----------------------------------------------------------------- persistence

    def save(self, folder: Path) -> None:
        """Write to ``folder`` atomically (``memory_store.files.atomic_folder``)."""
        with atomic_folder(folder) as tmp:
            self.vocab.save(tmp)
            if self.nextitem is not None:
                self.nextitem.save(tmp / NEXTITEM_DIR)
            if self.ranker is not None:
                self.ranker.save(tmp)
            (tmp / HOLDOUT_FILE).write_text(json.dumps(self.holdout))
            (tmp / META_FILE).write_text(json.dumps(self.meta, indent=2, default=str))
        self.folder = Path(folder)
        self.model_weights = {}  # learned against the ranker just written

    @classmethod
    def load(cls, folder: Path) -> CatalogModels:
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"no fitted catalog models in {folder}")
        vocab = QueryVocabulary.load(folder)
        nextitem = (
            NextItemModel.load(folder / NEXTITEM_DIR) if (folder / NEXTITEM_DIR).is_dir() else None
        )
        ranker = Ranker.load(folder) if Ranker.exists(folder) else None
        holdout_file = folder / HOLDOUT_FILE
        holdout = json.loads(holdout_file.read_text()) if holdout_file.is_file() else []
        meta = json.loads((folder / META_FILE).read_text())
        models = cls(vocab, nextitem, ranker, meta, holdout, folder)
        weights_file = folder / WEIGHTS_FILE
        if weights_file.is_file():
            models.model_weights = {
                k: ModelWeight.from_json(v) for k, v in json.loads(weights_file.read_text()).items()
            }
        return models

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / META_FILE).is_file()


def ranker_rows(
    models: CatalogModels,
    rows: Sequence[tuple[Sequence[str], str]],
    config: FitConfig,
    *,
    progress: bool = False,
    desc: str = "ranker rows",
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[Candidate]]]:
    """Features and relevance of each (history, target) row's recalled candidates."""
    probs = models.next_item_probs([h for h, _ in rows])
    groups, labels, cands = [], [], []
    for (history, target), p in tqdm(
        zip(rows, probs, strict=True), desc=desc, total=len(rows), unit="row", disable=not progress
    ):
        truth = models.vocab.query_of(target)
        candidates = models.recall(history, p, config=config.recall)
        queries = [c.query for c in candidates]
        groups.append(models.features(history, queries, p))
        labels.append(
            np.array(
                [relevance(q, truth, target, models.vocab.retrieved.get(q, [])) for q in queries]
            )
        )
        cands.append(candidates)
    return groups, labels, cands


@contextmanager
def _step(what: str, timings: dict[str, float], key: str, progress: bool) -> Iterator[None]:
    """Time one step of the fit into ``timings[key]``; with ``progress``, print its time (the
    steps without a bar of their own say how long they took)."""
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t
    if progress:
        print(f"fit: {what}: {timings[key]:.1f} s", file=sys.stderr, flush=True)


def fit_catalog(
    products: Mapping[str, Product],
    sequences: Mapping[str, Sequence[str]],
    search_many: SearchMany,
    config: FitConfig | None = None,
    *,
    progress: bool = False,
    item_vectors: ItemVectors | None = None,
) -> CatalogModels:
    """Fit the vocabulary, next-item model and ranker of one catalog (see the module doc).

    Args:
        products: the catalog.
        sequences: user -> purchased item ids, oldest first: only what may be learned from (the
            evaluation passes sequences cut before the items it evaluates).
        search_many: ``(queries, k) -> products per query`` from the served catalog (for
            instance ``ChromaCatalog.search_many``).
        progress: a bar or a time line for each step.
        item_vectors: the catalog's text vectors of the given item ids (for instance
            ``agent.search.CatalogDenseScorer(catalog).item_matrix``): the next-item model's item
            embeddings start from them (``NextItemModel.fit``); None: a random start.
    """
    with torch_threads() as threads:
        models = _fit_catalog(
            products, sequences, search_many, config, progress=progress, item_vectors=item_vectors
        )
    models.meta["threads"] = {"torch": threads, "lightgbm": lightgbm_threads()}
    return models


def _fit_catalog(
    products: Mapping[str, Product],
    sequences: Mapping[str, Sequence[str]],
    search_many: SearchMany,
    config: FitConfig | None,
    *,
    progress: bool,
    item_vectors: ItemVectors | None = None,
) -> CatalogModels:
    cfg = config or FitConfig()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with _step("what each catalog query retrieves", timings, "retrieval_s", progress):
        item_query = catalog_queries(products)
        queries = sorted(set(item_query.values()))
        found = search_many(queries, cfg.retrieve_k, exact=cfg.exact_retrieval)
        retrieved = {
            q: [p.model_dump(mode="json") for p in ps] for q, ps in zip(queries, found, strict=True)
        }
    items = sorted(products)

    # Stage A: hold out each shopper's last purchase for the ranker's rows.
    cut = {u: list(s[:-1]) for u, s in sequences.items() if len(s) >= 2}
    users = [u for u in sorted(cut) if sequences[u][-1] in item_query]
    rng = np.random.default_rng(cfg.seed)
    if len(users) > cfg.max_rows:
        users = [users[i] for i in sorted(rng.choice(len(users), cfg.max_rows, replace=False))]
    # Rows held out of the ranker's fit for learning a language model's weight (at most a fifth).
    n_hold = min(cfg.holdout_rows, len(users) // 5)
    held = set(rng.choice(len(users), n_hold, replace=False).tolist()) if n_hold else set()
    held_users = [u for i, u in enumerate(users) if i in held]
    users = [u for i, u in enumerate(users) if i not in held]
    rows = [(cut[u], sequences[u][-1]) for u in users]
    nextitem_cfg = replace(cfg.nextitem, seed=cfg.seed)
    with _step("next-item model (stage A)", timings, "nextitem_a_s", progress):
        vectors = item_vectors(items) if item_vectors is not None and cut else None
        if vectors is None and cut:
            logger.warning(
                "no text vectors for the next-item model: it starts at random, and "
                "FitConfig.nextitem's schedule is sized for a start from them (fit_catalog's "
                "item_vectors)"
            )
        model_a = (
            NextItemModel.fit(cut, items, nextitem_cfg, item_vectors=vectors, progress=progress)
            if cut
            else None
        )
    stage_a = CatalogModels(
        QueryVocabulary.build(item_query, cut.values(), retrieved), model_a, None
    )
    with _step("ranker", timings, "ranker_s", progress):
        groups, labels, _ = ranker_rows(stage_a, rows, cfg, progress=progress)
        n_pos = int(sum((y >= 3).any() for y in labels))
        ranker = (
            Ranker.fit(groups, labels, FEATURES, cfg.ranker, progress=progress)
            if n_pos >= 5 and len(rows) >= 50
            else None
        )
        if ranker is None:
            logger.warning(
                "too few training rows to fit the ranker (%d rows, %d with a hit); the check "
                "uses the next-item mass alone",
                len(rows),
                n_pos,
            )
        holdout: list[dict[str, object]] = []
        if ranker is not None and held_users:
            h_rows = [(cut[u], sequences[u][-1]) for u in held_users]
            h_groups, h_labels, h_cands = ranker_rows(
                stage_a, h_rows, cfg, progress=progress, desc="held-out rows"
            )
            for u, x, y, cands in zip(held_users, h_groups, h_labels, h_cands, strict=True):
                profile = build_profile(u, events_from_sequence(u, cut[u], products))
                holdout.append(
                    {
                        "user_id": u,
                        "messages": grounded_messages(profile),
                        "queries": [c.query for c in cands],
                        "raw": [round(float(v), 6) for v in ranker.score(x)],
                        "labels": [int(v) for v in y],
                    }
                )

    # Stage B: serve with everything.
    with _step("next-item model (stage B, for serving)", timings, "nextitem_b_s", progress):
        if cfg.refit_for_serving and model_a is not None:
            model_b: NextItemModel | None = NextItemModel.fit(
                {u: list(s) for u, s in sequences.items()},
                items,
                replace(nextitem_cfg, epochs=cfg.refit_epochs),
                init=model_a,
                progress=progress,
            )
        else:
            model_b = model_a
    vocab = QueryVocabulary.build(item_query, sequences.values(), retrieved)
    timings = {k: round(v, 1) for k, v in timings.items()}
    meta: dict[str, object] = {
        "made_by": "agent.ranking.fit.fit_catalog",
        "fingerprint": data_fingerprint(products, sequences),
        "key": fit_key(products, sequences) if config is None else None,
        "products": len(products),
        "shoppers": len(sequences),
        "queries": len(queries),
        "ranker_rows": len(rows),
        "holdout_rows": len(holdout),
        "ranker_rows_with_hit": n_pos,
        "config": asdict(cfg),
        "nextitem_text_init": vectors is not None,
        "seconds": round(time.perf_counter() - started, 1),
        "timings": timings,
        "importance": ranker.importance() if ranker else {},
        "threshold": ranker.threshold if ranker else None,
    }
    return CatalogModels(vocab, model_b, ranker, meta, holdout)
