"""The writer's held-out reward: greedy texts for ``valid`` shoppers (the intent given: their
next purchase's category query), scored with the training reward's terms, each with a 95%
bootstrap interval (``scipy.stats.bootstrap``), beside the same figures for the intent's own text
(what the agent shows without a writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.parsing import parse_query
from agent.search import SEARCH_DIR, Search, prepare_search
from graphs.offline.runner import fit_sequences
from memory_store import Dataset, load_dataset
from memory_store.paths import queryagent_home
from training.evaluation.protocol import fit_name, open_eval_catalog
from training.rewards import (
    WRITER_REWARD_WEIGHTS,
    TextResults,
    text_brevity,
    text_category_share,
    text_rank_reward,
)
from training.writer.rows import WriterRow

HIT_K = 10


def writer_search(dataset: Dataset, home: str | Path | None) -> Search:
    """The fused search the writer's rewards read: fitted on the sequences cut before the
    ``valid`` targets (the evaluation's ``valid`` search, so both fit it once)."""
    catalog = open_eval_catalog(dataset, home)
    folder = queryagent_home(home) / SEARCH_DIR / fit_name(dataset, "valid", "fused")
    return prepare_search(
        "fused", catalog, folder, dataset.products, fit_sequences(dataset, "valid")
    )


@dataclass(frozen=True)
class OpenWriterSearch:
    """A picklable opener of ``writer_search`` (``TextResults`` opens it on first use)."""

    data: str
    home: str | None

    def __call__(self) -> Search:
        return writer_search(load_dataset(self.data), self.home)


def interval(values: np.ndarray) -> dict[str, float]:
    from scipy.stats import bootstrap  # scipy.stats is slow to import; only this needs it

    mean = float(values.mean())
    if len(values) < 2 or float(values.std()) == 0.0:
        return {"mean": round(mean, 4), "low": round(mean, 4), "high": round(mean, 4)}
    ci = bootstrap((values,), np.mean, n_resamples=1000, random_state=0).confidence_interval
    low, high = round(float(ci.low), 4), round(float(ci.high), 4)
    return {"mean": round(mean, 4), "low": low, "high": high}


def score_texts(
    rows: Sequence[WriterRow],
    texts: Sequence[str | None],
    results: TextResults,
    item_query: dict[str, str],
) -> dict[str, Any]:
    """The reward's terms, their weighted sum and hit@10 over ``rows``, each with its interval;
    ``per_row`` keeps the weighted reward per shopper (for paired comparisons)."""
    found = results.of(texts)
    rank, share, brevity, hit = [], [], [], []
    for row, text, ids in zip(rows, texts, found, strict=True):
        rank.append(text_rank_reward(row.target, ids, results.depth) if text else 0.0)
        share.append(text_category_share(ids, row.intent, item_query) if text else 0.0)
        brevity.append(text_brevity(text))
        hit.append(float(row.target in ids[:HIT_K]))
    terms = {k: np.asarray(v) for k, v in (("rank", rank), ("share", share), ("brevity", brevity))}
    w = WRITER_REWARD_WEIGHTS
    reward = w[0] * terms["rank"] + w[1] * terms["share"] + w[2] * terms["brevity"]
    words = [len(t.split()) for t in texts if t]
    return {
        "shoppers": len(rows),
        "reward": interval(reward),
        **{k: interval(v) for k, v in terms.items()},
        f"hit@{HIT_K}": interval(np.asarray(hit)),
        "parsed": round(sum(t is not None for t in texts) / max(len(texts), 1), 4),
        "words": round(float(np.mean(words)), 2) if words else 0.0,
        "differs_from_intent": round(
            float(np.mean([t != r.intent for t, r in zip(texts, rows, strict=True)])), 4
        ),
        "per_row": [round(float(x), 5) for x in reward],
    }


def greedy_texts(
    model: Any,
    tokenizer: Any,
    rows: Sequence[WriterRow],
    *,
    batch: int = 32,
    max_new_tokens: int = 16,
) -> list[str | None]:
    """The model's greedy text for each row's prompt (left-padded batches, no sampling)."""
    import torch  # heavy: loaded when a held-out evaluation runs

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    texts: list[str | None] = []
    try:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            prompts = [
                tokenizer.apply_chat_template(r.prompt, tokenize=False, add_generation_prompt=True)
                for r in chunk
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
            for seq in out[:, enc["input_ids"].shape[1] :]:
                completion = tokenizer.decode(seq, skip_special_tokens=True)
                texts.append(parse_query(completion).query)
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return texts
