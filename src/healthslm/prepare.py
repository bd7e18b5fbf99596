"""`healthslm prepare --dataset NAME`: raw files in data/ -> instruction records, as JSONL and TOON.

Per task and split: artifacts/records/<dataset>/<task>.<split>.jsonl and .toon (the same records), plus
<task>.fewshot.json: few-shot pools of k examples drawn deterministically from train only.
"""

from __future__ import annotations

import random
from pathlib import Path

import toon_format

from healthslm.data.registry import DatasetSpec, get_dataset
from healthslm.io import atomic_dir, read_jsonl, write_json, write_jsonl, write_text
from healthslm.params import Params
from healthslm.paths import RECORDS_DIR, SKIPPED_FILE
from healthslm.tasks import TaskSpec


def records_path(out_dir: Path, dataset: str, task: str, split: str, suffix: str = "jsonl") -> Path:
    return out_dir / dataset / f"{task}.{split}.{suffix}"


def fewshot_path(out_dir: Path, dataset: str, task: str) -> Path:
    return out_dir / dataset / f"{task}.fewshot.json"


def read_records(out_dir: Path, dataset: str, task: str, split: str) -> list[dict]:
    return read_jsonl(records_path(out_dir, dataset, task, split))


def read_toon_records(path: Path) -> list[dict]:
    return toon_format.decode(path.read_text(encoding="utf-8"))["records"]


def fewshot_pools(train: list[dict], sizes: list[int], seed: int, key: str) -> dict[str, list[str]]:
    """Nested pools (the 1-shot pool is in the 3-shot pool, ...), the same for the same seed and task."""
    order = [record["id"] for record in train]
    random.Random(f"{seed}:{key}").shuffle(order)
    return {str(k): order[:k] for k in sorted(sizes)}


def available_tasks(datasets: list[str], records_dir: Path) -> list[TaskSpec]:
    """Tasks of the datasets that were prepared (not skipped)."""
    tasks: list[TaskSpec] = []
    for name in datasets:
        if not (records_dir / name / SKIPPED_FILE).exists():
            tasks += list(get_dataset(name).tasks)
    return tasks


def split_names(out_dir: Path, dataset: str, task: str) -> list[str]:
    return sorted(p.name.split(".")[1] for p in (out_dir / dataset).glob(f"{task}.*.jsonl"))


def prepare_dataset(spec: DatasetSpec, params: Params, data_dir: Path, out_dir: Path, echo=print) -> None:
    # Read and check everything before writing anything, then swap the whole folder in at once.
    missing = spec.missing_files(data_dir)
    with atomic_dir(out_dir / spec.name) as tmp:
        if spec.user_supplied and missing:
            reason = (
                f"{spec.name}: skipped, no {', '.join(missing)} in {data_dir / spec.raw_dir}/ "
                "(user-supplied data; see README)"
            )
            write_json(tmp / SKIPPED_FILE, {"dataset": spec.name, "reason": reason})
            echo(reason)
            return
        loaded = spec.load(data_dir / spec.raw_dir)
        for (task, split), records in loaded.items():
            write_jsonl(tmp / f"{task}.{split}.jsonl", records)
            write_text(tmp / f"{task}.{split}.toon", toon_format.encode({"records": records}) + "\n")
            echo(f"{spec.name}/{task}.{split}: {len(records)} records")
        for task in spec.tasks:
            pools = fewshot_pools(
                loaded[(task.name, "train")], params.prepare.few_shot_k, params.base.seed, task.key
            )
            write_json(tmp / f"{task.name}.fewshot.json", pools)


def prepare(
    params: Params,
    datasets: list[str],
    data_dir: Path = Path("data"),
    out_dir: Path = RECORDS_DIR,
    echo=print,
) -> None:
    for name in datasets:
        prepare_dataset(get_dataset(name), params, data_dir, out_dir, echo)
