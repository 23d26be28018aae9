"""The next-item model: a compact SASRec fitted on a catalog's own purchase sequences.

SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): item and position
embeddings, causal self-attention blocks, and the next item scored by a dot product with the item
embeddings. Trained here with a full softmax over the catalog (cross-entropy at every position),
which on catalogs of a few thousand items converges faster than the paper's sampled binary loss.
Written as a small torch module rather than taken from RecBole: RecBole pins old numpy/torch
releases and drags in its own data pipeline and config system for a 60-line model. RecTools'
SASRec (0.19.0, the maintained one the issue names) was checked too: its wheel requires
numpy < 2, pandas < 3 and attrs < 24 on this Python (the project runs numpy 2.4, pandas 3.1,
attrs 26), plus pytorch-lightning and pm-implicit, for a model this module already matches
(full softmax over the catalog, as RecTools' default loss), so the hand-written module stays.

The check uses it for one number per candidate query: the probability mass the model puts on the
products the query retrieves, i.e. the chance that the shopper's next purchase is among them.

    model = NextItemModel.fit(sequences, item_ids, config)   # {user: [item_id, ...]}, oldest first
    model = NextItemModel.fit(sequences, item_ids, config, item_vectors=vectors)  # text init
    probs = model.predict([["B00TNNWMXI", "B00IBZE2EQ"]])   # [n, n_items] next-item probabilities
    model.save(folder); NextItemModel.load(folder)

Figures (bundled Scientific set, 2-core CPU): README "Evaluation" and "Performance".
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = ["NextItemConfig", "NextItemModel", "text_init"]

_WEIGHTS = "nextitem.safetensors"
_CONFIG = "nextitem.json"


@dataclass(frozen=True)
class NextItemConfig:
    """SASRec hyper-parameters (defaults sized for catalogs of 10^3-10^5 items on a CPU)."""

    max_len: int = 50  # most recent items the model reads
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.3
    # From a random start: small batches and a higher rate (on the bundled set, 8k short
    # sequences, batch 32 at 2e-3 reached HR@10 0.072 on valid after 20 epochs, batch 128 at 1e-3
    # 0.030). From the text vectors, FitConfig.nextitem's shorter schedule at batch 128 does
    # better (bench/next_item.py).
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 40
    seed: int = 0


def text_init(vectors: np.ndarray, dim: int, scale: float) -> np.ndarray:
    """Item embeddings from the text encoder's product vectors (``[n_items, d]``, e.g. MiniLM's
    384-d): centred, reduced to ``dim`` by PCA (numpy's SVD; a fitted projection, no trained
    layer) and scaled so the rows' mean norm is ``scale``, the random init's. Items whose vector
    is all zeros (the catalog lacks one) get zero rows here; the caller keeps their random init.
    Fewer than ``dim`` input dimensions (or items) leave the remaining columns zero."""
    x = np.asarray(vectors, dtype=np.float64)
    known = np.abs(x).sum(axis=1) > 0
    out = np.zeros((len(x), dim))
    if known.sum() < 2:
        return out.astype(np.float32)
    centred = x[known] - x[known].mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(dim, vt.shape[0])
    reduced = centred @ vt[:k].T
    norm = float(np.linalg.norm(reduced, axis=1).mean())
    out[known, :k] = reduced * (scale / max(norm, 1e-12))
    return out.astype(np.float32)


def _build_module(n_items: int, cfg: NextItemConfig) -> Any:
    import torch  # heavy: `import agent.ranking` stays fast for Studio and the tests
    from torch import nn

    class SASRec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Index 0 is padding; items are 1..n_items.
            self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
            self.positions = nn.Embedding(cfg.max_len, cfg.dim)
            self.dropout = nn.Dropout(cfg.dropout)
            layer = nn.TransformerEncoderLayer(
                cfg.dim,
                cfg.heads,
                dim_feedforward=cfg.dim,
                dropout=cfg.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.dim)

        def forward(self, seq: torch.Tensor) -> torch.Tensor:
            """``seq`` [b, L] (left-padded with 0, L <= max_len) -> hidden states [b, L, dim].

            Positions count back from the last item (it is always at ``max_len - 1``), and no
            position attends to padding, so a batch cut to its longest history gives the same
            states as one padded to ``max_len``: the fit and ``predict`` cut every batch.
            """
            length = seq.shape[1]
            pos = torch.arange(cfg.max_len - length, cfg.max_len, device=seq.device).unsqueeze(0)
            x = self.items(seq) * math.sqrt(cfg.dim) + self.positions(pos)
            pad = seq == 0
            x = self.dropout(x) * (~pad).unsqueeze(-1)
            square = torch.ones(length, length, dtype=torch.bool, device=seq.device)
            # True = not attended: later positions and padding; each position always sees
            # itself, so a padding position's row is never all masked (no NaN).
            blocked = torch.triu(square, diagonal=1) | pad.unsqueeze(1)
            blocked &= ~torch.eye(length, dtype=torch.bool, device=seq.device)
            h = self.encoder(x, mask=blocked.repeat_interleave(cfg.heads, dim=0))
            return self.norm(h)

        def logits(self, h: torch.Tensor) -> torch.Tensor:
            return h @ self.items.weight[1:].T  # [.., n_items], item i at column i-1

    return SASRec()


class NextItemModel:
    """A fitted SASRec over a fixed item vocabulary (``item_ids``; unknown items are ignored)."""

    def __init__(self, item_ids: Sequence[str], config: NextItemConfig, module: Any) -> None:
        self.item_ids = list(item_ids)
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        self.config = config
        self.module = module
        self.module.eval()

    # ----------------------------------------------------------------- data

    def _encode(self, history: Sequence[str]) -> list[int]:
        ids = [self.index[i] for i in history if i in self.index]
        ids = ids[-self.config.max_len :]
        return [0] * (self.config.max_len - len(ids)) + ids

    # ----------------------------------------------------------------- fit

    @classmethod
    def fit(
        cls,
        sequences: Mapping[str, Sequence[str]],
        item_ids: Sequence[str],
        config: NextItemConfig | None = None,
        *,
        init: NextItemModel | None = None,
        item_vectors: np.ndarray | None = None,
        progress: bool = False,
        on_epoch: Callable[[int, NextItemModel], None] | None = None,
    ) -> NextItemModel:
        """Train on every sequence (each position predicts the next item).

        Args:
            sequences: user -> item ids, oldest first. Only these events are seen: the caller
                cuts them before any target it will evaluate (leave-one-out discipline).
            item_ids: the catalog's items (the output vocabulary).
            config: hyper-parameters.
            init: a model fitted on the same items to start from (warm start: a refit on
                longer sequences needs a few epochs, not a whole training).
            item_vectors: the text encoder's product vectors, one row per ``item_ids`` entry
                (zeros for an item without one): the item embeddings start from them
                (``text_init``) instead of at random, unless ``init`` is given.
            progress: show a tqdm bar over epochs.
            on_epoch: called after each epoch with its number (1-based) and the model, in
                eval mode (a benchmark's learning curve); training resumes after it.
        """
        import torch  # heavy: only fitting and predicting need it
        import torch.nn.functional as F

        cfg = config or NextItemConfig()
        torch.manual_seed(cfg.seed)
        module = _build_module(len(item_ids), cfg)
        if init is not None and init.item_ids == list(item_ids):
            module.load_state_dict(init.module.state_dict())
        elif item_vectors is not None:
            if len(item_vectors) != len(item_ids):
                raise ValueError(
                    f"item_vectors has {len(item_vectors)} rows for {len(item_ids)} items"
                )
            weight = module.items.weight.data  # row 0 is padding
            scale = float(weight[1:].norm(dim=1).mean())
            start = torch.from_numpy(text_init(item_vectors, cfg.dim, scale))
            known = start.abs().sum(dim=1) > 0
            weight[1:][known] = start[known]
        model = cls(item_ids, cfg, module)
        rows = []
        for seq in sequences.values():
            ids = [model.index[i] for i in seq if i in model.index]
            if len(ids) < 2:
                continue
            # Long sequences become several windows so no event is dropped from training.
            for end in range(len(ids), 1, -cfg.max_len):
                window = ids[max(0, end - cfg.max_len - 1) : end]
                inp, out = window[:-1], window[1:]
                pad = cfg.max_len - len(inp)
                rows.append(([0] * pad + inp, [0] * pad + out))
        if not rows:
            logger.warning("no sequence of 2+ known items: the next-item model stays untrained")
            return model
        inputs = torch.tensor([r[0] for r in rows])
        targets = torch.tensor([r[1] for r in rows])
        lengths = (inputs > 0).sum(dim=1)
        optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        generator = torch.Generator().manual_seed(cfg.seed)
        started = time.perf_counter()
        module.train()
        for epoch in tqdm(range(cfg.epochs), desc="next-item model", disable=not progress):
            # Batches of windows of about one length, in random order, each cut to its longest
            # window: most histories are short (7 items on average on the bundled set, against
            # a max_len of 50), so this is several times faster than padding every batch to
            # max_len, and the same model (``forward`` masks padding).
            noise = torch.rand(len(rows), generator=generator)
            batches = torch.split(torch.argsort(lengths + noise), cfg.batch_size)
            for b in torch.randperm(len(batches), generator=generator).tolist():
                picked = batches[b]
                width = int(lengths[picked].max())
                batch_in, batch_out = inputs[picked, -width:], targets[picked, -width:]
                h = module(batch_in)
                mask = batch_out > 0
                logits = module.logits(h[mask])
                loss = F.cross_entropy(logits, batch_out[mask] - 1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if on_epoch is not None:
                module.eval()
                on_epoch(epoch + 1, model)
                module.train()
        module.eval()
        logger.info(
            "next-item model: %d windows, %d epochs, %.1f s",
            len(rows),
            cfg.epochs,
            time.perf_counter() - started,
        )
        return model

    # ----------------------------------------------------------------- predict

    def predict(self, histories: Sequence[Sequence[str]], batch_size: int = 512) -> np.ndarray:
        """Next-item probabilities, one row per history, columns in ``item_ids`` order."""
        import torch  # heavy: only fitting and predicting need it

        out = np.zeros((len(histories), len(self.item_ids)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(histories), batch_size):
                chunk = histories[start : start + batch_size]
                seq = torch.tensor([self._encode(h) for h in chunk])
                width = max(1, int((seq > 0).sum(dim=1).max()))
                h = self.module(seq[:, -width:])[:, -1, :]  # cut to the longest (``forward``)
                probs = torch.softmax(self.module.logits(h), dim=-1)
                empty = (seq > 0).sum(dim=1) == 0
                if bool(empty.any()):
                    # No known history: the model has nothing to condition on; uniform.
                    probs[empty] = 1.0 / len(self.item_ids)
                out[start : start + len(chunk)] = probs.numpy()
        return out

    # ----------------------------------------------------------------- persistence

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file  # imports torch (heavy)

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / _WEIGHTS))
        meta = {"config": asdict(self.config), "item_ids": self.item_ids}
        (folder / _CONFIG).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: str | Path) -> NextItemModel:
        from safetensors.torch import load_file  # imports torch (heavy)

        folder = Path(folder)
        meta = json.loads((folder / _CONFIG).read_text())
        cfg = NextItemConfig(**meta["config"])
        module = _build_module(len(meta["item_ids"]), cfg)
        module.load_state_dict(load_file(str(folder / _WEIGHTS)))
        return cls(meta["item_ids"], cfg, module)
