"""The dataset registry: each dataset is a loader plus its task specs.

Plug-in point: a module that calls `register(DatasetSpec(...))`, named in params.yaml's `data.plugins`
(or exposed through the `healthslm.datasets` entry-point group), adds a dataset without touching the core.
`register_csv_text_dataset` covers the common case of a local CSV with a text and a label column.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from healthslm.errors import HealthSLMError
from healthslm.tasks import TaskSpec

# data/<dataset>/ -> {(task, split): records}
Loader = Callable[[Path], dict[tuple[str, str], list[dict]]]
# data/<dataset>/ -> {table name: (raw rows as a DataFrame, [(GX expectation class name, kwargs), ...])}
RawTables = Callable[[Path], dict[str, tuple[object, list[tuple[str, dict]]]]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    tasks: tuple[TaskSpec, ...]
    load: Loader
    license: str = ""
    citation: str = ""
    user_supplied: bool = False  # credentialed data: absent -> skipped with one line, not an error
    required_files: tuple[str, ...] = ()  # for user-supplied data: what must be in data/<folder>/
    folder: str = ""  # folder under data/ (default: the dataset's name)
    raw_tables: RawTables | None = None  # the raw files as tables, for the Great Expectations gate

    @property
    def raw_dir(self) -> str:
        return self.folder or self.name

    def missing_files(self, data_dir: Path) -> list[str]:
        return [f for f in self.required_files if not (data_dir / self.raw_dir / f).exists()]


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    for task in spec.tasks:
        if task.dataset != spec.name:
            raise HealthSLMError(f"dataset {spec.name}: task {task.key} belongs to dataset {task.dataset}")
    DATASETS[spec.name] = spec
    return spec


def load_plugins(modules: list[str]) -> None:
    """Import plug-in modules (they call `register`) and entry points of group `healthslm.datasets`."""
    _builtins()
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # plug-in modules may live in the project folder
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise HealthSLMError(f"params.yaml: data.plugins: cannot import {name!r}: {exc}") from None
    for entry in entry_points(group="healthslm.datasets"):
        entry.load()


def _builtins() -> None:
    import healthslm.data.loaders  # noqa: F401  (registers the built-in datasets on import)


def get_dataset(name: str) -> DatasetSpec:
    _builtins()
    if name not in DATASETS:
        raise HealthSLMError(
            f"params.yaml: data.datasets: unknown dataset {name!r}; known: {', '.join(DATASETS)}"
        )
    return DATASETS[name]


def all_tasks() -> dict[str, TaskSpec]:
    _builtins()
    return {task.key: task for spec in DATASETS.values() for task in spec.tasks}
