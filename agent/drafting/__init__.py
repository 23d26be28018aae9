"""Drafting: the ``QueryDrafter`` protocol and its implementations, one concern per module.

- ``protocol``: ``QueryDrafter``, ``DrafterError``, ``Messages``; ``GroundedDrafter``, ``Beam``
- ``fakes``: ``ScriptedDrafter`` (tests, demos of the wiring)
- ``bundled``: the bundled SmolLM2 GGUF, located without importing its package, converted once
- ``resolve``: the one model resolver (``resolve_model``) and the one loader (``load_model``)
- ``hf``: ``HFDrafter``, a Hugging Face causal LM
- ``prefix_cache``: ``PrefixCache``, keys/values of shared prompt prefixes; ``RowPrefixes``, of
  single rows of a batch (a refinement prompt extends its draft prompt)
- ``batching``: ``MicroBatchingDrafter``, concurrent calls merged into batches
- ``trie``: ``QueryTrie``, the catalog's queries as token paths
- ``constrained``: ``constrained_beams`` over a trie and ``GroundedHFDrafter``; its prompts' keys
  and values come from ``prefill``, candidates' scores from ``scoring``, and the beams of a prompt
  share one copy of them through ``shared_prefix`` (imported on use: it imports torch)
- ``agent.model_identity`` (beside this package): a model's content digest

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
