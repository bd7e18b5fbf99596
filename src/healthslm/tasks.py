"""Task specs: what each task predicts, its answer space and how the seed phrased the answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LabelKind = Literal["int", "float", "class"]
Metric = Literal["accuracy", "mae"]


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    name: str
    label_kind: LabelKind
    label_space: tuple[str, ...]
    answer_prefix: str  # the seed's answer template, e.g. "The predicted fatigue level is"
    metric: Metric  # the paper's headline metric for this task

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.name}"

    def parse_label(self, text: str) -> int | float | str:
        return {"int": int, "float": float, "class": str}[self.label_kind](text)


def _int_range(low: int, high: int) -> tuple[str, ...]:
    return tuple(str(v) for v in range(low, high + 1))


def _pmdata(name: str, low: int, high: int, metric: Metric) -> TaskSpec:
    return TaskSpec("pmdata", name, "int", _int_range(low, high), f"The predicted {name} level is", metric)


TASKS: dict[str, TaskSpec] = {
    spec.key: spec
    for spec in (
        _pmdata("fatigue", 0, 5, "accuracy"),
        _pmdata("readiness", 0, 10, "mae"),
        _pmdata("sleep_quality", 1, 5, "mae"),
        _pmdata("stress", 0, 5, "mae"),
    )
}


def tasks_of(dataset: str) -> list[TaskSpec]:
    return [spec for spec in TASKS.values() if spec.dataset == dataset]
