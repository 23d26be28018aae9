"""The product catalog: a ``Catalog`` protocol and its Chroma implementation.

The catalog is a Chroma collection (``products`` by default) of one record per product: the id is
the product's ``item_id``, the document is ``Product.document()`` and the metadata holds title,
category and brand, so a hit round-trips to a ``RetrievedProduct`` without a second lookup.

Vectors come from the offline all-MiniLM-L6-v2 embedding function registered with Chroma
(``agent.embedding``). The index uses cosine space and scores are similarities,
``1 - cosine distance``, in [-1, 1], higher is better.

Fill it with ``queryagent ingest``; by hand::

    from agent.catalog import ChromaCatalog
    catalog = ChromaCatalog()                 # $QUERYAGENT_HOME/chroma, or ~/.queryagent/chroma
    catalog.upsert(products)                  # idempotent: upsert by item_id
    catalog.search("usb c charging cable", k=5)

Why this module is over 400 lines: it is one class, ``ChromaCatalog``, whose connection, retries,
writes and reads share one client and one cached collection; splitting it would scatter that
state. The embedding function, the other concern that was here, is ``agent.embedding``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import chromadb
import httpx
import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction
from chromadb.config import Settings
from chromadb.errors import NotFoundError
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)
from tqdm.auto import tqdm

from agent.embedding import DEFAULT_EMBEDDING_MODEL, EMBEDDING_DIM, MiniLMEmbeddingFunction
from agent.records import RetrievedProduct
from memory_store.paths import HomeError, private_dir, private_file, queryagent_home
from memory_store.products import Product

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_EMBEDDING_MODEL",
    "EMBEDDING_DIM",
    "Catalog",
    "CatalogError",
    "ChromaCatalog",
    "MiniLMEmbeddingFunction",
]

DEFAULT_COLLECTION = "products"
HOST_ENV = "QUERYAGENT_CHROMA_HOST"
PORT_ENV = "QUERYAGENT_CHROMA_PORT"
_METADATA_FIELDS = ("title", "category", "brand")
_INGEST_HINT = "run `queryagent ingest` to fill it"
# A Chroma server call that fails to connect (the server restarting) is retried with exponential
# backoff, 0.5 s doubling to 8 s, for at most RETRY_SECONDS; then it is reported as one line.
RETRY_SECONDS = 30.0
logger = logging.getLogger(__name__)
T = TypeVar("T")


class CatalogError(RuntimeError):
    """The catalog cannot answer: the collection is missing or empty, or the server is misnamed."""


@runtime_checkable
class Catalog(Protocol):
    """What the agent needs from a product catalog. Implementations must be thread-safe."""

    def search(self, query: str, k: int = 10) -> list[RetrievedProduct]:
        """The ``k`` products nearest ``query``, best first (rank 1, highest score)."""
        ...

    def search_many(
        self, queries: list[str], k: int = 10, *, exact: bool = False
    ) -> list[list[RetrievedProduct]]:
        """``search`` for each query, in one batched call; one list per query, in order.

        ``exact``: every stored product is scored and ties go to the smaller id, so the result
        is the same on every run (what a fit needs); otherwise the index's approximate search.
        """
        ...

    def embeddings(self, item_ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors of the given items; ids not in the catalog are absent."""
        ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors for arbitrary texts, in the catalog's embedding space."""
        ...

    def get(self, item_ids: Sequence[str]) -> dict[str, Product]:
        """The stored products with these ids; ids not in the catalog are absent."""
        ...

    def count(self) -> int:
        """How many products the catalog holds (0 when the collection does not exist)."""
        ...


# --------------------------------------------------------------------------- Chroma catalog


def _to_product_fields(item_id: str, metadata: Any) -> dict[str, str]:
    md = metadata or {}
    fields = {name: str(md.get(name) or "") for name in _METADATA_FIELDS}
    return {"item_id": item_id, **fields}


def _metadata(product: Product) -> dict[str, str]:
    # Chroma metadata values cannot be None: the record's fields are "" when unknown.
    return {f: str(getattr(product, f) or "") for f in _METADATA_FIELDS}


class ChromaCatalog:
    """A ``Catalog`` on a Chroma collection: a local persistent one, or a Chroma server.

    Args:
        home: QueryAgent home; the local database lives in ``<home>/chroma``.
        host: a Chroma server's host name; when given, ``home`` is not used.
        port: the Chroma server's port.
        collection: collection name.
        embedding_function: defaults to ``MiniLMEmbeddingFunction()``; a different one must be
            registered with Chroma (``register_embedding_function``) to persist.
        retry_seconds: how long a server call that cannot connect is retried (exponential
            backoff, tenacity) before it is reported as a ``CatalogError``.

    Reads are thread-safe (LangGraph runs nodes in threads): the Chroma client is, and the
    embedding model is used under a lock.
    """

    MAX_RESULTS_PER_CALL = 20_000  # results (queries x k) per Chroma query call, see search_many

    def __init__(
        self,
        *,
        home: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int = 8000,
        collection: str = DEFAULT_COLLECTION,
        embedding_function: EmbeddingFunction[Documents] | None = None,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        settings = Settings(anonymized_telemetry=False)
        self.collection_name = collection
        self.embedding_function: EmbeddingFunction[Documents] = (
            embedding_function if embedding_function is not None else MiniLMEmbeddingFunction()
        )
        self.location: str
        self.retry_seconds = retry_seconds
        if host:
            self.location = f"http://{host}:{port}"
            try:
                self._client: ClientAPI = chromadb.HttpClient(
                    host=host, port=port, settings=settings
                )
            except Exception as err:  # chromadb turns a failed heartbeat into ValueError
                raise CatalogError(
                    f"cannot reach the Chroma server at {self.location} "
                    f"({' '.join(str(err).split())}); start it, or unset {HOST_ENV} to use the "
                    "local catalog"
                ) from None
        else:
            try:
                path = private_dir(queryagent_home(home) / "chroma")
                # Chroma's own files get the umask's mode; its database holds the catalog only,
                # but is made private like the rest of the home (an empty file is an empty
                # SQLite database). The folder is 0700 either way.
                private_file(path / "chroma.sqlite3")
                self._client = chromadb.PersistentClient(path=str(path), settings=settings)
            except HomeError as err:
                raise CatalogError(str(err)) from None
            except Exception as err:  # chromadb raises its own InternalError on a read-only disk
                raise CatalogError(
                    f"cannot open the local catalog in {queryagent_home(home) / 'chroma'} "
                    f"({' '.join(str(err).split())}); the home must be writable"
                ) from None
            self.location = str(path)
        self._collection: Collection | None = None
        self._nonempty = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(
        cls, home: str | os.PathLike[str] | None = None, collection: str = DEFAULT_COLLECTION
    ) -> ChromaCatalog:
        """A server catalog when ``$QUERYAGENT_CHROMA_HOST`` is set, else the local one.

        ``$QUERYAGENT_CHROMA_PORT`` gives the server's port (8000 by default).
        """
        host = os.environ.get(HOST_ENV) or None
        raw_port = os.environ.get(PORT_ENV) or "8000"
        try:
            port = int(raw_port)
        except ValueError:
            raise CatalogError(
                f"{PORT_ENV}={raw_port!r} is not a port number; set it to an integer such as 8000"
            ) from None
        return cls(home=home, host=host, port=port, collection=collection)

    def __repr__(self) -> str:
        return f"ChromaCatalog({self.location!r}, collection={self.collection_name!r})"

    # ----------------------------------------------------------------- server calls

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried while the server cannot be reached.

        Only transport failures (connection refused or reset, timeouts: a server restarting) are
        retried; an answer from the server, even an error, is final. Each retry is logged; when
        the budget runs out the failure is one ``CatalogError`` line.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(httpx.TransportError),
            wait=wait_exponential(multiplier=0.5, max=8),
            stop=stop_after_delay(self.retry_seconds),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except httpx.TransportError as err:
            raise CatalogError(
                f"the Chroma server at {self.location} did not answer {what} "
                f"({type(err).__name__}: {err}) after retrying for {self.retry_seconds:g} s; "
                f"start it, or unset {HOST_ENV} to use the local catalog"
            ) from None

    def check(self) -> int:
        """Fail fast, before any model work: the catalog answers and holds products.

        Returns:
            How many products it holds.

        Raises:
            CatalogError: the server does not answer, or the collection is missing or empty.
        """
        collection = self._searchable()
        return int(self._call("count", collection.count))

    # ----------------------------------------------------------------- collection access

    def _open(self, *, create: bool = False) -> Collection | None:
        """The collection, cached once found; ``None`` when it does not exist and not ``create``."""
        if self._collection is not None:
            return self._collection
        with self._lock:
            if self._collection is not None:
                return self._collection
            if create:
                self._collection = self._call(
                    "get_or_create_collection",
                    self._client.get_or_create_collection,
                    self.collection_name,
                    configuration={"hnsw": {"space": "cosine"}},
                    embedding_function=self.embedding_function,  # type: ignore[arg-type]
                )
            else:
                try:
                    self._collection = self._call(
                        "get_collection",
                        self._client.get_collection,
                        self.collection_name,
                        embedding_function=self.embedding_function,  # type: ignore[arg-type]
                    )
                except NotFoundError:
                    return None
            return self._collection

    def _searchable(self) -> Collection:
        collection = self._open()
        if collection is None:
            raise CatalogError(
                f"the product catalog {self.collection_name!r} at {self.location} does not "
                f"exist; {_INGEST_HINT}"
            )
        if not self._nonempty:
            if self._call("count", collection.count) == 0:
                raise CatalogError(
                    f"the product catalog {self.collection_name!r} at {self.location} is empty; "
                    f"{_INGEST_HINT}"
                )
            # Checked once: a catalog is filled, not emptied, while an agent runs.
            self._nonempty = True
        return collection

    # ----------------------------------------------------------------- writes

    def upsert(
        self, products: Iterable[Product], batch_size: int = 256, progress: bool = True
    ) -> int:
        """Add or replace products by ``item_id``; returns how many records were written.

        Idempotent: upserting the same products again leaves the catalog unchanged. Within one
        batch a repeated id keeps its last version (Chroma rejects duplicate ids in one call).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        collection = self._open(create=True)
        assert collection is not None
        total = len(products) if isinstance(products, Sized) else None
        written = 0
        with tqdm(
            total=total, desc=f"upsert {self.collection_name}", unit="product", disable=not progress
        ) as bar:
            batch: dict[str, Product] = {}
            seen = 0
            for product in products:
                batch[product.item_id] = product
                seen += 1
                if seen == batch_size:
                    written += self._call("upsert", self._upsert_batch, collection, batch)
                    bar.update(seen)
                    batch, seen = {}, 0
            if batch:
                written += self._call("upsert", self._upsert_batch, collection, batch)
                bar.update(seen)
        return written

    @staticmethod
    def _upsert_batch(collection: Collection, batch: dict[str, Product]) -> int:
        """Write the batch's new or changed products; unchanged ones are not embedded again,
        so re-ingesting a data set costs a read, not a pass of the embedding model."""
        stored = collection.get(ids=list(batch), include=["documents", "metadatas"])
        unchanged = {
            item_id
            for item_id, doc, meta in zip(
                stored["ids"], stored["documents"] or [], stored["metadatas"] or [], strict=False
            )
            if doc == batch[item_id].document() and dict(meta or {}) == _metadata(batch[item_id])
        }
        items = [p for item_id, p in batch.items() if item_id not in unchanged]
        if items:
            collection.upsert(
                ids=[p.item_id for p in items],
                documents=[p.document() for p in items],
                metadatas=[_metadata(p) for p in items],  # type: ignore[misc]
            )
        return len(items)

    # ----------------------------------------------------------------- reads

    def count(self) -> int:
        collection = self._open()
        return 0 if collection is None else self._call("count", collection.count)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return [[float(x) for x in row] for row in self.embedding_function(list(texts))]

    def search(self, query: str, k: int = 10) -> list[RetrievedProduct]:
        return self.search_many([query], k=k)[0]

    def search_many(
        self, queries: list[str], k: int = 10, *, exact: bool = False
    ) -> list[list[RetrievedProduct]]:
        if not queries:
            return []
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        collection = self._searchable()
        if exact:
            return self._search_exact(collection, list(queries), k)
        # Chroma's local database reads a query's results with one SQL variable per result, and
        # SQLite refuses more than 32,766 in one statement (34 queries at k=1000 failed with "too
        # many SQL variables"): queries go in chunks of at most ``MAX_RESULTS_PER_CALL`` results.
        per_call = max(1, self.MAX_RESULTS_PER_CALL // k)
        out: list[list[RetrievedProduct]] = []
        for start in range(0, len(queries), per_call):
            out += self._search_chunk(collection, list(queries[start : start + per_call]), k)
        return out

    def _search_chunk(
        self, collection: Any, queries: list[str], k: int
    ) -> list[list[RetrievedProduct]]:
        result = self._call(
            "query",
            collection.query,
            query_texts=queries,
            n_results=k,
            include=["metadatas", "distances"],  # type: ignore[list-item]
        )
        ids = result["ids"]
        metadatas = result.get("metadatas") or [[] for _ in ids]
        distances = result.get("distances") or [[] for _ in ids]
        out: list[list[RetrievedProduct]] = []
        for row_ids, row_md, row_dist in zip(ids, metadatas, distances, strict=True):
            out.append(
                [
                    RetrievedProduct(
                        **_to_product_fields(item_id, md),
                        rank=rank,
                        # Cosine space: distance = 1 - cosine similarity.
                        score=1.0 - float(dist),
                    )
                    for rank, (item_id, md, dist) in enumerate(
                        zip(row_ids, row_md, row_dist, strict=True), start=1
                    )
                ]
            )
        return out

    # Rows per read of the whole collection (an exact search's scan).
    SCAN_PAGE = 5_000

    def _search_exact(
        self, collection: Any, queries: list[str], k: int
    ) -> list[list[RetrievedProduct]]:
        """Brute force over every stored vector: Chroma's HNSW index is approximate and is not
        the same from one process to the next (measured: two reads of one home at k=1000
        differed for 281 of 756 queries, two fresh homes' top 10 for 2), so a fit on it could
        not be repeated. Memory: one page of vectors at a time, plus ``len(queries) x k``."""
        q = np.asarray(self.embed(queries), dtype=np.float32)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        ids: list[str] = []
        metas: list[Any] = []
        scores: list[np.ndarray] = []
        for offset in itertools.count(0, self.SCAN_PAGE):
            page = self._call(
                "get",
                collection.get,
                limit=self.SCAN_PAGE,
                offset=offset,
                include=["embeddings", "metadatas"],
            )
            if not page["ids"]:
                break
            vectors = np.asarray(page["embeddings"], dtype=np.float32)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            ids += page["ids"]
            metas += page.get("metadatas") or [None] * len(page["ids"])
            scores.append(q @ vectors.T)
        sims = np.concatenate(scores, axis=1) if scores else np.zeros((len(queries), 0))
        # Rank by score, ties by id: sort ids once, then a stable sort by score keeps that order.
        by_id = np.argsort(np.asarray(ids, dtype=object), kind="stable")
        out: list[list[RetrievedProduct]] = []
        for row in sims[:, by_id]:
            order = np.argsort(-row, kind="stable")[:k]
            out.append(
                [
                    RetrievedProduct(
                        **_to_product_fields(ids[by_id[j]], metas[by_id[j]]),
                        rank=rank,
                        score=float(row[j]),
                    )
                    for rank, j in enumerate(order, start=1)
                ]
            )
        return out

    def embeddings(self, item_ids: Sequence[str]) -> dict[str, list[float]]:
        ids = list(dict.fromkeys(item_ids))
        collection = self._open()
        if not ids or collection is None:
            return {}
        result = self._call("get", collection.get, ids=ids, include=["embeddings"])
        vectors = result.get("embeddings")
        if vectors is None:
            return {}
        return {
            item_id: [float(x) for x in vec]
            for item_id, vec in zip(result["ids"], vectors, strict=True)
        }

    def get(self, item_ids: Sequence[str]) -> dict[str, Product]:
        ids = list(dict.fromkeys(item_ids))
        collection = self._open()
        if not ids or collection is None:
            return {}
        result = self._call("get", collection.get, ids=ids, include=["metadatas"])
        metadatas: list[Any] = result.get("metadatas") or [None] * len(result["ids"])
        return {
            item_id: Product(**_to_product_fields(item_id, md))
            for item_id, md in zip(result["ids"], metadatas, strict=True)
        }
