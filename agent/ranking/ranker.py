"""The learned check: a LightGBM lambdarank model over candidate features, with a calibrated
probability and a learned refinement threshold.

Relevance of a candidate query for a training row: 0, 1 when it is the shopper's real next query
(Q_EM), 3 when, in addition, the query retrieves the real next item (the paper's Cons@K event).
LambdaMART (LightGBM ``objective="lambdarank"``) orders a shopper's candidates. A shopper has one
relevant candidate at most, and lambdarank divides each shopper's gradients by its ideal DCG, so
the 3 weighs no more than the 1 in the ordering (raising its gain leaves the trees as they are):
the order learns the right query, and the Cons@K event enters through the features (``mass_hit``)
and the calibration below. A logistic calibration (scikit-learn) maps its score to the chance of
the Cons@K event, which is the check's ``fit`` in [0, 1]. The refinement threshold is the mean of
that chance over the rows' best candidates: a shopper whose best candidate falls below it is worse
off than the average shopper, and the agent asks the model for new candidates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from agent.ranking.threads import lightgbm_threads

__all__ = ["Ranker", "RankerConfig"]

_MODEL_FILE = "ranker.txt"
_META_FILE = "ranker.json"


@dataclass(frozen=True)
class RankerConfig:
    num_leaves: int = 15
    learning_rate: float = 0.05
    n_estimators: int = 300
    min_child_samples: int = 20
    seed: int = 0


class Ranker:
    """Scores candidates; ``fit`` (calibrated probability) and ``threshold`` for refinement."""

    def __init__(
        self,
        booster: object,
        feature_names: Sequence[str],
        calibration: tuple[float, float],
        threshold: float,
    ) -> None:
        self.booster = booster
        self.feature_names = list(feature_names)
        self.calibration = calibration
        self.threshold = threshold

    @classmethod
    def fit(
        cls,
        groups: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        feature_names: Sequence[str],
        config: RankerConfig | None = None,
        *,
        progress: bool = False,
    ) -> Ranker:
        """One group per training row (shopper): its candidates' features and relevance;
        ``progress``: a bar over the boosting rounds."""
        import lightgbm as lgb  # heavy (LightGBM and its OpenMP runtime): only a fit needs it
        from sklearn.linear_model import LogisticRegression  # heavy: only a fit needs it

        cfg = config or RankerConfig()
        keep = [i for i, y in enumerate(labels) if len(y)]
        x = np.concatenate([groups[i] for i in keep])
        y = np.concatenate([labels[i] for i in keep]).astype(int)
        sizes = [len(labels[i]) for i in keep]
        model = lgb.LGBMRanker(
            objective="lambdarank",
            num_leaves=cfg.num_leaves,
            learning_rate=cfg.learning_rate,
            n_estimators=cfg.n_estimators,
            min_child_samples=cfg.min_child_samples,
            random_state=cfg.seed,
            # The same trees on every run: LightGBM otherwise picks row- or column-wise histograms
            # by timing them, and sums in thread order. So the trees are also the same at any
            # thread count (agent.ranking.threads: QUERYAGENT_FIT_THREADS).
            deterministic=True,
            force_row_wise=True,
            n_jobs=lightgbm_threads(),
            verbose=-1,
        )
        with tqdm(total=cfg.n_estimators, desc="ranker trees", disable=not progress) as bar:
            model.fit(
                x,
                y,
                group=sizes,
                feature_name=list(feature_names),
                callbacks=[lambda _env: bar.update()],  # reads nothing: the trees are the same
            )
        booster = model.booster_
        raw = np.asarray(booster.predict(x))
        hit = (y >= 3).astype(int)
        if hit.min() == hit.max():
            calibration = (0.0, math.log((hit.mean() + 1e-6) / (1 - hit.mean() + 1e-6)))
        else:
            lr = LogisticRegression().fit(raw.reshape(-1, 1), hit)
            calibration = (float(lr.coef_[0][0]), float(lr.intercept_[0]))
        ranker = cls(booster, feature_names, calibration, 0.0)
        # Threshold: the mean chance of the best candidate over the training rows.
        best, start = [], 0
        probs = ranker._calibrate(raw)
        for n in sizes:
            best.append(float(probs[start : start + n].max()))
            start += n
        ranker.threshold = float(np.mean(best)) if best else 0.0
        return ranker

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * raw + b)))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Raw ranking scores (higher is better) for candidate features ``x``."""
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(x))  # type: ignore[attr-defined]

    def fit_probability(self, x: np.ndarray) -> np.ndarray:
        """The calibrated chance of the Cons@K event for each candidate."""
        return self._calibrate(self.score(x))

    def importance(self) -> dict[str, float]:
        gains = self.booster.feature_importance(importance_type="gain")  # type: ignore[attr-defined]
        total = float(sum(gains)) or 1.0
        return {
            n: round(float(g) / total, 4) for n, g in zip(self.feature_names, gains, strict=True)
        }

    # ----------------------------------------------------------------- persistence

    def save(self, folder: Path, prefix: str = "") -> None:
        self.booster.save_model(str(folder / f"{prefix}{_MODEL_FILE}"))  # type: ignore[attr-defined]
        meta = {
            "feature_names": self.feature_names,
            "calibration": list(self.calibration),
            "threshold": self.threshold,
        }
        (folder / f"{prefix}{_META_FILE}").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path, prefix: str = "") -> Ranker:
        import lightgbm as lgb  # heavy: loaded when a catalog's models are, not on import

        meta = json.loads((folder / f"{prefix}{_META_FILE}").read_text())
        booster = lgb.Booster(model_file=str(folder / f"{prefix}{_MODEL_FILE}"))
        a, b = meta["calibration"]
        return cls(booster, meta["feature_names"], (a, b), float(meta["threshold"]))

    @staticmethod
    def exists(folder: Path, prefix: str = "") -> bool:
        return (folder / f"{prefix}{_META_FILE}").is_file()
