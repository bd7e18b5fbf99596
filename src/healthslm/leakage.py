"""Train/eval leakage: eval inputs that also appear in train, identically or nearly (TF-IDF cosine)."""

from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import linear_kernel

_SPACE = re.compile(r"\s+")


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def find_leaks(train: list[dict], test: list[dict], similarity: float, examples: int = 5) -> dict:
    """Counts and examples of eval records whose input matches a train input."""
    train_text = [_normal(r.get("input") or "") for r in train]
    test_text = [_normal(r.get("input") or "") for r in test]
    exact_index = {text: i for i, text in enumerate(train_text)}
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1, dtype=np.float32)
    train_matrix = vectorizer.fit_transform(train_text)
    best_sim = np.zeros(len(test_text))
    best_idx = np.zeros(len(test_text), dtype=int)
    for start in range(0, len(test_text), 512):  # bounded memory on large splits
        sims = linear_kernel(vectorizer.transform(test_text[start : start + 512]), train_matrix)
        best_idx[start : start + len(sims)] = sims.argmax(axis=1)
        best_sim[start : start + len(sims)] = sims.max(axis=1)
    found = []
    for i, text in enumerate(test_text):
        if text in exact_index:
            found.append((test[i]["id"], train[exact_index[text]]["id"], "exact", 1.0))
        elif best_sim[i] >= similarity:
            found.append((test[i]["id"], train[best_idx[i]]["id"], "near", round(float(best_sim[i]), 4)))
    exact = sum(1 for f in found if f[2] == "exact")
    return {
        "eval": len(test),
        "exact": exact,
        "near": len(found) - exact,
        "rate": round(len(found) / max(len(test), 1), 4),
        "examples": [
            {"eval_id": e, "train_id": t, "kind": k, "similarity": s} for e, t, k, s in found[:examples]
        ],
    }
