"""Drafting: the ``QueryDrafter`` protocol and its implementations, one concern per module.

- ``protocol``: ``QueryDrafter``, ``DrafterError``, ``Messages``
- ``fakes``: ``ScriptedDrafter`` (tests, demos of the wiring)
- ``bundled``: the bundled SmolLM2 GGUF, located without importing its package, converted once
- ``resolve``: the one model resolver (``resolve_model``) and the one loader (``load_model``)
- ``hf``: ``HFDrafter``, a Hugging Face causal LM
- ``prefix_cache``: ``PrefixCache``, keys/values of shared prompt prefixes; ``RowPrefixes``, of
  single rows of a batch (a refinement prompt extends its draft prompt)
- ``batching``: ``MicroBatchingDrafter``, concurrent calls merged into batches

Nothing here imports torch or transformers at import time.
"""

from agent.drafting.batching import MicroBatchingDrafter
from agent.drafting.bundled import BASE_MODEL_ID, bundled_model_dir, default_gguf_path
from agent.drafting.fakes import ScriptedDrafter
from agent.drafting.hf import HFDrafter
from agent.drafting.prefix_cache import PrefixCache, RowPrefixes
from agent.drafting.protocol import DrafterError, Messages, QueryDrafter
from agent.drafting.resolve import (
    MODEL_ENV,
    ResolvedModel,
    default_model,
    load_model,
    resolve_model,
)

__all__ = [
    "BASE_MODEL_ID",
    "MODEL_ENV",
    "DrafterError",
    "HFDrafter",
    "Messages",
    "MicroBatchingDrafter",
    "PrefixCache",
    "QueryDrafter",
    "ResolvedModel",
    "RowPrefixes",
    "ScriptedDrafter",
    "bundled_model_dir",
    "default_gguf_path",
    "default_model",
    "load_model",
    "resolve_model",
]
