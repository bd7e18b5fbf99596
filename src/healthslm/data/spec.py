"""What a dataset is: its loader, tasks and raw tables. The loaders build these; the registry holds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from healthslm.tasks import TaskSpec

# data/<dataset>/ -> {(task, split): records}
Loader = Callable[[Path], dict[tuple[str, str], list[dict]]]
# data/<dataset>/ -> {task: {k: the k few-shot examples as records}} (the seed's own pools)
Pools = Callable[[Path], dict[str, dict[int, list[dict]]]]
# (data/<dataset>/, the validate params) -> {table name: (raw rows as a DataFrame, [(GX expectation class
# name, kwargs), ...])}. Readings in a table (data/readings.py) get their physical-range suite from the gate.
RawTables = Callable[[Path, object], dict[str, tuple[object, list[tuple[str, dict]]]]]


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
    fewshot_pools: Pools | None = None  # published few-shot pools; others are drawn from train

    @property
    def raw_dir(self) -> str:
        return self.folder or self.name

    def missing_files(self, data_dir: Path) -> list[str]:
        return [f for f in self.required_files if not (data_dir / self.raw_dir / f).exists()]
