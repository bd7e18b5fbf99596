"""Baselines on the same split as the model: a constant (majority class / median) and a classical model.

Wearable tasks: gradient boosting on the numbers the prompt shows (summary statistics of each series).
Text tasks: TF-IDF + logistic regression. Both are fitted on the train split only.
"""

from __future__ import annotations

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from healthslm.prompts import COMPACT_FIELDS, compact_readings
from healthslm.tasks import TaskSpec


def reading_features(record: dict) -> dict[str, float | str]:
    """Per series: mean, std, min, max, last and length; scalars as they are (missing values skipped)."""
    features: dict[str, float | str] = {}
    for name, value in compact_readings(record, record["dataset"]).items():
        if isinstance(value, list):
            values = np.array([v for v in value if v is not None], dtype=float)
            features[f"{name}_n"] = float(values.size)
            if values.size:
                stats = (values.mean(), values.std(), values.min(), values.max(), values[-1])
                for stat, number in zip(("mean", "std", "min", "max", "last"), stats, strict=True):
                    features[f"{name}_{stat}"] = float(number)
        else:
            features[name] = value
    return features


def _snap(values: np.ndarray, spec: TaskSpec) -> list:
    """Round regression outputs onto the task's integer label space."""
    allowed = np.array([float(v) for v in spec.label_space])
    return [spec.parse_label(spec.label_space[int(np.abs(allowed - v).argmin())]) for v in values]


def _classical(spec: TaskSpec, seed: int):
    if spec.dataset not in COMPACT_FIELDS:
        text = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000)
        return make_pipeline(text, LogisticRegression(max_iter=2000, random_state=seed))
    vectorizer = DictVectorizer(sparse=False)
    if spec.metric == "accuracy":
        return make_pipeline(vectorizer, HistGradientBoostingClassifier(random_state=seed))
    return make_pipeline(vectorizer, HistGradientBoostingRegressor(loss="absolute_error", random_state=seed))


def _inputs(spec: TaskSpec, records: list[dict]) -> list:
    if spec.dataset not in COMPACT_FIELDS:
        return [r["input"] for r in records]
    return [reading_features(r) for r in records]


def baseline_predictions(spec: TaskSpec, train: list[dict], test: list[dict], seed: int) -> dict[str, list]:
    y_train = [r["label"] for r in train]
    x_train, x_test = _inputs(spec, train), _inputs(spec, test)
    classical = _classical(spec, seed).fit(x_train, y_train).predict(x_test)
    placeholder = np.zeros((len(x_train), 1))
    if spec.metric == "accuracy":
        constant = (
            DummyClassifier(strategy="most_frequent")
            .fit(placeholder, y_train)
            .predict(np.zeros((len(test), 1)))
        )
        return {"majority": list(constant), "classical": list(classical)}
    constant = DummyRegressor(strategy="median").fit(placeholder, y_train).predict(np.zeros((len(test), 1)))
    if spec.label_kind == "int":
        return {"majority": _snap(constant, spec), "classical": _snap(classical, spec)}
    return {"majority": list(constant), "classical": list(classical)}
