"""The dataset registry: each dataset is a loader plus its task specs.

Plug-in point: a module that calls `register(DatasetSpec(...))`, named in params.yaml's `data.plugins`
(or exposed through the `healthslm.datasets` entry-point group), adds a dataset without touching the core.
`data.loaders.csv_text_dataset` covers the common case of a local CSV with a text and a label column.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from healthslm.data.loaders import BUILTIN_DATASETS
from healthslm.data.spec import DatasetSpec
from healthslm.errors import HealthSLMError
from healthslm.tasks import TaskSpec

__all__ = ["DATASETS", "DatasetSpec", "all_tasks", "get_dataset", "load_plugins", "register"]

DATASETS: dict[str, DatasetSpec] = {}
PLUGINS_DIR = "plugins"


def register(spec: DatasetSpec) -> DatasetSpec:
    for task in spec.tasks:
        if task.dataset != spec.name:
            raise HealthSLMError(f"dataset {spec.name}: task {task.key} belongs to dataset {task.dataset}")
    DATASETS[spec.name] = spec
    return spec


for _builtin in BUILTIN_DATASETS:
    register(_builtin)


def load_plugins(modules: list[str]) -> None:
    """Import plug-in modules (they call `register`) and entry points of group `healthslm.datasets`.

    A project's plug-ins live in plugins/ (a dep of the stages in dvc.yaml, so an edit re-runs them)."""
    folder = os.path.join(os.getcwd(), PLUGINS_DIR)
    if modules and folder not in sys.path:
        sys.path.insert(0, folder)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise HealthSLMError(
                f"params.yaml: data.plugins: cannot import {name!r} ({exc}); plug-ins go in {PLUGINS_DIR}/"
            ) from None
    for entry in entry_points(group="healthslm.datasets"):
        entry.load()


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise HealthSLMError(
            f"params.yaml: data.datasets: unknown dataset {name!r}; known: {', '.join(DATASETS)}"
        )
    return DATASETS[name]


def all_tasks() -> dict[str, TaskSpec]:
    return {task.key: task for spec in DATASETS.values() for task in spec.tasks}
