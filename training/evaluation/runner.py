"""Offline evaluation: every method writes one query per held-out shopper; the same catalog
retrieval turns each query into a ranked list; the paper's metrics compare them.

``Evaluator`` dispatches each method over the evaluated shoppers (``protocol``) and keys its
results by what they depend on; the per-user cache is ``cache``, the shards ``shards``, the
method names and the run's configuration ``specs``. The names those modules define are
re-exported here, where the CLI, the export and the tests have always found them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agent.catalog import Catalog
from agent.context import Context
from agent.drafting import HFDrafter
from agent.drafting.constrained import GroundedHFDrafter
from agent.drafting.hf import inference_dtype_name
from agent.model_identity import model_digest
from agent.nodes import learned_model_weight
from agent.parsing import parse_query
from agent.prompts import STOP, prompt_fingerprint, writing_fingerprint
from agent.ranking import RANKING_DIR, fit_on_search
from agent.ranking.fit import fit_key
from agent.search import SEARCH_DIR, Search, prepare_search, search_key
from graphs.offline.runner import OfflineRunner, draft_prompt_at, fit_sequences
from memory_store import Dataset, Example
from memory_store.paths import queryagent_home
from training.evaluation.baselines import (
    DenseQuery,
    LastCategory,
    Markov,
    OracleQuery,
    Popular,
    QueryOracle,
    RankerOnly,
    SASRecQuery,
    Swing,
)
from training.evaluation.cache import PARKED_DIR, OutcomeCache, appender
from training.evaluation.metrics import UserOutcome, aggregate, distinct_ratio, score_outcomes
from training.evaluation.protocol import (
    dataset_fingerprint,
    example_position,
    fit_name,
    open_eval_catalog,
    select_examples,
)
from training.evaluation.shards import cached_by_all, shard
from training.evaluation.specs import (
    BASELINES,
    FITTED,
    METHODS,
    MODEL_METHODS,
    RETRIEVE_K,
    EvalConfig,
    EvalError,
    MethodResult,
    MethodSpec,
    parse_methods,
)
from training.queries import common_root

__all__ = [
    "BASELINES",
    "FITTED",
    "METHODS",
    "MODEL_METHODS",
    "PARKED_DIR",
    "RETRIEVE_K",
    "EvalConfig",
    "EvalError",
    "Evaluator",
    "MethodResult",
    "MethodSpec",
    "dataset_fingerprint",
    "example_position",
    "open_eval_catalog",
    "parse_methods",
    "select_examples",
]


class Evaluator:
    """Runs methods on one data set split, caching each method's per-user outcomes."""

    def __init__(
        self,
        dataset: Dataset,
        config: EvalConfig,
        *,
        cache_dir: Path,
        catalog: Catalog | None = None,
        drafter_factory: Callable[[str | None], Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.cache_dir = cache_dir
        self.cache = OutcomeCache(cache_dir)
        self.oracle = QueryOracle(
            dataset, common_root(p.category for p in dataset.products.values())
        )
        self.pairs, self.skipped = select_examples(
            dataset, config.split, config.limit, config.seed, self.oracle
        )
        self.catalog = catalog or open_eval_catalog(dataset, config.home)
        self._drafter_factory = drafter_factory
        self._drafters: dict[str | None, Any] = {}
        self._agent_drafters: dict[str | None, Any] = {}  # _agent_drafter's, per model
        self._baselines: dict[str, Any] = {}
        self._store: Any = None
        self._runners: dict[str | None, Any] = {}  # graphs.offline.runner.OfflineRunner per model
        self._models: Any = None
        self._search: Search | None = None

    # -- the cache key: what a method's results depend on -------------------------------------
    def _cache_key(self, spec: MethodSpec) -> dict[str, Any]:
        model_methods = spec.method in MODEL_METHODS
        key: dict[str, Any] = {
            "method": spec.method,
            "model": spec.model,
            # The model's content, not its path: a folder retrained in place (make train-sft)
            # must not be served the old model's results.
            "model_digest": model_digest(spec.model, self.config.home) if model_methods else None,
            "split": self.config.split,
            "seed": self.config.seed,
            "max_refinements": self.config.max_refinements,
            "data": dataset_fingerprint(self.dataset.products),
            # Model methods depend on the prompt template; baselines do not.
            "prompt": prompt_fingerprint() if spec.method in MODEL_METHODS else None,
            # Methods using the fitted catalog models depend on what was fitted.
            "ranking": self._ranking_key() if spec.method in FITTED else None,
        }
        if self.config.search != "dense":
            # Every method's products come from the search (the dense search's rows keep the
            # keys they had before there was a choice).
            key["search"] = self._search_id()
        if model_methods:
            # ... and on the dtype the model runs in (bfloat16 scores differ from float32's).
            key["dtype"] = inference_dtype_name()
        if spec.method in ("agent", "agent-single-turn") and Context().model_vote:
            # ... and on the model's learned weight in the check (agent.ranking.blend).
            key["model_weight"] = self._model_weight(spec)
        if spec.method in ("agent", "agent-single-turn"):
            # ... and on whether the model drafts and votes (off by default since issue 27).
            key["drafting"] = {"beams": Context().beams, "model_vote": Context().model_vote}
            if self.config.write_query:
                # ... and on the query text's prompts: its products are the text's.
                ctx = Context()
                key["writing"] = {
                    "prompt": writing_fingerprint(),
                    "max_rewrites": ctx.max_rewrites,
                    "text_min_share": ctx.text_min_share,
                }
        return key

    def _model_weight(self, spec: MethodSpec) -> float | None:
        """The weight the check gives this model's vote on the evaluated catalog (learned on
        the fit's held-out rows when not yet stored); None for a drafter that cannot vote."""
        learned = learned_model_weight(self._agent_drafter(spec.model), self.ranking())
        return None if learned is None else learned.weight

    def _agent_drafter(self, model: str | None) -> Any:
        """The drafter as the agent methods run it: a Hugging Face drafter (a model and its
        tokenizer) decodes inside the catalog's query trie; any other (a scripted one in tests)
        drafts freely. One per model."""
        if model not in self._agent_drafters:
            base = self._drafter(model)
            hf = getattr(type(base), "tokenizer", None) is not None
            self._agent_drafters[model] = GroundedHFDrafter(base) if hf else base
        return self._agent_drafters[model]

    # -- the search and the catalog's fitted models, fitted on what precedes the targets -------
    @functools.cached_property
    def _fit_data(self) -> tuple[dict[str, list[str]], str, str]:
        """Every sequence cut before its target in the evaluated split
        (``graphs.offline.runner``), so nothing fitted has seen a target (the fused search's
        popularity prior included); the search's identity (``agent.search.search_id``), known
        before it is fitted; and the key of a ranking fit on them. Computed once: each digests
        the whole data set, and every method's cache key asks for them."""
        sequences = fit_sequences(self.dataset, self.config.split)
        search = self.config.search
        if search != "dense":
            search = f"{search}:{search_key(self.dataset.products.values(), sequences)}"
        return sequences, search, fit_key(self.dataset.products, sequences, search)

    def _search_id(self) -> str:
        return self._fit_data[1]

    def _ranking_key(self) -> str:
        return self._fit_data[2]

    def _fit_name(self) -> str:
        return fit_name(self.dataset, self.config.split, self.config.search)

    def search(self) -> Search:
        """The search every method's products come from (``EvalConfig.search``; the fused one
        fitted on the sequences cut before the split's targets, once, kept in the home)."""
        if self._search is None:
            self._search = prepare_search(
                self.config.search,
                self.catalog,
                self._search_folder(),
                self.dataset.products,
                self._fit_data[0],
            )
        return self._search

    def _search_folder(self) -> Path:
        return queryagent_home(self.config.home) / SEARCH_DIR / self._fit_name()

    def ranking(self) -> Any:
        """The fitted ``CatalogModels`` for this split, fitted on the search's results (once,
        kept in the home)."""
        if self._models is None:
            folder = (
                queryagent_home(self.config.home)
                / RANKING_DIR
                / f"{self._fit_name()}-{self._ranking_key()}"
            )
            # Keyed by ``_search_id`` (known before the search is fitted), which is the fitted
            # search's own ``search_id``.
            self._models, _ = fit_on_search(
                folder,
                self.dataset.products,
                self._fit_data[0],
                self.search(),
                self.catalog,
                search_folder=self._search_folder(),
            )
        return self._models

    def _history(self, ex: Example) -> list[str]:
        return list(self.dataset.sequences[ex.user_id][: self._position(ex)])

    # -- which users run ---------------------------------------------------------------------
    def restrict_to_cached(self, specs: Sequence[MethodSpec]) -> int:
        """Keep only the users every method has cached under this configuration (so ``run``
        reports them and runs nothing): a look at a run that goes on in sittings. Returns the
        split's user count before the cut (``self.pairs`` holds the kept ones); raises EvalError
        when no user is left. Caches made by another configuration are left as they are."""
        total = len(self.pairs)
        cached = (  # lazily: a method without rows stops the look before the next one's key
            (spec.label, set(self.cache.load(spec, self._cache_key(spec), drop_stale=False)))
            for spec in specs
        )
        self.pairs = cached_by_all(self.pairs, cached, self.cache_dir)
        return total

    def restrict_to_shard(self, shard_id: int, shard_num: int) -> int:
        """Keep this shard's users (``training.evaluation.shards.shard``); returns the split's
        user count before the cut."""
        total = len(self.pairs)
        self.pairs = shard(self.pairs, shard_id, shard_num)
        return total

    # -- methods ----------------------------------------------------------------------------
    def run(self, spec: MethodSpec, progress: bool = True) -> MethodResult:
        key = self._cache_key(spec)
        done = self.cache.load(spec, key)
        todo = [(ex, truth) for ex, truth in self.pairs if ex.user_id not in done]
        path = self.cache.path(spec)
        self.cache.start(path, key)
        bar = tqdm(
            total=len(self.pairs),
            initial=len(self.pairs) - len(todo),
            desc=spec.label,
            disable=not progress,
        )
        step = self.config.batch_size if spec.method in MODEL_METHODS else 256
        with appender(path) as append:  # one whole-lines write per batch (shards share the file)
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                outcomes = self._outcomes(spec, chunk)
                append(outcomes)
                for outcome in outcomes:
                    done[outcome.user_id] = outcome
                bar.update(len(chunk))
        bar.close()
        outcomes = [done[ex.user_id] for ex, _ in self.pairs]
        # The time spent writing the queries, summed over users: it survives interruptions and
        # resumes, where this call's wall clock would only count the users it ran.
        result = MethodResult(spec, outcomes, sum(o.latency_s for o in outcomes))
        result.metrics = aggregate(score_outcomes(outcomes), seed=self.config.seed)
        result.distinct_ratio = distinct_ratio(outcomes)
        return result

    def _outcomes(
        self, spec: MethodSpec, chunk: Sequence[tuple[Example, str]]
    ) -> list[UserOutcome]:
        examples = [ex for ex, _ in chunk]
        t0 = time.perf_counter()
        valid: list[bool]
        refinements: list[int]
        texts: list[str | None] = [None] * len(examples)  # a baseline's text is its intent
        if spec.method in BASELINES:
            queries = self._baseline(spec.method)(examples)
            valid, refinements = [True] * len(examples), [0] * len(examples)
        elif spec.method == "llm-direct":
            queries, valid = self._llm_direct(spec.model, examples)
            refinements = [0] * len(examples)
        else:
            queries, valid, refinements, texts = self._agent(spec, examples)
        per_user = (time.perf_counter() - t0) / max(len(examples), 1)
        # The products of the text the shopper sees (the intent's own for a baseline).
        shown = [t if t is not None else (q or "") for q, t in zip(queries, texts, strict=True)]
        retrieved = self.search().search_many(shown, k=RETRIEVE_K)
        return [
            UserOutcome(
                user_id=ex.user_id,
                target=ex.target,
                truth=truth,
                query=q,
                retrieved=[p.item_id for p in r] if (q or t) else [],
                format_valid=v,
                refinements=n,
                latency_s=per_user,
                text=t if t != q else None,
            )
            for (ex, truth), q, t, r, v, n in zip(
                chunk, queries, texts, retrieved, valid, refinements, strict=True
            )
        ]

    def _baseline(self, name: str) -> Any:
        if name not in self._baselines:
            popular = Popular(self.oracle)
            last = LastCategory(self.oracle, popular)
            builders = {
                "oracle-query": lambda: OracleQuery(self.oracle),
                "popular": lambda: popular,
                "last-category": lambda: last,
                "swing": lambda: Swing(self.oracle, last),
                "dense-query": lambda: DenseQuery(self.oracle, self.catalog),
                "markov": lambda: Markov(self.ranking(), self._history),
                "sasrec": lambda: SASRecQuery(self.ranking(), self._history),
                "ranker": lambda: RankerOnly(self.ranking(), self._history),
            }
            self._baselines[name] = builders[name]()
        return self._baselines[name]

    def _drafter(self, model: str | None) -> Any:
        if model not in self._drafters:
            if self._drafter_factory is not None:
                self._drafters[model] = self._drafter_factory(model)
            else:
                self._drafters[model] = HFDrafter(
                    model, home=self.config.home, batch_size=self.config.batch_size
                )
        return self._drafters[model]

    def _position(self, ex: Example) -> int:
        """Where the target sits in the shopper's full sequence: the memory sees items before it.

        Not ``len(ex.history)``: the UniSRec files cap histories at 50 items, while the memory
        holds the whole sequence.
        """
        return example_position(self.dataset, ex, self.config.split)

    def _llm_direct(
        self, model: str | None, examples: Sequence[Example]
    ) -> tuple[list[str | None], list[bool]]:
        prompts = [
            draft_prompt_at(self.dataset, ex.user_id, self._position(ex))[1] for ex in examples
        ]
        ctx = Context(seed=self.config.seed)
        gens = self._drafter(model).generate(
            prompts,
            max_new_tokens=ctx.max_new_tokens,
            temperature=ctx.temperature,
            top_p=ctx.top_p,
            seed=ctx.seed,
            stop=STOP,
        )
        parsed = [parse_query(g.text) for g in gens]
        return [p.query for p in parsed], [p.ok for p in parsed]

    def _agent(
        self, spec: MethodSpec, examples: Sequence[Example]
    ) -> tuple[list[str | None], list[bool], list[int], list[str | None]]:
        """Each shopper's intent, whether it is a real answer, its refinements and the text
        the shopper sees (``agent.writing``)."""
        runner = self._runners.get(spec.model)
        if runner is None:
            common = {
                "catalog": self.catalog,
                "drafter": self._agent_drafter(spec.model),
                "ranking": self.ranking(),
                "search": self.search(),
                "batch_size": self.config.batch_size,
            }
            if self._store is None:  # ingested once (as `queryagent ingest` does), shared
                runner = OfflineRunner.from_dataset(self.dataset, **common)
                self._store = runner.store
            else:
                runner = OfflineRunner(store=self._store, **common)
            self._runners[spec.model] = runner
        refinements = 0 if spec.method == "agent-single-turn" else self.config.max_refinements
        ctx = Context(
            max_refinements=refinements,
            seed=self.config.seed,
            top_k=RETRIEVE_K,
            write_query=self.config.write_query,
        )
        inputs = [{"user_id": ex.user_id, "before": self._position(ex)} for ex in examples]
        outputs = runner.run(inputs, context=ctx).outputs
        return (
            [o.get("query") for o in outputs],
            [o.get("source") not in (None, "fallback") for o in outputs],
            [int(o.get("refinements", 0)) for o in outputs],
            [o.get("query_text") for o in outputs],
        )
