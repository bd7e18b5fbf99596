"""`healthslm prepare`: raw files in data/ -> instruction records (JSONL), one file per task and split.

Record schema (shared by every later stage): id, dataset, task, split, instruction, input, output,
label, label_space, provenance {file, sha256}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from healthslm.data.fetch import load_sources, sha256_of
from healthslm.errors import HealthSLMError
from healthslm.io import atomic_dir, write_jsonl
from healthslm.params import Params
from healthslm.tasks import TaskSpec, tasks_of

RECORDS_DIR = Path("artifacts/records")
SPLIT_FILES = {"train": "{dataset}_{task}_train_all.json", "eval": "{dataset}_{task}_eval.json"}


def _read_json_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise HealthSLMError(f"{path}: missing; run `healthslm fetch` first")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise HealthSLMError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise HealthSLMError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(rows, list) or not rows:
        raise HealthSLMError(f"{path}: expected a non-empty JSON list of records")
    return rows


def _label_from_answer(spec: TaskSpec, answer: str, where: str) -> int | float | str:
    match = re.fullmatch(re.escape(spec.answer_prefix) + r"\s*(.+?)\.?\s*", answer)
    if not match or match.group(1) not in spec.label_space:
        allowed = ", ".join(spec.label_space)
        raise HealthSLMError(
            f"{where}: field 'answer' = {answer!r} is not '{spec.answer_prefix} <{allowed}>.'"
        )
    return spec.parse_label(match.group(1))


def seed_records(spec: TaskSpec, split: str, path: Path, checksum: str) -> list[dict]:
    """Records from one HealthSLM-Bench JSON file (instruction, question, answer)."""
    records = []
    for index, row in enumerate(_read_json_rows(path)):
        where = f"{path} row {index}"
        for field in ("instruction", "question", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(field), str) or not row[field].strip():
                raise HealthSLMError(f"{where}: field '{field}' is missing or empty")
        records.append(
            {
                "id": f"{spec.key}-{split}-{index:04d}",
                "dataset": spec.dataset,
                "task": spec.name,
                "split": split,
                "instruction": row["instruction"],
                "input": row["question"],
                "output": row["answer"],
                "label": _label_from_answer(spec, row["answer"], where),
                "label_space": list(spec.label_space),
                "provenance": {"file": f"{spec.dataset}/{path.name}", "sha256": checksum},
            }
        )
    return records


def load_pmdata(data_dir: Path) -> dict[tuple[str, str], list[dict]]:
    pins = {item.file: item.sha256 for item in load_sources()["pmdata"]}
    out = {}
    for spec in tasks_of("pmdata"):
        for split, pattern in SPLIT_FILES.items():
            name = pattern.format(dataset="pmdata", task=spec.name)
            path = data_dir / "pmdata" / name
            checksum = sha256_of(path) if path.exists() else pins.get(name, "")
            out[(spec.name, split)] = seed_records(spec, split, path, checksum)
    return out


LOADERS: dict[str, Callable[[Path], dict[tuple[str, str], list[dict]]]] = {"pmdata": load_pmdata}


def records_path(out_dir: Path, dataset: str, task: str, split: str) -> Path:
    return out_dir / dataset / f"{task}.{split}.jsonl"


def prepare(params: Params, data_dir: Path = Path("data"), out_dir: Path = RECORDS_DIR, echo=print) -> None:
    # Read and check everything before writing anything, then swap the whole folder in at once.
    loaded = {dataset: LOADERS[dataset](data_dir) for dataset in params.data.datasets}
    with atomic_dir(out_dir) as tmp:
        for dataset, splits in loaded.items():
            for (task, split), records in splits.items():
                write_jsonl(records_path(tmp, dataset, task, split), records)
                echo(f"{dataset}/{task}.{split}: {len(records)} records")
