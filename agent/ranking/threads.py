"""CPU threads of the catalog fit: how many, and how an idle one waits.

Two environment variables, read when a fit starts:

* ``QUERYAGENT_FIT_THREADS`` (a whole number >= 1; unset by default): the threads torch (the
  next-item model) and LightGBM (the ranker) use while ``fit_catalog`` runs; torch's own setting
  is restored afterwards. Unset, torch keeps its default (one thread per core) and LightGBM uses
  ``DEFAULT_LIGHTGBM_THREADS``, as before this setting existed. LightGBM's trees are the same at
  any thread count (``deterministic=True``), but torch's sums are split by thread, so a next-item
  model fitted with another count differs in its last bits, and so may a recommendation: each
  count is reproducible, and the fitted count is written to the models' ``meta.json``.
* ``OMP_WAIT_POLICY`` (OpenMP's own): how a thread waits for the others between two parallel
  steps. Importing the ``agent`` package sets it to ``PASSIVE`` (sleep at once) unless it is set
  already.
  OpenMP's default spins first, which is fine on free cores but ruinous when a core is taken:
  the spinning thread burns the time slice its partner needs. Measured on the 2-core development
  machine under a load of 9-14, one epoch of the next-item model on 1,500 shoppers took 73-113 s
  at 2 threads by default, 10-19 s at 2 threads with ``PASSIVE`` and 10-16 s at 1 thread, and
  the ranker's LightGBM fit 225-364 s by default at 2 threads, 45 s with ``PASSIVE`` and 41-68 s
  at 1 thread. The wait policy changes no number: the fitted weights and trees were
  byte-identical with and without it. OpenMP reads it once, when torch (or LightGBM) is first
  imported, so it only takes effect in a process that imports ``agent`` first (``queryagent``
  does; ``make demo`` also sets it in the environment).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "DEFAULT_LIGHTGBM_THREADS",
    "FIT_THREADS_ENV",
    "fit_threads",
    "lightgbm_threads",
    "torch_threads",
]

logger = logging.getLogger(__name__)

FIT_THREADS_ENV = "QUERYAGENT_FIT_THREADS"
# LightGBM's threads when QUERYAGENT_FIT_THREADS is unset (the value the ranker always used).
DEFAULT_LIGHTGBM_THREADS = 2


def fit_threads() -> int | None:
    """``QUERYAGENT_FIT_THREADS`` as a number; None when unset, empty or not a whole number >= 1
    (then one warning line says it is ignored: a typo costs speed, never a fit)."""
    raw = os.environ.get(FIT_THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        logger.warning("%s=%r is not a whole number >= 1: ignored", FIT_THREADS_ENV, raw)
        return None
    return n


def lightgbm_threads() -> int:
    """LightGBM's ``n_jobs`` for the ranker's fit."""
    return fit_threads() or DEFAULT_LIGHTGBM_THREADS


@contextmanager
def torch_threads() -> Iterator[int]:
    """Run the block with torch's intra-op threads set by ``QUERYAGENT_FIT_THREADS`` (left as
    they are when unset) and restore them after; yields the count in use."""
    import torch  # heavy: only a fit needs it, and `import agent.ranking` stays fast

    wanted = fit_threads()
    before = torch.get_num_threads()
    if wanted is None or wanted == before:
        yield before
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)
