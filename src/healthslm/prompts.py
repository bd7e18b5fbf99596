"""Render instruction records into model prompts.

`seed` reproduces HealthSLM-Bench's zero-shot prompt byte for byte: "<instruction> <question>" with
every number in the question wrapped in double quotes (its inference.py does this), then the task's
answer template ("The predicted fatigue level is"). The answer itself is scored as " <label>.",
exactly how the seed's reference answers end.
"""

from __future__ import annotations

import re

from healthslm.tasks import TaskSpec

_NUMBER = re.compile(r"(\d+(\.\d+)?)")


def seed_question(record: dict) -> str:
    quoted = _NUMBER.sub(r'"\1"', record["input"])
    return f"{record['instruction']} {quoted}"


def answer_continuation(label: str) -> str:
    return f" {label}."


def build_context(record: dict, spec: TaskSpec, tokenizer, use_chat_template: bool) -> str:
    """The text the model sees, ending just before the answer (no trailing space)."""
    question = seed_question(record)
    if use_chat_template:
        messages = [{"role": "user", "content": question}]
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return head + spec.answer_prefix
    return f"{question} {spec.answer_prefix}"
