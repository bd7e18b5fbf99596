"""The kept augmented responses (artifacts/augmented/, written by the augment stage): the label a response
states first, its explanation after that statement, and each train record's kept response, for training."""

from __future__ import annotations

import re
from pathlib import Path

from healthslm.io import read_jsonl
from healthslm.paths import AUGMENTED_DIR
from healthslm.tasks import TaskSpec

# "The answer ... is: no", "The predicted fatigue level is 3"
_STATEMENT = r"\b(?:answer|label|prediction|predicted|level|score)\b[^.\n]{0,120}?\bis\b:?[\s\W]*"


def _label_statement(spec: TaskSpec, text: str) -> re.Match | None:
    """Where a response states its label first ("yes. Reasoning: ...", "The answer is: no. ...")."""
    head = text.strip().lower()
    labels = "|".join(re.escape(v.lower()) for v in sorted(spec.label_space, key=len, reverse=True))
    return re.match(rf"[\W_]*({labels})\b", head) or re.match(rf"[^.\n]*?{_STATEMENT}({labels})\b", head)


def stated_label(spec: TaskSpec, text: str):
    """The label a response states first, or None."""
    if not (found := _label_statement(spec, text)):
        return None
    return spec.parse_label(spec.label_space[[v.lower() for v in spec.label_space].index(found.group(1))])


def explanation(spec: TaskSpec, text: str) -> str:
    """A kept response without its label statement: "yes. Reasoning: ..." -> "Reasoning: ...". An open-ended
    task's response is all explanation."""
    text = text.strip()
    found = _label_statement(spec, text) if spec.closed else None
    return re.sub(r"^[\s.,:;!]+", "", text[found.end() :]) if found else text


def kept_responses(spec: TaskSpec, augmented_dir: Path = AUGMENTED_DIR) -> dict[str, str]:
    """record id -> its kept augmented response (the first in the file when a record has several: generated
    ones come before imported ones)."""
    path = augmented_dir / spec.dataset / f"{spec.name}.train.jsonl"
    responses: dict[str, str] = {}
    for row in read_jsonl(path) if path.exists() else []:
        responses.setdefault(row["record_id"], row["output"])
    return responses
