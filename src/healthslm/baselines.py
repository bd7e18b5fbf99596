"""Baselines on the same split as the model: a constant (majority class / median) and a classical model.

The classical model reads the same numbers the prompt shows (summary statistics of each 14-day series)
and is fitted on the train split only.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from healthslm.tasks import TaskSpec

_SERIES = re.compile(r"\[([A-Za-z ]+)\]: \[([^\]]*)\]")
_MOOD = re.compile(r"\[Mood\]: (\d+) out of")
PMDATA_SERIES = ("Steps", "Burned Calorories", "Resting Heart Rate", "SleepMinutes")


def pmdata_features(text: str) -> list[float]:
    """mean, std, min, max, last and length of each series, plus mood; a 0.0 resting HR means missing."""
    series = {name: values for name, values in _SERIES.findall(text)}
    features: list[float] = []
    for name in PMDATA_SERIES:
        values = np.array([float(v) for v in series.get(name, "").split(",") if v.strip()], dtype=float)
        if name == "Resting Heart Rate":
            values = values[values > 0]
        if values.size == 0:
            features += [np.nan] * 5 + [0.0]
        else:
            features += [
                values.mean(),
                values.std(),
                values.min(),
                values.max(),
                values[-1],
                float(values.size),
            ]
    mood = _MOOD.search(text)
    features.append(float(mood.group(1)) if mood else np.nan)
    return features


FEATURES = {"pmdata": pmdata_features}


def _snap(values: np.ndarray, spec: TaskSpec) -> list:
    """Round regression outputs onto the task's integer label space."""
    allowed = np.array([float(v) for v in spec.label_space])
    return [spec.parse_label(spec.label_space[int(np.abs(allowed - v).argmin())]) for v in values]


def baseline_predictions(spec: TaskSpec, train: list[dict], test: list[dict], seed: int) -> dict[str, list]:
    y_train = [r["label"] for r in train]
    features = FEATURES[spec.dataset]
    x_train = np.array([features(r["input"]) for r in train])
    x_test = np.array([features(r["input"]) for r in test])
    if spec.metric == "accuracy":
        constant = DummyClassifier(strategy="most_frequent").fit(x_train, y_train).predict(x_test)
        classical = HistGradientBoostingClassifier(random_state=seed).fit(x_train, y_train).predict(x_test)
        return {"majority": list(constant), "classical": list(classical)}
    constant = DummyRegressor(strategy="median").fit(x_train, y_train).predict(x_test)
    regressor = HistGradientBoostingRegressor(loss="absolute_error", random_state=seed)
    classical = regressor.fit(x_train, y_train).predict(x_test)
    return {"majority": _snap(constant, spec), "classical": _snap(classical, spec)}
