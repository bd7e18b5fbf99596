"""`healthslm prepare --dataset NAME`: raw files in data/ -> instruction records, as JSONL and TOON.

Per task and split: artifacts/records/<dataset>/<task>.<split>.jsonl and .toon (the same records), plus
<task>.fewshot.json: few-shot pools of k train examples: the seed's published pools where it has them
(PMData, AW_FB: 3, 5, 10), else drawn deterministically from train.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import toon_format

from healthslm.data.people import grouped_split
from healthslm.data.registry import DatasetSpec, get_dataset
from healthslm.errors import HealthSLMError
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


def seed_pool_ids(pool: list[dict], train: list[dict]) -> list[str]:
    """The train records a published pool consists of (matched on input and output)."""
    by_text = {(r["input"], r["output"]): r["id"] for r in train}
    ids = []
    for index, example in enumerate(pool):
        if (found := by_text.get((example["input"], example["output"]))) is None:
            file = example["provenance"]["file"]
            raise HealthSLMError(f"{file} row {index}: few-shot example not found in the train split")
        ids.append(found)
    return ids


def task_pools(task: TaskSpec, train: list[dict], params: Params, published: dict) -> dict:
    """{k: ids} for every k of prepare.few_shot_k, the seed's pool where it published one, and `sources`."""
    pools: dict = fewshot_pools(train, params.prepare.few_shot_k, params.base.seed, task.key)
    sources = {k: "drawn from train (seeded)" for k in pools}
    for k, pool in published.get(task.name, {}).items():
        if str(k) in pools:
            pools[str(k)] = seed_pool_ids(pool, train)
            sources[str(k)] = f"the seed's pool ({pool[0]['provenance']['file']})"
    return pools | {"sources": sources}


def available_tasks(datasets: list[str], records_dir: Path) -> list[TaskSpec]:
    """Tasks of the datasets that were prepared (not skipped)."""
    tasks: list[TaskSpec] = []
    for name in datasets:
        if not (records_dir / name / SKIPPED_FILE).exists():
            tasks += list(get_dataset(name).tasks)
    return tasks


def _strata(records: list[dict], spec: TaskSpec, size: int) -> list[str]:
    """What a limited sample keeps the shares of: the label (continuous: its quintile; text: none)."""
    if spec.label_kind == "text":
        return [""] * len(records)
    if spec.closed:
        return [str(r["label"]) for r in records]
    values = np.array([float(r["label"]) for r in records])
    edges = np.quantile(values, np.linspace(0, 1, min(5, size) + 1)[1:-1])
    return [str(v) for v in np.searchsorted(edges, values)]


def proportional_allocation(counts: dict[str, int], size: int, rng: np.random.Generator) -> dict[str, int]:
    """How many of `size` each stratum gets: its share rounded down, the rest to the largest remainders
    (ties in a seeded order), so every stratum is within one of proportional, a class of one included.
    (scikit-learn's stratified split refuses classes of one; this is its allocation without that limit.)"""
    total = sum(counts.values())
    exact = {name: size * count / total for name, count in counts.items()}
    quota = {name: int(value) for name, value in exact.items()}
    tie = dict(zip(counts, rng.random(len(counts)), strict=True))
    by_remainder = sorted(counts, key=lambda name: (quota[name] - exact[name], tie[name]))
    for name in by_remainder[: size - sum(quota.values())]:
        quota[name] += 1
    return quota


def eval_sample(records: list[dict], spec: TaskSpec, limit: int | None, seed: int) -> list[dict]:
    """`limit` eval records drawn seeded and label-stratified (the same for every mode and model), in file
    order; all of them without a limit. A first-rows cut would inherit the file's order (label-sorted
    upstream files, or PMData's fatigue split, whose first 25 labels are only 2 and 3)."""
    if limit is None or limit >= len(records):
        return records
    strata = _strata(records, spec, limit)
    members: dict[str, list[int]] = {}
    for index, stratum in enumerate(strata):
        members.setdefault(stratum, []).append(index)
    rng = np.random.default_rng(seed)
    quota = proportional_allocation({name: len(rows) for name, rows in sorted(members.items())}, limit, rng)
    chosen = [
        i for name, rows in sorted(members.items()) for i in rng.choice(rows, quota[name], replace=False)
    ]
    return [records[i] for i in sorted(chosen)]


def training_order(records: list[dict], spec: TaskSpec, params: Params) -> list[dict]:
    """Train records in the order training takes them (augment explains the same first ones): seeded-random,
    and with `train.examples_per_task` a seeded, label-stratified draw of that many first (eval's rule), the
    rest after it to stand in for any left out."""
    records = list(records)
    random.Random(f"{params.base.seed}:train:{spec.key}").shuffle(records)
    if not params.train.examples_per_task:
        return records
    drawn = eval_sample(records, spec, params.train.examples_per_task, params.base.seed)
    chosen = {record["id"] for record in drawn}
    return drawn + [record for record in records if record["id"] not in chosen]


def split_names(out_dir: Path, dataset: str, task: str) -> list[str]:
    return sorted(p.name.split(".")[1] for p in (out_dir / dataset).glob(f"{task}.*.jsonl"))


def regroup(loaded: dict, seed: int, echo=print) -> bool:
    """data.split grouped: every task whose windows form groups re-split by group, in place."""
    changed = False
    for task in [task for task, split in loaded if split == "train"]:
        test = loaded.get((task, "eval"), [])
        if sides := grouped_split(loaded[(task, "train")], test, seed):
            loaded[(task, "train")], loaded[(task, "eval")] = sides
            echo(f"{task}: grouped split, {len(sides[1])} eval records (the seed split had {len(test)})")
            changed = True
    return changed


def prepare_dataset(spec: DatasetSpec, params: Params, data_dir: Path, out_dir: Path, echo=print) -> None:
    # Read and check everything before writing anything, then swap the whole folder in at once.
    missing = spec.missing_files(data_dir)
    with atomic_dir(out_dir / spec.name) as tmp:
        if spec.user_supplied and missing:
            reason = (
                f"{spec.name}: skipped, no {', '.join(missing)} in {data_dir / spec.raw_dir}/ "
                "(user-supplied data; see docs/data.md)"
            )
            write_json(tmp / SKIPPED_FILE, {"dataset": spec.name, "reason": reason})
            echo(reason)
            return
        loaded = spec.load(data_dir / spec.raw_dir)
        regrouped = params.data.split == "grouped" and regroup(loaded, params.base.seed, echo)
        for (task, split), records in loaded.items():
            write_jsonl(tmp / f"{task}.{split}.jsonl", records)
            write_text(tmp / f"{task}.{split}.toon", toon_format.encode({"records": records}) + "\n")
            echo(f"{spec.name}/{task}.{split}: {len(records)} records")
        # The seed's published pools are drawn from its train split, which a grouped split changes.
        published = (
            spec.fewshot_pools(data_dir / spec.raw_dir) if spec.fewshot_pools and not regrouped else {}
        )
        for task in spec.tasks:
            pools = task_pools(task, loaded[(task.name, "train")], params, published)
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
