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

The order may be factorized (``RankerConfig.hit_gain``, g; off by default): a second LightGBM
model, a binary classifier fitted on the candidates that are the shopper's real next query,
gives P(the query's products hold the next item | it is the right query) from the same features
plus ``mass_hit / mass_category``; a candidate's score is the ranker's raw score plus g times the
log of that chance, i.e. the ranker's softmax over a shopper's candidates times P^g (the
softmax's normalizer is the same for all of a shopper's candidates). On the dense search and the
earlier next-item model, 5-fold cross-validation over the test fit's rows gave g 0.25 Cons@10
+6% (26 rows better, 6 worse); refitted on the fused search and the text-started next-item model
it moves nothing on `valid` (``bench/factorized_check.py``), hence off. The calibration and the
threshold are fitted on the (factorized) score.
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
_HIT_FILE = "ranker-hit.txt"
_META_FILE = "ranker.json"
_EPS = 1e-6  # the hit chance's floor inside the log


@dataclass(frozen=True)
class RankerConfig:
    num_leaves: int = 15
    learning_rate: float = 0.05
    n_estimators: int = 300
    min_child_samples: int = 20
    seed: int = 0
    # The factorized order's exponent g on P(retrieves the next item | right query); 0 turns the
    # second model off. Its classifier is fitted only with enough right-query rows of each kind.
    # Off by default: refitted on the fused search and the text-started next-item model, no g
    # moved Cons@10 on `valid` (g 0.25: 23 shoppers better, 22 worse; g 0.5: 38 / 29, p 0.33)
    # and g >= 0.5 cost Q_EM (bench/factorized_check.py, bench/results/factorized_check.json).
    hit_gain: float = 0.0
    hit_estimators: int = 200
    hit_min_rows: int = 50


class Ranker:
    """Scores candidates; ``fit`` (calibrated probability) and ``threshold`` for refinement."""

    def __init__(
        self,
        booster: object,
        feature_names: Sequence[str],
        calibration: tuple[float, float],
        threshold: float,
        hit_booster: object | None = None,
        hit_gain: float = 0.0,
    ) -> None:
        self.booster = booster
        self.feature_names = list(feature_names)
        self.calibration = calibration
        self.threshold = threshold
        self.hit_booster = hit_booster  # None: the order is the ranker's alone
        self.hit_gain = hit_gain if hit_booster is not None else 0.0

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
        hit = (y >= 3).astype(int)
        hit_booster = _fit_hit_model(x, y, list(feature_names), cfg)
        ranker = cls(booster, feature_names, (1.0, 0.0), 0.0, hit_booster, cfg.hit_gain)
        raw = ranker.score(x)
        if hit.min() == hit.max():
            calibration = (0.0, math.log((hit.mean() + 1e-6) / (1 - hit.mean() + 1e-6)))
        else:
            lr = LogisticRegression().fit(raw.reshape(-1, 1), hit)
            calibration = (float(lr.coef_[0][0]), float(lr.intercept_[0]))
        ranker.calibration = calibration
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
        """Raw ranking scores (higher is better) for candidate features ``x``: the ranker's,
        plus ``hit_gain`` times the log chance that a right query's products hold the next
        item (the factorized order; see the module doc)."""
        if len(x) == 0:
            return np.zeros(0)
        raw = np.asarray(self.booster.predict(x))  # type: ignore[attr-defined]
        if self.hit_booster is None or self.hit_gain == 0.0:
            return raw
        return raw + self.hit_gain * np.log(np.maximum(self.hit_probability(x), _EPS))

    def hit_probability(self, x: np.ndarray) -> np.ndarray:
        """P(the candidate's products hold the next item | it is the right query); 1 without
        the second model."""
        if self.hit_booster is None or len(x) == 0:
            return np.ones(len(x))
        extra = _hit_features(x, self.feature_names)
        return np.asarray(self.hit_booster.predict(extra))  # type: ignore[attr-defined]

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
        if self.hit_booster is not None:
            self.hit_booster.save_model(str(folder / f"{prefix}{_HIT_FILE}"))  # type: ignore[attr-defined]
        meta = {
            "feature_names": self.feature_names,
            "calibration": list(self.calibration),
            "threshold": self.threshold,
            "hit_gain": self.hit_gain,
        }
        (folder / f"{prefix}{_META_FILE}").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path, prefix: str = "") -> Ranker:
        import lightgbm as lgb  # heavy: loaded when a catalog's models are, not on import

        meta = json.loads((folder / f"{prefix}{_META_FILE}").read_text())
        booster = lgb.Booster(model_file=str(folder / f"{prefix}{_MODEL_FILE}"))
        a, b = meta["calibration"]
        hit_file = folder / f"{prefix}{_HIT_FILE}"
        # Models saved before the factorized order have no second model: the ranker's order.
        hit = lgb.Booster(model_file=str(hit_file)) if hit_file.is_file() else None
        return cls(
            booster,
            meta["feature_names"],
            (a, b),
            float(meta["threshold"]),
            hit,
            float(meta.get("hit_gain", 0.0)),
        )

    @staticmethod
    def exists(folder: Path, prefix: str = "") -> bool:
        return (folder / f"{prefix}{_META_FILE}").is_file()


def _hit_features(x: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    """The features plus ``mass_hit / mass_category`` (the share of the query's category mass
    its products hold), the second model's input."""
    names = list(feature_names)
    if "mass_hit" in names and "mass_category" in names:
        hit, cat = x[:, names.index("mass_hit")], x[:, names.index("mass_category")]
        share = np.divide(hit, cat, out=np.zeros_like(hit, dtype=float), where=cat > 0)
    else:
        share = np.zeros(len(x))
    return np.column_stack([x, share])


def _fit_hit_model(
    x: np.ndarray, y: np.ndarray, feature_names: list[str], cfg: RankerConfig
) -> object | None:
    """The factorized order's second model: on the candidates that are the right query
    (relevance >= 1), whether their products hold the next item (relevance 3). None when g is
    0 or either kind has fewer than ``hit_min_rows`` rows."""
    right = y >= 1
    hits = int((y[right] >= 3).sum())
    if cfg.hit_gain == 0.0 or min(hits, int(right.sum()) - hits) < cfg.hit_min_rows:
        return None
    import lightgbm as lgb  # heavy (LightGBM and its OpenMP runtime): only a fit needs it

    model = lgb.LGBMClassifier(
        n_estimators=cfg.hit_estimators,
        num_leaves=cfg.num_leaves,
        learning_rate=cfg.learning_rate,
        min_child_samples=cfg.min_child_samples,
        random_state=cfg.seed,
        deterministic=True,  # the same trees on every run and thread count (see the ranker)
        force_row_wise=True,
        n_jobs=lightgbm_threads(),
        verbose=-1,
    )
    model.fit(
        _hit_features(x[right], feature_names),
        (y[right] >= 3).astype(int),
        feature_name=[*feature_names, "mass_hit_share"],
    )
    return model.booster_
