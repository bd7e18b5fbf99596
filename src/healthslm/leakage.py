"""Train/eval leakage: eval inputs that also appear in train, identically or nearly (TF-IDF cosine), or that
share days of readings with a train record (data/people.py)."""

from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import linear_kernel

from healthslm.data.people import shared_readings
from healthslm.data.readings import raw_fields

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


def copies_across_tasks(test: list[dict], other_train: list[dict]) -> set[str]:
    """Eval records of one task whose readings reappear in another task's train record of the same dataset
    (AW_FB's activity and calories tasks are built from the same minutes: a calories prompt shows the
    activity type). Matched on the readings both tasks show."""
    if not test or not other_train:
        return set()
    common = sorted(set(raw_fields(test[0])) & set(raw_fields(other_train[0])))
    if not common:
        return set()

    def key(record: dict) -> tuple:
        fields = raw_fields(record)
        return tuple(fields.get(name) for name in common)

    seen = {key(record) for record in other_train}
    return {record["id"] for record in test if key(record) in seen}


def leaked_ids(
    test: list[dict], own_train: list[dict], other_train: list[list[dict]], similarity: float
) -> set[str]:
    """Eval records with an exact or near copy in their task's train split, a copy of their readings in
    another task's train split, or days of readings shared with any of those train records (the same
    person's same days): what the leak-free figures leave out."""
    found = find_leaks(own_train, test, similarity, examples=len(test))
    leaked = {example["eval_id"] for example in found["examples"]}
    for train in other_train:
        leaked |= copies_across_tasks(test, train)
    for train in [own_train, *other_train]:
        leaked |= shared_readings(test, train)
    return leaked
