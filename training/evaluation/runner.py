"""Offline evaluation: every method writes one query per held-out shopper; the same catalog
retrieval turns each query into a ranked list; the paper's metrics compare them.

Protocol (leave-one-out, HEM ground-truth queries): the target is the last item of each user in
the test split (second to last in valid); the memory the agent sees is built from the items
before the target only; users whose target has no category are skipped and counted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from tqdm.auto import tqdm

from agent.catalog import Catalog, ChromaCatalog
from agent.context import Context
from agent.parsing import parse_query
from agent.prompts import STOP, prompt_fingerprint
from memory_store import DataError, Dataset, Example, target_position
from memory_store.fingerprint import dataset_fingerprint
from memory_store.paths import private_dir, private_file
from training.evaluation.baselines import (
    DenseQuery,
    LastCategory,
    Markov,
    Popular,
    QueryOracle,
    RankerOnly,
    SASRecQuery,
    Swing,
)
from training.evaluation.metrics import UserOutcome, aggregate, distinct_ratio, score_outcomes
from training.queries import common_root

BASELINES = (
    "popular",
    "last-category",
    "swing",
    "dense-query",
    "markov",
    "sasrec",
    "ranker",
)
# Methods that use the models fitted from the catalog's sequences (agent.ranking).
FITTED = ("markov", "sasrec", "ranker", "agent-single-turn", "agent")
MODEL_METHODS = ("llm-direct", "agent-single-turn", "agent")
METHODS = BASELINES + MODEL_METHODS
RETRIEVE_K = 10


class EvalError(Exception):
    """A user-caused problem with an evaluation request (one line for the CLI)."""


@dataclass(frozen=True)
class MethodSpec:
    """A method, and for model methods the drafter it uses (``agent@path/to/checkpoint``)."""

    method: str
    model: str | None = None

    @property
    def label(self) -> str:
        if self.method in MODEL_METHODS and self.model:
            return f"{self.method}@{Path(self.model).name or self.model}"
        return self.method


def parse_methods(text: str, default_model: str | None = None) -> list[MethodSpec]:
    """``"popular,agent,agent@ckpt/sft"`` -> specs; unknown names list the valid ones."""
    specs = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        method, _, model = raw.partition("@")
        if method not in METHODS:
            raise EvalError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        if model and method not in MODEL_METHODS:
            raise EvalError(f"method {method!r} uses no model, so {raw!r} names none")
        specs.append(
            MethodSpec(method, (model or default_model) if method in MODEL_METHODS else None)
        )
    if not specs:
        raise EvalError(f"no method given; valid methods: {', '.join(METHODS)}")
    return specs


def select_examples(
    dataset: Dataset,
    split: str,
    limit: int | None,
    seed: int,
    oracle: QueryOracle,
    *,
    splits: Sequence[str] = ("valid", "test"),
) -> tuple[list[tuple[Example, str]], int]:
    """The evaluated (example, truth query) pairs and how many were skipped (no category).

    ``splits`` are the accepted split names: evaluation takes the leave-one-out targets only;
    the trajectory export also takes ``"train"`` (every history -> next item row).
    """
    if split not in splits:
        if tuple(splits) == ("valid", "test"):
            raise EvalError(
                f"split must be 'valid' or 'test' (leave-one-out targets), got {split!r}"
            )
        raise EvalError(f"split must be one of {', '.join(splits)}, got {split!r}")
    pairs, skipped = [], 0
    for ex in dataset.examples(split):
        truth = oracle.of_item(ex.target)
        if truth is None:
            skipped += 1
        else:
            pairs.append((ex, truth))
    if limit is not None and limit < len(pairs):
        keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
        pairs = [pairs[i] for i in keep]
    return pairs, skipped


def open_eval_catalog(dataset: Dataset, home: str | Path | None) -> ChromaCatalog:
    """The data set's catalog in its own collection (embedded once, reused by later runs)."""
    collection = f"eval-{dataset.name.lower()}-{dataset_fingerprint(dataset.products)}"
    catalog = ChromaCatalog.from_env(home=home, collection=collection)
    if catalog.count() != len(dataset.products):
        catalog.upsert(dataset.products.values())
    return catalog


def example_position(dataset: Dataset, ex: Example, split: str) -> int:
    """``memory_store.target_position``, with a mismatch reported as an ``EvalError``."""
    try:
        return target_position(dataset, ex, split)
    except DataError as exc:
        raise EvalError(str(exc)) from exc


@dataclass
class EvalConfig:
    data: str
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    model: str | None = None
    batch_size: int = 16
    max_refinements: int = Context.max_refinements
    home: str | None = None

    @classmethod
    def from_args(cls, args: Any) -> Self:
        """From the parsed flags that ``eval`` and ``export`` share."""
        return cls(
            data=str(args.data),
            split=args.split,
            limit=args.limit,
            seed=args.seed,
            model=args.model,
            batch_size=args.batch_size,
            max_refinements=args.max_refinements,
            home=str(args.home) if args.home else None,
        )


@dataclass
class MethodResult:
    spec: MethodSpec
    outcomes: list[UserOutcome]
    wall_s: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    distinct_ratio: float = 0.0


def _without_path(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k != "model"}


def _same_key(header: Any, key: dict[str, Any]) -> bool:
    """Whether a cache's header was written under ``key``. The model's path is kept in the
    header for the reader but not compared: its digest names what it loads, and the same folder
    has another path in another clone (the whole-split cache is tracked in git and resumed on
    other machines) or when named relatively (``make eval``) rather than by the default."""
    return isinstance(header, dict) and _without_path(header) == _without_path(key)


def _key_digest(key: dict[str, Any]) -> str:
    """A short name for a configuration (path left out, as ``_same_key`` compares)."""
    text = json.dumps(_without_path(key), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_GONE = object()  # _read_header's answer for a file another shard moved away meanwhile


def _parse_header(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _read_header(path: Path) -> Any:
    try:
        with path.open() as f:
            return _parse_header(f.readline())
    except FileNotFoundError:
        return _GONE


PARKED_DIR = "other-configurations"  # caches of configurations other than the running one


def _replace_if_longer(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` unless ``dst`` already holds more rows (then drop ``src``)."""
    try:
        if dst.exists() and _line_count(dst) >= _line_count(src):
            src.unlink()
        else:
            os.replace(src, dst)
    except FileNotFoundError:
        pass  # another shard moved it first


def _line_count(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


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

    # -- caching ----------------------------------------------------------------------------
    def _cache_key(self, spec: MethodSpec) -> dict[str, Any]:
        from agent.drafting.hf import inference_dtype_name
        from agent.model_identity import model_digest

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
        if model_methods:
            # ... and on the dtype the model runs in (bfloat16 scores differ from float32's).
            key["dtype"] = inference_dtype_name()
        if spec.method in ("agent", "agent-single-turn"):
            # ... and on the model's learned weight in the check (agent.ranking.blend).
            key["model_weight"] = self._model_weight(spec)
        return key

    def _model_weight(self, spec: MethodSpec) -> float | None:
        """The weight the check gives this model's vote on the evaluated catalog (learned on
        the fit's held-out rows when not yet stored); None for a drafter that cannot vote."""
        from agent.nodes import learned_model_weight

        learned = learned_model_weight(self._agent_drafter(spec.model), self.ranking())
        return None if learned is None else learned.weight

    def _agent_drafter(self, model: str | None) -> Any:
        """The drafter as the agent methods run it: a Hugging Face drafter (a model and its
        tokenizer) decodes inside the catalog's query trie; any other (a scripted one in tests)
        drafts freely. One per model."""
        from agent.drafting.constrained import GroundedHFDrafter

        if model not in self._agent_drafters:
            base = self._drafter(model)
            hf = getattr(type(base), "tokenizer", None) is not None
            self._agent_drafters[model] = GroundedHFDrafter(base) if hf else base
        return self._agent_drafters[model]

    # -- the catalog's fitted models (agent.ranking), fitted on what precedes the targets --------
    @functools.cached_property
    def _fit_data(self) -> tuple[dict[str, list[str]], str]:
        """Every sequence cut before its target in the evaluated split (``graphs.offline.runner``), so
        nothing fitted has seen a target, and the key of a fit on them (computed once)."""
        from agent.ranking.fit import fit_key
        from graphs.offline.runner import fit_sequences

        sequences = fit_sequences(self.dataset, self.config.split)
        return sequences, fit_key(self.dataset.products, sequences)

    def _ranking_key(self) -> str:
        return self._fit_data[1]

    def ranking(self) -> Any:
        """The fitted ``CatalogModels`` for this split (fitted once, kept in the home)."""
        if self._models is None:
            from agent.ranking import RANKING_DIR, load_or_fit
            from memory_store.paths import queryagent_home

            folder = (
                queryagent_home(self.config.home)
                / RANKING_DIR
                / f"eval-{self.dataset.name.lower()}-{self.config.split}-{self._ranking_key()}"
            )
            self._models, _ = load_or_fit(
                folder, self.dataset.products, self._fit_data[0], self.catalog.search_many
            )
        return self._models

    def _history(self, ex: Example) -> list[str]:
        return list(self.dataset.sequences[ex.user_id][: self._position(ex)])

    def _cache_path(self, spec: MethodSpec) -> Path:
        return self.cache_dir / f"{spec.label.replace('/', '_')}.jsonl"

    def _parked_path(self, spec: MethodSpec, key: dict[str, Any]) -> Path:
        stem = self._cache_path(spec).stem
        return self.cache_dir / PARKED_DIR / f"{stem}.{_key_digest(key)}.jsonl"

    def _load_cache(self, spec: MethodSpec, *, drop_stale: bool = True) -> dict[str, UserOutcome]:
        """The users cached under this configuration. A cache written under another one (another
        model, dtype, fit, seed...) is parked in ``other-configurations/`` under its key's
        digest rather than deleted, and a parked cache of this configuration comes back: going
        back and forth between configurations loses no rows. ``drop_stale=False`` moves
        nothing and reads this configuration's rows wherever they are."""
        path, key = self._cache_path(spec), self._cache_key(spec)
        parked = self._parked_path(spec, key)
        header = _read_header(path)
        if header is not _GONE and not _same_key(header, key):
            if not drop_stale:
                path = parked  # look, move nothing
            else:
                if isinstance(header, dict):  # a file without a header holds nothing to keep
                    aside = self._parked_path(spec, header)
                    private_dir(aside.parent)
                    _replace_if_longer(path, aside)
                path.unlink(missing_ok=True)
        if drop_stale and not path.exists() and parked.exists():
            try:
                os.replace(parked, path)  # this configuration's rows, back from the side
            except FileNotFoundError:
                pass  # another shard brought them back first
        if not path.exists():
            return {}
        lines = path.read_text().splitlines()
        if not lines or not _same_key(_parse_header(lines[0]), key):
            return {}
        done: dict[str, UserOutcome] = {}
        for line in lines[1:]:
            try:
                outcome = UserOutcome(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a line cut short by an interruption; that user runs again
            done[outcome.user_id] = outcome
        return done

    def restrict_to_cached(self, specs: Sequence[MethodSpec]) -> int:
        """Keep only the users every method has cached under this configuration (so ``run``
        reports them and runs nothing): a look at a run that goes on in sittings. Returns the
        split's user count before the cut (``self.pairs`` holds the kept ones); raises EvalError
        when no user is left. Caches made by another configuration are left as they are."""
        total = len(self.pairs)
        common: set[str] | None = None
        for spec in specs:
            users = set(self._load_cache(spec, drop_stale=False))
            if not users:
                raise EvalError(
                    f"{spec.label}: no cached users under this configuration in {self.cache_dir}"
                )
            common = users if common is None else common & users
        self.pairs = [(ex, truth) for ex, truth in self.pairs if ex.user_id in (common or set())]
        if not self.pairs:
            raise EvalError(f"the methods' caches in {self.cache_dir} share no user")
        return total

    def restrict_to_shard(self, shard_id: int, shard_num: int) -> int:
        """Keep every ``shard_num``-th user of the split from ``shard_id`` on, so that processes
        (or machines) given ``0 .. shard_num - 1`` split the users between them, as pyserini's
        ``--shard-id``/``--shard-num`` split a corpus. The shards share the cache: each appends
        whole lines, and a run without shards (or ``--cached-only``) reports them together.
        Returns the split's user count before the cut."""
        if not 0 <= shard_id < shard_num:
            raise EvalError(f"shard {shard_id} of {shard_num}: expected 0 <= id < num")
        total = len(self.pairs)
        self.pairs = self.pairs[shard_id::shard_num]
        return total

    def _start_cache(self, spec: MethodSpec, path: Path) -> None:
        """Create the cache with its header in one step: shards started together must neither
        truncate each other's rows nor read a file whose header is not written yet (which would
        look like another configuration's cache and be deleted)."""
        private_dir(path.parent)
        if path.exists():
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        private_file(tmp)  # per-user outcomes: 0600 like everything in the home
        tmp.write_text(json.dumps(self._cache_key(spec)) + "\n")
        try:
            os.link(tmp, path)  # fails if another shard made it first; theirs has the same key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    # -- methods ----------------------------------------------------------------------------
    def run(self, spec: MethodSpec, progress: bool = True) -> MethodResult:
        done = self._load_cache(spec)
        todo = [(ex, truth) for ex, truth in self.pairs if ex.user_id not in done]
        path = self._cache_path(spec)
        self._start_cache(spec, path)
        bar = tqdm(
            total=len(self.pairs),
            initial=len(self.pairs) - len(todo),
            desc=spec.label,
            disable=not progress,
        )
        step = self.config.batch_size if spec.method in MODEL_METHODS else 256
        # One unbuffered O_APPEND write per batch: whole lines land at the end of the file
        # even when shards of the same run append to it at once (a buffered file object
        # flushes at arbitrary byte boundaries, which could interleave two shards' lines).
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                outcomes = self._outcomes(spec, chunk)
                data = "".join(json.dumps(asdict(o)) + "\n" for o in outcomes).encode()
                while data:  # a short write only happens when the disk is full
                    data = data[os.write(fd, data) :]
                for outcome in outcomes:
                    done[outcome.user_id] = outcome
                bar.update(len(chunk))
        finally:
            os.close(fd)
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
        if spec.method in BASELINES:
            queries = self._baseline(spec.method)(examples)
            valid, refinements = [True] * len(examples), [0] * len(examples)
        elif spec.method == "llm-direct":
            queries, valid = self._llm_direct(spec.model, examples)
            refinements = [0] * len(examples)
        else:
            queries, valid, refinements = self._agent(spec, examples)
        per_user = (time.perf_counter() - t0) / max(len(examples), 1)
        retrieved = self.catalog.search_many([q or "" for q in queries], k=RETRIEVE_K)
        return [
            UserOutcome(
                user_id=ex.user_id,
                target=ex.target,
                truth=truth,
                query=q,
                retrieved=[p.item_id for p in r] if q else [],
                format_valid=v,
                refinements=n,
                latency_s=per_user,
            )
            for (ex, truth), q, r, v, n in zip(
                chunk, queries, retrieved, valid, refinements, strict=True
            )
        ]

    def _baseline(self, name: str) -> Any:
        if name not in self._baselines:
            popular = Popular(self.oracle)
            last = LastCategory(self.oracle, popular)
            builders = {
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
                from agent.drafting import HFDrafter

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
        from graphs.offline.runner import draft_prompt_at

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
    ) -> tuple[list[str | None], list[bool], list[int]]:
        from graphs.offline.runner import OfflineRunner

        runner = self._runners.get(spec.model)
        if runner is None:
            common = {
                "catalog": self.catalog,
                "drafter": self._agent_drafter(spec.model),
                "ranking": self.ranking(),
                "batch_size": self.config.batch_size,
            }
            if self._store is None:  # ingested once (as `queryagent ingest` does), shared
                runner = OfflineRunner.from_dataset(self.dataset, **common)
                self._store = runner.store
            else:
                runner = OfflineRunner(store=self._store, **common)
            self._runners[spec.model] = runner
        refinements = 0 if spec.method == "agent-single-turn" else self.config.max_refinements
        ctx = Context(max_refinements=refinements, seed=self.config.seed, top_k=RETRIEVE_K)
        inputs = [{"user_id": ex.user_id, "before": self._position(ex)} for ex in examples]
        outputs = runner.run(inputs, context=ctx).outputs
        return (
            [o.get("query") for o in outputs],
            [o.get("source") not in (None, "fallback") for o in outputs],
            [int(o.get("refinements", 0)) for o in outputs],
        )
