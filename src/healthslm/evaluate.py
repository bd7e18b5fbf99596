"""`healthslm evaluate`: score each task's eval examples with the model, beside baselines on the same split.

Writes per-task predictions (JSONL) under artifacts/predictions/ and reports/metrics.json.
"""

from __future__ import annotations

import hashlib
import resource
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from healthslm import metrics
from healthslm.baselines import baseline_predictions
from healthslm.data.registry import get_dataset
from healthslm.io import atomic_dir, write_json, write_jsonl
from healthslm.models.loader import load_model_and_tokenizer, model_location
from healthslm.models.registry import ModelPreset, resolve_model
from healthslm.params import Params
from healthslm.prepare import RECORDS_DIR, SKIPPED_FILE, read_records
from healthslm.prompts import answer_continuation, build_context
from healthslm.scoring import LabelScorer
from healthslm.tasks import TaskSpec

PREDICTIONS_DIR = Path("artifacts/predictions")
METRICS_FILE = Path("reports/metrics.json")


def evaluable_tasks(params: Params, records_dir: Path) -> list[TaskSpec]:
    """Tasks with a closed label space whose dataset was prepared (not skipped)."""
    tasks = []
    for name in params.data.datasets:
        if not (records_dir / name / SKIPPED_FILE).exists():
            tasks += [task for task in get_dataset(name).tasks if task.closed]
    return tasks


def _predict(
    scorer: LabelScorer, spec: TaskSpec, records: list[dict], use_chat: bool, prompt_format: str
) -> tuple[list[dict], list[float]]:
    continuations = [answer_continuation(answer) for answer in spec.spoken_answers]
    rows, latencies = [], []
    for record in track(records, description=f"{spec.key:>22}", transient=True):
        context = build_context(record, spec, scorer.tokenizer, use_chat, prompt_format)
        start = time.perf_counter()
        logprobs = scorer.score(context, continuations, special_tokens=not use_chat)
        latencies.append(time.perf_counter() - start)
        best = int(np.argmax(logprobs))
        rows.append(
            {
                "id": record["id"],
                "prompt_sha256": hashlib.sha256(context.encode()).hexdigest(),
                "answer": spec.parse_label(spec.label_space[best]),
                "gold": record["label"],
                "scores": dict(zip(spec.label_space, (round(v, 4) for v in logprobs), strict=True)),
            }
        )
    return rows, latencies


def _disk_mb(location: str) -> float | None:
    path = Path(location)
    if not path.is_dir():
        return None
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def _efficiency(latencies: list[float], wall: float, model, preset: ModelPreset) -> dict[str, float | None]:
    lat = np.array(latencies)
    return {
        "examples": len(lat),
        "examples_per_s": round(len(lat) / wall, 3),
        "latency_mean_s": round(float(lat.mean()), 4),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "disk_mb": _disk_mb(model_location(preset)),
    }


def task_metrics(
    spec: TaskSpec, rows: list[dict], train: list[dict], test: list[dict], params: Params
) -> dict:
    gold = [row["gold"] for row in rows]
    systems = {"model": [row["answer"] for row in rows]}
    systems |= baseline_predictions(spec, train, test, params.base.seed)
    samples, seed = params.eval.bootstrap_samples, params.base.seed
    result: dict = {"n": len(rows)}
    for name, predicted in systems.items():
        result[name] = metrics.score(spec, gold, predicted, samples, seed)
    return result


def evaluate(
    params: Params,
    records_dir: Path = RECORDS_DIR,
    out_dir: Path = PREDICTIONS_DIR,
    metrics_file: Path = METRICS_FILE,
    echo=print,
) -> dict:
    preset = resolve_model(params.model)
    torch.manual_seed(params.base.seed)
    model, tokenizer = load_model_and_tokenizer(preset, dtype=torch.float32)
    use_chat = (
        params.eval.chat_template and preset.chat_template == "tokenizer" and bool(tokenizer.chat_template)
    )
    # bf16 autocast measured slower than fp32 for prefill-bound scoring on this CPU, so "auto" means fp32.
    scorer = LabelScorer(model, tokenizer, autocast_bf16=params.eval.dtype == "bfloat16")
    results: dict = {}
    all_latencies: list[float] = []
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        for spec in evaluable_tasks(params, records_dir):
            test = read_records(records_dir, spec.dataset, spec.name, "eval")[: params.eval.limit]
            train = read_records(records_dir, spec.dataset, spec.name, "train")
            rows, latencies = _predict(scorer, spec, test, use_chat, params.eval.prompt_format)
            all_latencies += latencies
            write_jsonl(tmp / f"{spec.key}.jsonl", rows)
            results[spec.key] = task_metrics(spec, rows, train, test, params)
            echo(_summary_line(spec, results[spec.key]))
    results["efficiency"] = _efficiency(all_latencies, time.perf_counter() - started, model, preset)
    write_json(metrics_file, results)
    return results


def _summary_line(spec: TaskSpec, result: dict) -> str:
    m = spec.metric
    return (
        f"{spec.key}: {m} model {result['model'][m]:.3f} "
        f"[{result['model'][m + '_ci_low']:.3f}, {result['model'][m + '_ci_high']:.3f}] | "
        f"majority {result['majority'][m]:.3f} | classical {result['classical'][m]:.3f} (n={result['n']})"
    )
