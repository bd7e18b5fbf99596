"""Task metrics (scikit-learn) with 95 % bootstrap confidence intervals (scipy)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    root_mean_squared_error,
)

from healthslm.tasks import TaskSpec

LOWER_IS_BETTER = {"mae", "rmse"}


def mean_ci(per_example: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of a mean of per-example scores."""
    if np.ptp(per_example) == 0:
        value = float(per_example[0])
        return value, value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap(
            (per_example,), np.mean, n_resamples=samples, method="percentile", rng=np.random.default_rng(seed)
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def score(spec: TaskSpec, gold: list, predicted: list, samples: int, seed: int) -> dict[str, float]:
    """The task's headline metric with its CI, plus the companion metrics."""
    if spec.metric == "accuracy":
        correct = np.array([str(p) == str(g) for p, g in zip(predicted, gold, strict=True)], dtype=float)
        low, high = mean_ci(correct, samples, seed)
        labels = [spec.parse_label(v) for v in spec.label_space]
        return {
            "accuracy": float(accuracy_score([str(g) for g in gold], [str(p) for p in predicted])),
            "accuracy_ci_low": low,
            "accuracy_ci_high": high,
            "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        }
    y_true = np.array(gold, dtype=float)
    y_pred = np.array(predicted, dtype=float)
    low, high = mean_ci(np.abs(y_true - y_pred), samples, seed)
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "mae_ci_low": low,
        "mae_ci_high": high,
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "accuracy": float(accuracy_score(np.rint(y_true), np.rint(y_pred))),
    }
