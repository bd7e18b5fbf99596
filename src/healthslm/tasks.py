"""Task specs: what each task predicts, its answer space, and how the seed phrased the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LabelKind = Literal["int", "float", "class", "text"]
Metric = Literal["accuracy", "mae", "rouge_l"]


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    name: str
    label_kind: LabelKind
    label_space: tuple[str, ...]  # allowed labels; empty for continuous and open-ended tasks
    answer_prefix: str  # the seed's answer template, e.g. "The predicted fatigue level is"
    metric: Metric  # the headline metric (the paper's, where the paper has the task)
    # What the model says for each label, when it differs from the label (AW_FB's seed answers "5"
    # for "Running 3 METs").
    answers: tuple[str, ...] = field(default=())
    input_first: bool = False  # IMHI prompts put the post before the question
    explained: bool = False  # the reference outputs carry an explanation (IMHI's gpt-3.5 responses)

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.name}"

    @property
    def closed(self) -> bool:
        """Whether the answer is chosen from a finite label space."""
        return bool(self.label_space)

    @property
    def spoken_answers(self) -> tuple[str, ...]:
        return self.answers or self.label_space

    def parse_label(self, text: str) -> int | float | str:
        return {"int": int, "float": float, "class": str, "text": str}[self.label_kind](text)

    def label_of_answer(self, answer: str) -> int | float | str | None:
        """The label the seed's answer text stands for, or None if it is not one."""
        if not self.closed:
            try:
                return self.parse_label(answer)
            except ValueError:
                return None
        if answer not in self.spoken_answers:
            return None
        return self.parse_label(self.label_space[self.spoken_answers.index(answer)])


def int_range(low: int, high: int) -> tuple[str, ...]:
    return tuple(str(v) for v in range(low, high + 1))


def _pmdata(name: str, low: int, high: int, metric: Metric) -> TaskSpec:
    return TaskSpec("pmdata", name, "int", int_range(low, high), f"The predicted {name} level is", metric)


def _globem(name: str) -> TaskSpec:
    return TaskSpec("globem", name, "int", int_range(0, 4), f"The predicted PHQ-4 {name} score is", "mae")


def _imhi(dataset: str, condition: str) -> TaskSpec:
    question = f'Question: The answer to the question "Does the poster suffers from {condition}?" is'
    return TaskSpec(
        dataset, condition, "class", ("yes", "no"), question, "accuracy", input_first=True, explained=True
    )


ACTIVITIES = ("Self Pace Walk", "Sitting", "Lying", "Running 7 METs", "Running 5 METs", "Running 3 METs")

BUILTIN_TASKS: tuple[TaskSpec, ...] = (
    _pmdata("fatigue", 0, 5, "accuracy"),
    _pmdata("readiness", 0, 10, "mae"),
    _pmdata("sleep_quality", 1, 5, "mae"),
    _pmdata("stress", 0, 5, "mae"),
    TaskSpec(
        "aw_fb",
        "activity",
        "class",
        ACTIVITIES,
        "The predicted activity type is",
        "accuracy",
        answers=int_range(0, 5),
    ),
    TaskSpec("aw_fb", "calories", "float", (), "The predicted calorie burn is", "mae"),
    _globem("anxiety"),
    _globem("depression"),
    TaskSpec("pubmedqa", "answer", "class", ("yes", "no", "maybe"), "The answer is", "accuracy"),
    TaskSpec("medquad", "answer", "text", (), "", "rouge_l"),
    _imhi("dr", "depression"),
    _imhi("dreaddit", "stress"),
)
