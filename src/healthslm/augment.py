"""`healthslm augment`: a reference response per training record, from an OpenAI-compatible endpoint.

As in the seeds (GPT-4o-mini, and IMHI's "experienced psychiatrist" prompt), the model is given the record and
its gold label and asked to explain the label. A response is kept only if it is non-empty, not truncated,
within the length bounds and states the gold label first; every other response is recorded in rejected.jsonl
with its reason. DR/Dreaddit's own gpt-3.5-turbo explanations are imported through the same checks.
Writes artifacts/augmented/<dataset>/<task>.train.{jsonl,toon}, rejected.jsonl and reports/augment.json.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import toon_format

from healthslm.augmented import stated_label
from healthslm.data.registry import all_tasks
from healthslm.errors import HealthSLMError
from healthslm.io import atomic_dir, write_json, write_jsonl, write_text
from healthslm.llm import open_client, run_all
from healthslm.params import AugmentParams, Params
from healthslm.paths import AUGMENT_CACHE, AUGMENT_SUMMARY, AUGMENTED_DIR, RECORDS_DIR
from healthslm.prepare import available_tasks, read_records, training_order
from healthslm.prompts import question
from healthslm.tasks import TaskSpec

REJECTED_FILE = "rejected.jsonl"
PROMPT_VERSION = "augment-v1"  # part of every request, hence of every cache key
IMPORTED = {"provider": "gpt-3.5-turbo", "endpoint": "imported from the IMHI dataset"}
IMPORTED_DATASETS = ("dr", "dreaddit")
ROLES = {"dr": "psychiatrist", "dreaddit": "psychiatrist", "pubmedqa": "biomedical researcher"}
DEFAULT_ROLE = "physician and health-data analyst"


def augmentation_messages(record: dict, spec: TaskSpec) -> list[dict]:
    label = str(record["label"]) if spec.closed else None
    ask = (
        f"The correct answer is: {label}.\nExplain step by step, in at most four sentences, why the data "
        f'supports this answer. Start your reply with "{label}. Reasoning:".'
        if label is not None
        else "Write a clear, accurate reference answer in at most six sentences."
    )
    role = ROLES.get(spec.dataset, DEFAULT_ROLE)
    return [
        {"role": "system", "content": f"You are an experienced {role}. ({PROMPT_VERSION})"},
        {"role": "user", "content": f"{question(record, spec, 'compact')}\n\n{ask}"},
    ]


def rejection(
    spec: TaskSpec, record: dict, text: str, finish_reason: str, params: AugmentParams
) -> str | None:
    """Why a response cannot serve as the record's reference, or None when it can."""
    text = text.strip()
    if not text:
        return "empty"
    if finish_reason == "length":
        return "truncated at max_tokens"
    if len(text) < params.min_chars:
        return f"shorter than {params.min_chars} chars"
    if len(text) > params.max_chars:
        return f"longer than {params.max_chars} chars"
    if spec.closed:
        stated = stated_label(spec, text)
        if stated is None:
            return "states no label first"
        if str(stated) != str(record["label"]):
            return "contradicts the gold label"
    return None


def augmented_record(record: dict, spec: TaskSpec, text: str, provenance: dict) -> dict:
    return {
        **record,
        "id": f"{record['id']}@{provenance['provider']}",
        "record_id": record["id"],
        "output": text.strip(),
        "stated_label": stated_label(spec, text) if spec.closed else None,
        "augmentation": provenance,
    }


def _tasks(params: Params, records_dir: Path, echo) -> list[TaskSpec]:
    """The configured tasks that were prepared; a task of a dataset not in this run is skipped."""
    known = all_tasks()
    available = {spec.key: spec for spec in available_tasks(params.data.datasets, records_dir)}
    specs = []
    for key in params.augment.tasks:
        if key not in known:
            raise HealthSLMError(
                f"params.yaml: augment.tasks: unknown task {key!r}; known: {', '.join(known)}"
            )
        if key not in available:
            echo(f"augment: {key} skipped (its dataset is not in data.datasets, or was not prepared)")
            continue
        if known[key].label_kind == "float":
            raise HealthSLMError(
                f"params.yaml: augment.tasks: {key!r} has a continuous label; augmentation explains "
                "a class label or writes a reference answer"
            )
        specs.append(known[key])
    return specs


def _imported(params: Params, records_dir: Path) -> list[tuple[TaskSpec, dict, str, dict]]:
    if not params.augment.import_existing:
        return []
    out = []
    for spec in available_tasks(params.data.datasets, records_dir):
        if spec.dataset in IMPORTED_DATASETS:
            for record in read_records(records_dir, spec.dataset, spec.name, "train"):
                out.append((spec, record, record["output"], IMPORTED))
    return out


def augment(
    params: Params,
    records_dir: Path = RECORDS_DIR,
    out_dir: Path = AUGMENTED_DIR,
    cache_file: Path = AUGMENT_CACHE,
    summary_file: Path = AUGMENT_SUMMARY,
    echo=print,
) -> dict:
    settings = params.augment
    specs = _tasks(params, records_dir, echo)
    generation = settings.generation()
    with open_client(settings.endpoint, "augment", cache_file) as client:
        work = [
            (spec, record)
            for spec in specs
            # the records training takes first, so `train.targets: augmented` finds their explanations
            for record in training_order(
                read_records(records_dir, spec.dataset, spec.name, "train"), spec, params
            )[: settings.per_task]
        ]
        jobs = [
            lambda spec=spec, record=record: client.complete(
                augmentation_messages(record, spec), **generation
            )
            for spec, record in work
        ]
        replies = run_all(jobs, client.concurrency, "augment")
        usage = client.summary()
    candidates = [
        (spec, record, reply.text, reply.finish_reason, {
            "provider": usage["model"], "endpoint": usage["endpoint"], "prompt_version": PROMPT_VERSION,
            "cache_key": reply.key, "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens, "error": reply.error,
        })
        for (spec, record), reply in zip(work, replies, strict=True)
    ]  # fmt: skip
    candidates += [
        (spec, record, text, "stop", prov) for spec, record, text, prov in _imported(params, records_dir)
    ]
    accepted: dict[TaskSpec, list[dict]] = {}
    rejected: list[dict] = []
    for spec, record, text, finish_reason, provenance in candidates:
        error = provenance.pop("error", None)
        reason = f"no response: {error}" if error else rejection(spec, record, text, finish_reason, settings)
        if reason is None:
            accepted.setdefault(spec, []).append(augmented_record(record, spec, text, provenance))
        else:
            rejected.append(
                {"id": record["id"], "task": spec.key, "reason": reason, "gold": record["label"],
                 "response": text, "provider": provenance["provider"]}
            )  # fmt: skip
    with atomic_dir(out_dir) as tmp:
        for spec, rows in accepted.items():
            write_jsonl(tmp / spec.dataset / f"{spec.name}.train.jsonl", rows)
            write_text(
                tmp / spec.dataset / f"{spec.name}.train.toon", toon_format.encode({"records": rows}) + "\n"
            )
        write_jsonl(tmp / REJECTED_FILE, rejected)
    summary = {
        **usage,
        "prompt_version": PROMPT_VERSION,
        "generated": len(work),
        "imported": len(candidates) - len(work),
        "accepted": {spec.key: len(rows) for spec, rows in accepted.items()},
        "accepted_generated": {
            spec.key: sum(row["augmentation"]["provider"] == usage["model"] for row in rows)
            for spec, rows in accepted.items()
        },
        "rejected": dict(Counter(row["reason"] for row in rejected)),
        "rejected_by_provider": dict(Counter(row["provider"] for row in rejected)),
    }
    write_json(summary_file, summary)
    echo(
        f"augment: {len(work)} generated ({usage['new_responses']} new, {usage['cache_hits']} cached, "
        f"{usage['http_requests']} HTTP requests, {usage['failed_requests']} unanswered after retries), "
        f"{summary['imported']} imported; "
        f"kept {sum(summary['accepted'].values())}, rejected {len(rejected)}: {summary['rejected']}"
    )
    return summary
