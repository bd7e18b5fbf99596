"""Loaders of the built-in datasets: raw files in data/<dataset>/ -> instruction records.

Record schema (shared by every later stage): id, dataset, task, split, instruction, input, output,
label, label_space, provenance {file, sha256, ...}. A malformed file names the file, row and field.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from healthslm.data.spec import DatasetSpec
from healthslm.errors import HealthSLMError
from healthslm.io import sha256_of
from healthslm.tasks import BUILTIN_TASKS, TaskSpec

Records = dict[tuple[str, str], list[dict]]
RECORD_FIELDS = (
    "id",
    "dataset",
    "task",
    "split",
    "instruction",
    "input",
    "output",
    "label",
    "label_space",
    "provenance",
)  # the schema every stage shares; make_record writes exactly these


def tasks_of(dataset: str) -> tuple[TaskSpec, ...]:
    return tuple(t for t in BUILTIN_TASKS if t.dataset == dataset)


def make_record(
    spec: TaskSpec,
    split: str,
    index: int,
    instruction: str,
    input_text: str,
    output: str,
    label,
    provenance: dict,
) -> dict:
    return {
        "id": f"{spec.key}-{split}-{index:05d}",
        "dataset": spec.dataset,
        "task": spec.name,
        "split": split,
        "instruction": instruction,
        "input": input_text,
        "output": output,
        "label": label,
        "label_space": list(spec.label_space),
        "provenance": provenance,
    }


def _provenance(path: Path, **extra) -> dict:
    return {"file": f"{path.parent.name}/{path.name}", "sha256": sha256_of(path), **extra}


def _require(path: Path) -> Path:
    if not path.exists():
        raise HealthSLMError(f"{path}: missing; run `healthslm fetch` first")
    if path.stat().st_size == 0:
        raise HealthSLMError(f"{path}: empty file")
    return path


def _read_text(path: Path) -> str:
    try:
        return _require(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HealthSLMError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise HealthSLMError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def read_csv(path: Path, columns: list[str]) -> pl.DataFrame:
    _read_text(path)  # encoding and presence checks with a clear message
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise HealthSLMError(f"{path}: not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise HealthSLMError(
            f"{path}: missing column(s) {', '.join(missing)}; has {', '.join(frame.columns)}"
        )
    if frame.height == 0:
        raise HealthSLMError(f"{path}: no rows")
    for column in columns:
        empty = frame.with_row_index().filter(
            pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")
        )
        if empty.height:
            raise HealthSLMError(f"{path} row {empty['index'][0]}: field '{column}' is empty")
    return frame


def _answer_label(spec: TaskSpec, answer: str, where: str):
    match = re.fullmatch(re.escape(spec.answer_prefix) + r"\s*(.+?)\.?\s*", answer)
    label = spec.label_of_answer(match.group(1)) if match else None
    if label is None:
        allowed = ", ".join(spec.spoken_answers) or "a number"
        raise HealthSLMError(
            f"{where}: field 'answer' = {answer!r} is not '{spec.answer_prefix} <{allowed}>.'"
        )
    return label


def seed_json_records(spec: TaskSpec, split: str, path: Path) -> list[dict]:
    """Records from one HealthSLM-Bench JSON file (a list of {instruction, question, answer})."""
    rows = read_json(path)
    if not isinstance(rows, list) or not rows:
        raise HealthSLMError(f"{path}: expected a non-empty JSON list of records")
    provenance = _provenance(path)
    records = []
    for index, row in enumerate(rows):
        where = f"{path} row {index}"
        for name in ("instruction", "question", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(name), str) or not row[name].strip():
                raise HealthSLMError(f"{where}: field '{name}' is missing or empty")
        label = _answer_label(spec, row["answer"], where)
        records.append(
            make_record(
                spec, split, index, row["instruction"], row["question"], row["answer"], label, provenance
            )
        )
    return records


def seed_json_loader(dataset: str):
    def load(folder: Path) -> Records:
        out = {}
        for spec in tasks_of(dataset):
            for split, suffix in (("train", "train_all"), ("eval", "eval")):
                out[(spec.name, split)] = seed_json_records(
                    spec, split, folder / f"{dataset}_{spec.name}_{suffix}.json"
                )
        return out

    return load


SEED_POOL_SIZES = (3, 5, 10)  # the seed's train_<k>.json files (there is no 1-shot file)


def seed_pools(dataset: str):
    def pools(folder: Path) -> dict[str, dict[int, list[dict]]]:
        return {
            spec.name: {
                k: seed_json_records(spec, f"pool{k}", folder / f"{dataset}_{spec.name}_train_{k}.json")
                for k in SEED_POOL_SIZES
            }
            for spec in tasks_of(dataset)
        }

    return pools


def load_pubmedqa(folder: Path) -> Records:
    """PQA-L: the official 500-question test split is eval, the other 500 train."""
    spec = tasks_of("pubmedqa")[0]
    questions_path, test_path = folder / "ori_pqal.json", folder / "test_ground_truth.json"
    questions, test_ids = read_json(questions_path), read_json(test_path)
    provenance = _provenance(questions_path, split_file=_provenance(test_path)["file"])
    instruction = "Answer the biomedical research question with yes, no or maybe, based on the abstract."
    out: Records = {("answer", "train"): [], ("answer", "eval"): []}
    for pmid, item in questions.items():
        where = f"{questions_path} entry {pmid}"
        for name in ("QUESTION", "CONTEXTS", "final_decision", "LONG_ANSWER"):
            if not item.get(name):
                raise HealthSLMError(f"{where}: field '{name}' is missing or empty")
        label = item["final_decision"]
        if label not in spec.label_space:
            raise HealthSLMError(f"{where}: field 'final_decision' = {label!r} is not yes, no or maybe")
        if pmid in test_ids and test_ids[pmid] != label:
            raise HealthSLMError(f"{test_path}: {pmid} = {test_ids[pmid]!r} disagrees with {questions_path}")
        split = "eval" if pmid in test_ids else "train"
        context = " ".join(item["CONTEXTS"])
        rows = out[("answer", split)]
        rows.append(
            make_record(
                spec,
                split,
                len(rows),
                instruction,
                f"Context: {context}\nQuestion: {item['QUESTION']}",
                f"The answer is {label}. {item['LONG_ANSWER']}",
                label,
                {**provenance, "pmid": pmid},
            )
        )
    if len(out[("answer", "eval")]) != len(test_ids):
        raise HealthSLMError(f"{test_path}: {len(test_ids)} test ids, {len(out[('answer', 'eval')])} found")
    return out


MEDQUAD_EVAL_SHARE = 1 / 16


def load_medquad(folder: Path) -> Records:
    """Consumer-health QA; split by a hash of the question so repeated questions stay in one split."""
    spec = tasks_of("medquad")[0]
    path = _require(folder / "medquad_answered.jsonl.gz")
    provenance = _provenance(path)
    instruction = "Answer the consumer-health question accurately and clearly."
    out: Records = {("answer", "train"): [], ("answer", "eval"): []}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HealthSLMError(f"{path} line {line_no + 1}: not valid JSON ({exc.msg})") from None
            for name in ("question", "answer", "source", "id"):
                if not str(row.get(name) or "").strip():
                    raise HealthSLMError(f"{path} line {line_no + 1}: field '{name}' is missing or empty")
            bucket = int(hashlib.sha256(row["question"].strip().lower().encode()).hexdigest()[:8], 16)
            split = "eval" if bucket / 0xFFFFFFFF < MEDQUAD_EVAL_SHARE else "train"
            rows = out[("answer", split)]
            rows.append(
                make_record(
                    spec,
                    split,
                    len(rows),
                    instruction,
                    row["question"],
                    row["answer"],
                    None,
                    {**provenance, "line": line_no, "source": row["source"], "url": row.get("url")},
                )
            )
    return out


def _imhi_split(spec: TaskSpec, split: str, path: Path) -> list[dict]:
    test = split == "eval"
    columns = ["query", "gpt-3.5-turbo"] if test else ["post", "question", "response"]
    frame = read_csv(path, columns)
    provenance = _provenance(path, response_by="gpt-3.5-turbo")
    records = []
    for index, row in enumerate(frame.iter_rows(named=True)):
        where = f"{path} row {index}"
        if test:
            post, _, question = row["query"].partition(" Question: ")
            response = row["gpt-3.5-turbo"]
        else:
            post, response = row["post"], row["response"]
        first_word = re.match(r"\s*(\w+)", response)
        label = first_word.group(1).lower() if first_word else ""
        if label not in spec.label_space:
            raise HealthSLMError(
                f"{where}: field '{columns[-1]}' should start with yes or no (got {response[:40]!r})"
            )
        records.append(
            make_record(
                spec, split, index, spec.answer_prefix, post.strip(), response.strip(), label, provenance
            )
        )
    return records


def imhi_loader(dataset: str, prefix: str):
    def load(folder: Path) -> Records:
        spec = tasks_of(dataset)[0]
        files = {"train": "train_complete", "valid": "valid_complete", "eval": "test_complete"}
        return {
            (spec.name, split): _imhi_split(spec, split, folder / f"{prefix}_{name}.csv")
            for split, name in files.items()
        }

    return load


GLOBEM_FEATURES = (
    "Steps",
    "Sleep_efficiency",
    "Time_in_bed_after_wakeup",
    "Sleep_duration",
    "Time_stay_awake_but_still_in_bed",
    "Time_spent_to_fall_asleep",
)
GLOBEM_SPLIT_SEED = 123  # HealthSLM-Bench's shuffle seed: first half train, second half eval (<= 299)


def _globem_text(row: dict, task: str) -> str:
    parts = [f"[{name}]: {float(row[name]):.2f}" for name in GLOBEM_FEATURES]
    return (
        f"The average readings of the recent 14 days show: {', '.join(parts)}; "
        f"What would be the predicted PHQ-4 {task} score?"
    )


def load_globem(folder: Path) -> Records:
    out: Records = {}
    for spec in tasks_of("globem"):
        path = folder / f"globem_{spec.name}.csv"
        label_column = spec.name.capitalize()
        frame = read_csv(path, [*GLOBEM_FEATURES, label_column])
        provenance = _provenance(path)
        instruction = (
            f"You are a personalized healthcare agent trained to predict PHQ-4 {spec.name} score which "
            "ranges from 0 to 4 based on physiological data and user information."
        )
        rows = list(frame.iter_rows(named=True))
        for index, row in enumerate(rows):
            for name in GLOBEM_FEATURES:
                try:
                    float(row[name])
                except ValueError:
                    raise HealthSLMError(
                        f"{path} row {index}: field '{name}' = {row[name]!r} is not a number"
                    ) from None
            if str(row[label_column]).removesuffix(".0") not in spec.label_space:
                raise HealthSLMError(
                    f"{path} row {index}: field '{label_column}' = {row[label_column]!r} is not 0-4"
                )
        order = np.random.default_rng(GLOBEM_SPLIT_SEED).permutation(len(rows))
        half = len(rows) // 2
        for split, picks in (("train", order[:half]), ("eval", order[half:][:299])):
            out[(spec.name, split)] = [
                make_record(
                    spec,
                    split,
                    i,
                    instruction,
                    _globem_text(rows[j], spec.name),
                    f"{spec.answer_prefix} {int(float(rows[j][label_column]))}.",
                    int(float(rows[j][label_column])),
                    {**provenance, "row": int(j)},
                )
                for i, j in enumerate(picks)
            ]
    return out


def write_globem_fixture(folder: Path, rows: int = 60, seed: int = 0) -> None:
    """A synthetic GLOBEM copy with the real schema (for tests and for trying the pipeline)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for task in ("anxiety", "depression"):
        with (folder / f"globem_{task}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["", *GLOBEM_FEATURES, task.capitalize()])
            for i in range(rows):
                writer.writerow(
                    [
                        i,
                        rng.uniform(3000, 20000),
                        rng.uniform(60, 98),
                        rng.uniform(0, 5),
                        rng.uniform(200, 600),
                        rng.uniform(5, 120),
                        rng.uniform(0, 3),
                        int(rng.integers(0, 5)),
                    ]
                )


# --- raw tables for the Great Expectations gate (validate.py) -------------------------------------------

Check = tuple[str, dict]


def _not_null(*columns: str) -> list[Check]:
    return [("ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def _rows(low: int, high: int | None = None) -> Check:
    return ("ExpectTableRowCountToBeBetween", {"min_value": low, "max_value": high})


def seed_json_tables(dataset: str):
    def tables(folder: Path, bounds=None) -> dict:
        out = {}
        for spec in tasks_of(dataset):
            answers = "|".join(re.escape(a) for a in spec.spoken_answers) or r"\d+(\.\d+)?"
            pattern = rf"^{re.escape(spec.answer_prefix)} ({answers})\.$"
            for suffix in ("train_all", "eval"):
                name = f"{dataset}_{spec.name}_{suffix}.json"
                frame = pd.DataFrame(read_json(folder / name))
                out[name] = (
                    frame,
                    [
                        *_not_null("instruction", "question", "answer"),
                        _rows(10),
                        ("ExpectColumnValuesToMatchRegex", {"column": "answer", "regex": pattern}),
                    ],
                )
        return out

    return tables


def pubmedqa_tables(folder: Path, bounds=None) -> dict:
    frame = pd.DataFrame(read_json(folder / "ori_pqal.json").values())
    checks = [
        *_not_null("QUESTION", "CONTEXTS", "LONG_ANSWER"),
        _rows(1000, 1000),
        ("ExpectColumnValuesToBeInSet", {"column": "final_decision", "value_set": ["yes", "no", "maybe"]}),
    ]
    return {"ori_pqal.json": (frame, checks)}


def medquad_tables(folder: Path, bounds=None) -> dict:
    frame = pd.read_json(_require(folder / "medquad_answered.jsonl.gz"), lines=True, compression="gzip")
    return {"medquad_answered.jsonl.gz": (frame, [*_not_null("question", "answer", "source"), _rows(16000)])}


def imhi_tables(prefix: str):
    def tables(folder: Path, bounds=None) -> dict:
        out = {}
        for name, columns in (
            ("train_complete", ("post", "response")),
            ("valid_complete", ("post", "response")),
            ("test_complete", ("query", "gpt-3.5-turbo")),
        ):
            file_name = f"{prefix}_{name}.csv"
            read_csv(folder / file_name, list(columns))  # clear errors for a missing file or column
            frame = pd.read_csv(folder / file_name, dtype=str)
            answer = ("ExpectColumnValuesToMatchRegex", {"column": columns[1], "regex": r"^\s*(?i:yes|no)\b"})
            out[file_name] = (frame, [*_not_null(*columns), _rows(100), answer])
        return out

    return tables


def globem_tables(folder: Path, bounds=None) -> dict:
    out = {}
    for spec in tasks_of("globem"):
        file_name, label = f"globem_{spec.name}.csv", spec.name.capitalize()
        read_csv(folder / file_name, [*GLOBEM_FEATURES, label])
        frame = pd.read_csv(folder / file_name, dtype=str)
        checks = [
            *_not_null(*GLOBEM_FEATURES, label),
            _rows(10),
            ("ExpectColumnValuesToMatchRegex", {"column": label, "regex": r"^[0-4](\.0)?$"}),
        ]
        out[file_name] = (frame, checks)
    return out


def csv_text_dataset(
    name: str,
    *,
    task: str,
    files: dict[str, str],
    text_column: str,
    label_column: str,
    label_space: tuple[str, ...],
    instruction: str,
    answer_prefix: str,
    license: str = "",
    citation: str = "",
) -> DatasetSpec:
    """A text-classification dataset from local CSV files in data/<name>/ (e.g. ISEAR, SDCNL, DepSeverity).

    `files` maps a split (train, eval, optionally valid) to a CSV file name. Register the result with
    `healthslm.data.registry.register` from a module listed in params.yaml's `data.plugins`.
    """
    # Prompted as declared: "<instruction>\n<text>" then the answer prefix, in training and evaluation alike.
    spec = TaskSpec(name, task, "class", tuple(label_space), answer_prefix, "accuracy")

    def load(folder: Path) -> Records:
        out = {}
        for split, file_name in files.items():
            path = folder / file_name
            frame = read_csv(path, [text_column, label_column])
            provenance = _provenance(path)
            records = []
            for index, row in enumerate(frame.iter_rows(named=True)):
                label = row[label_column].strip()
                if label not in spec.label_space:
                    allowed = ", ".join(spec.label_space)
                    raise HealthSLMError(
                        f"{path} row {index}: field '{label_column}' = {label!r} is not one of {allowed}"
                    )
                records.append(
                    make_record(
                        spec,
                        split,
                        index,
                        instruction,
                        row[text_column].strip(),
                        f"{answer_prefix} {label}.",
                        label,
                        provenance,
                    )
                )
            out[(task, split)] = records
        return out

    def tables(folder: Path, bounds) -> dict:
        """Each file: its declared columns present and filled, labels in the label space, text lengths
        within validate.min_input_chars and validate.max_prompt_chars."""
        out = {}
        for file_name in files.values():
            read_csv(folder / file_name, [text_column, label_column])  # a clear error for a missing column
            frame = pd.read_csv(folder / file_name, dtype=str, keep_default_na=False)
            frame[label_column] = frame[label_column].str.strip()
            length = {"min_value": bounds.min_input_chars, "max_value": bounds.max_prompt_chars}
            out[file_name] = (
                frame,
                [
                    *_not_null(text_column, label_column),
                    _rows(10),
                    ("ExpectColumnValuesToBeInSet", {"column": label_column, "value_set": list(label_space)}),
                    ("ExpectColumnValueLengthsToBeBetween", {"column": text_column, **length,
                                                             "meta": {"param": "validate.min_input_chars, "
                                                                               "validate.max_prompt_chars"}}),
                ],
            )  # fmt: skip
        return out

    return DatasetSpec(name, (spec,), load, license, citation, raw_tables=tables)


PMDATA_CITE = "Thambawita et al., MMSys 2020; HealthSLM-Bench, arXiv:2509.07260"
BUILTIN_DATASETS = (
    DatasetSpec(
        "pmdata",
        tasks_of("pmdata"),
        seed_json_loader("pmdata"),
        "CC BY 4.0",
        PMDATA_CITE,
        raw_tables=seed_json_tables("pmdata"),
        fewshot_pools=seed_pools("pmdata"),
    ),
    DatasetSpec(
        "aw_fb",
        tasks_of("aw_fb"),
        seed_json_loader("aw_fb"),
        "Harvard Dataverse terms (CC0)",
        "Fuller et al., doi:10.7910/DVN/ZS2Z2J; HealthSLM-Bench, arXiv:2509.07260",
        raw_tables=seed_json_tables("aw_fb"),
        fewshot_pools=seed_pools("aw_fb"),
    ),
    DatasetSpec(
        "globem",
        tasks_of("globem"),
        load_globem,
        "credentialed (PhysioNet GLOBEM)",
        "Xu et al., NeurIPS 2022 Datasets and Benchmarks",
        user_supplied=True,
        required_files=("globem_anxiety.csv", "globem_depression.csv"),
        raw_tables=globem_tables,
    ),
    DatasetSpec(
        "pubmedqa",
        tasks_of("pubmedqa"),
        load_pubmedqa,
        "MIT",
        "Jin et al., EMNLP 2019",
        raw_tables=pubmedqa_tables,
    ),
    DatasetSpec(
        "medquad",
        tasks_of("medquad"),
        load_medquad,
        "CC BY 4.0",
        "Ben Abacha & Demner-Fushman, BMC Bioinformatics 2019",
        raw_tables=medquad_tables,
    ),
    DatasetSpec(
        "dr",
        tasks_of("dr"),
        imhi_loader("dr", "DR"),
        "MIT; non-clinical research use",
        "Yang et al., MentaLLaMA, WWW 2024",
        raw_tables=imhi_tables("DR"),
    ),
    DatasetSpec(
        "dreaddit",
        tasks_of("dreaddit"),
        imhi_loader("dreaddit", "dreaddit"),
        "MIT; non-clinical research use",
        "Turcan & McKeown, 2019; Yang et al., MentaLLaMA, WWW 2024",
        raw_tables=imhi_tables("dreaddit"),
    ),
)
