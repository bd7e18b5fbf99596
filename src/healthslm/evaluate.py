"""Evaluation: every task in every mode of eval.mode, beside baselines on the same split.

Two stages call it: `evaluate` runs the pretrained model's modes (zs, fs-k), never needing training;
`evaluate_finetuned` runs the ft mode on the train stage's model. Each mode's efficiency is its own: latency,
throughput and the peak memory of that mode's work (with the one model it used).

Answer strategies: `score` (default) picks the answer with the highest likelihood (closed tasks) or decodes a
constrained number (continuous tasks), so every example gets a valid answer; `generate` reproduces the
seed's greedy decoding + regex parsing and reports its invalid-output rate. Open-ended tasks (MedQuAD, and
the DR/Dreaddit explanations) are generated and scored as text (zero-shot only).
Writes per-task predictions under artifacts/predictions/<base|finetuned>/<mode>/, reports/metrics.json (or
metrics_ft.json) and reports/plots/<base|finetuned>/.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from healthslm import metrics
from healthslm.baselines import baseline_predictions
from healthslm.data.people import overlap_groups
from healthslm.generation import (
    Generated,
    NumberDecoder,
    generate_batch,
    length_buckets,
    parse_answer,
)
from healthslm.io import atomic_dir, write_json, write_jsonl
from healthslm.leakage import leaked_ids
from healthslm.models import finetuned as models
from healthslm.models.dtype import numerics
from healthslm.params import Params
from healthslm.paths import PLOTS_DIR, PREDICTIONS_DIR, RECORDS_DIR, metrics_file, model_group
from healthslm.plots import write_plots
from healthslm.prepare import available_tasks, eval_sample, fewshot_path, read_records
from healthslm.prompts import answer_continuation, build_context, shared_prefix
from healthslm.resources import PeakMemory, cpu_name
from healthslm.scoring import LabelScorer
from healthslm.tasks import TaskSpec


@dataclass(frozen=True)
class EvalSet:
    """One task's scored rows: the same for every mode and model of a run."""

    train: list[dict]
    test: list[dict]  # the eval.limit sample, in file order
    groups: np.ndarray | None  # resampling units: people (windows linked by readings), None = row by row
    clusters: int  # units among the scored rows
    leaked: frozenset[str]  # ids of rows with a copy in a train split the model or a baseline saw


def eval_set(spec: TaskSpec, records_dir: Path, params: Params) -> EvalSet:
    train = read_records(records_dir, spec.dataset, spec.name, "train")
    split = read_records(records_dir, spec.dataset, spec.name, "eval")
    test = eval_sample(split, spec, params.eval.limit, params.base.seed)
    groups = None
    # Over train and eval together: one person's eval windows linked only through a train window between
    # them are still one person.
    if (by_row := overlap_groups(train + split)) is not None:
        unit = {record["id"]: group for record, group in zip(train + split, by_row, strict=True)}
        groups = np.array([unit[record["id"]] for record in test])
    others = [
        read_records(records_dir, spec.dataset, other.name, "train")
        for other in available_tasks([spec.dataset], records_dir)
        if other.name != spec.name and other.label_kind != "text"
    ]
    similarity = params.validate_.near_duplicate_similarity
    leaked = leaked_ids(test, train, others, similarity) if spec.label_kind != "text" else set()
    clusters = len(set(groups.tolist())) if groups is not None else len(test)
    return EvalSet(train, test, groups, clusters, frozenset(leaked))


@dataclass
class Runner:
    """The model and everything needed to answer one example."""

    params: Params
    model: object
    tokenizer: object
    use_chat: bool
    prompt_format: str
    scorer: LabelScorer
    numbers: NumberDecoder
    dtype: str  # eval.dtype: the label scorer's (continuous and open-ended answers decode in fp32)
    numerics: dict  # models.dtype.numerics: what decides the numbers, recorded with each mode
    sets: dict[str, EvalSet] = field(default_factory=dict)  # per task, shared by the modes
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    decode_rates: list[float] = field(default_factory=list)

    def context(self, record: dict, spec: TaskSpec, examples: list[dict]) -> str:
        return build_context(record, spec, self.tokenizer, self.use_chat, self.prompt_format, examples)

    def generate_texts(
        self, contexts: list[str], max_new_tokens: int, sample_seed: int | None = None
    ) -> list[Generated]:
        """Continuations of one batch; records its time to first token and decode rate (all sequences)."""
        outs = generate_batch(
            self.model, self.tokenizer, contexts, max_new_tokens, not self.use_chat, sample_seed
        )
        self.ttfts.append(outs[0].ttft_s)
        decoded, decode_s = sum(o.new_tokens - 1 for o in outs), outs[0].total_s - outs[0].ttft_s
        if decoded > 0 and decode_s > 0:
            self.decode_rates.append(decoded / decode_s)
        return outs

    def answer(self, record: dict, spec: TaskSpec, context: str) -> dict:
        """One prediction row; `answer` is a label, or None when generation gave no valid answer."""
        special = not self.use_chat
        row: dict = {"id": record["id"], "prompt_sha256": hashlib.sha256(context.encode()).hexdigest()}
        if self.params.eval.strategy == "generate":
            raw, spoken = "", None
            for attempt in range(self.params.eval.max_resamples + 1):
                seed = None if attempt == 0 else self.params.base.seed + attempt
                raw = self.generate_texts([context], self.params.eval.max_new_tokens, seed)[0].text
                if (spoken := parse_answer(spec, raw)) is not None:
                    break
            row |= {"raw": raw, "answer": spec.label_of_answer(spoken) if spoken is not None else None}
        elif spec.closed:
            scores = self.scorer.score(*_options(spec, context), special)
            return self._scored_row(record, spec, context, scores)
        else:
            row["answer"] = spec.parse_label(self.numbers(context, special))
        return row | {"gold": record["label"]}

    def answer_batch(self, records: list[dict], spec: TaskSpec, contexts: list[str]) -> list[dict]:
        """Rows of several closed examples scored in one forward pass (eval.score_batch_size)."""
        items = [_options(spec, context) for context in contexts]
        scores = self.scorer.score_batch(items, special_tokens=not self.use_chat)
        return [
            self._scored_row(record, spec, context, logprobs)
            for record, context, logprobs in zip(records, contexts, scores, strict=True)
        ]

    @staticmethod
    def _scored_row(record: dict, spec: TaskSpec, context: str, logprobs: list[float]) -> dict:
        return {
            "id": record["id"],
            "prompt_sha256": hashlib.sha256(context.encode()).hexdigest(),
            "answer": spec.parse_label(spec.label_space[int(np.argmax(logprobs))]),
            "scores": dict(zip(spec.spoken_answers, (round(v, 4) for v in logprobs), strict=True)),
            "gold": record["label"],
        }


def _options(spec: TaskSpec, context: str) -> tuple[str, list[str]]:
    """A closed example for the scorer: its context and every spoken answer as a continuation of it."""
    return context, [answer_continuation(a, context) for a in spec.spoken_answers]


def _fewshot_examples(
    spec: TaskSpec, shots: int, records_dir: Path, train: list[dict]
) -> tuple[list[dict], dict]:
    """The k-shot pool's records and where the pool comes from (the seed's file, or our seeded draw)."""
    if not shots:
        return [], {}
    pools = json.loads(fewshot_path(records_dir, spec.dataset, spec.name).read_text())
    by_id = {r["id"]: r for r in train}
    source = pools.get("sources", {}).get(str(shots), "drawn from train (seeded)")
    return [by_id[record_id] for record_id in pools[str(shots)]], {"fewshot_pool": source}


def predict(runner: Runner, spec: TaskSpec, test: list[dict], examples: list[dict], label: str) -> list[dict]:
    """One row per example. Closed answers are scored eval.score_batch_size rows per forward pass (a row's
    latency is its batch's time shared by the batch); one at a time, a few-shot prefix is encoded once."""
    batched = spec.closed and runner.params.eval.strategy == "score"
    size = runner.params.eval.score_batch_size if batched else 1
    if size == 1:
        prefix = shared_prefix(runner.context(test[0], spec, examples), test[0], spec, runner.prompt_format)
        runner.scorer.set_shared_prefix(prefix, special_tokens=not runner.use_chat)
    rows = []
    chunks = [test[i : i + size] for i in range(0, len(test), size)]
    for chunk in track(chunks, description=label, transient=True):
        contexts = [runner.context(record, spec, examples) for record in chunk]
        start = time.perf_counter()
        if size == 1:
            answered = [runner.answer(chunk[0], spec, contexts[0])]
        else:
            answered = runner.answer_batch(chunk, spec, contexts)
        latency = round((time.perf_counter() - start) / len(chunk), 4)
        for row in answered:
            row["latency_s"] = latency
            runner.latencies.append(latency)
        rows += answered
    runner.scorer.set_shared_prefix(None)
    return rows


def fp32_agreement(runner: Runner, spec: TaskSpec, test: list[dict], examples: list[dict], rows: list[dict]):
    """What bf16 costs: its answers beside fp32's on the first eval.fp32_check_rows rows of the task."""
    checked = test[: runner.params.eval.fp32_check_rows]
    if not checked:
        return {"rows": 0}
    scorer, latencies = runner.scorer, runner.latencies
    runner.scorer, runner.latencies = LabelScorer(runner.model, runner.tokenizer, "float32"), []
    try:  # the check's time is not the mode's latency
        exact = predict(runner, spec, checked, examples, f"fp32 check {spec.key}")
    finally:
        runner.scorer, runner.latencies = scorer, latencies
    agree = sum(a["answer"] == b["answer"] for a, b in zip(exact, rows, strict=False))
    return {"rows": len(checked), "agree": agree, "rate": round(agree / len(checked), 4)}


def explain(runner: Runner, spec: TaskSpec, test: list[dict]) -> tuple[list[dict], list[str]]:
    """Open-ended generation: MedQuAD answers, or label + reasoning for the IMHI posts, decoded in batches of
    prompts of similar length. A row's latency is its batch's time shared by the batch."""
    contexts = [build_context(record, spec, runner.tokenizer, runner.use_chat, "seed") for record in test]
    lengths = [len(runner.tokenizer(c).input_ids) for c in contexts]
    rows: list[dict] = [{} for _ in test]
    for batch in track(
        length_buckets(lengths, runner.params.eval.text_batch_size),
        description=f"{spec.key} (text)",
        transient=True,
    ):
        outs = runner.generate_texts([contexts[i] for i in batch], runner.params.eval.text_max_new_tokens)
        latency = round(outs[0].total_s / len(batch), 4)
        for i, out in zip(batch, outs, strict=True):
            runner.latencies.append(latency)
            rows[i] = {
                "id": test[i]["id"],
                "prompt_sha256": hashlib.sha256(contexts[i].encode()).hexdigest(),
                "answer": out.text,
                "reference": test[i]["output"],
                "latency_s": latency,
                "batch": len(batch),
            }
    return rows, [record["output"] for record in test]


def label_distribution(spec: TaskSpec, gold: list) -> dict:
    """What was scored: counts per label, or for a continuous label its quartiles."""
    if spec.closed:
        counts = Counter(str(g) for g in gold)
        return {label: counts[label] for label in map(str, map(spec.parse_label, spec.label_space))}
    q = np.percentile(np.array(gold, dtype=float), [0, 25, 50, 75, 100])
    return dict(zip(("min", "q1", "median", "q3", "max"), (round(float(v), 3) for v in q), strict=True))


def label_metrics(spec: TaskSpec, rows: list[dict], data: EvalSet, params: Params) -> dict:
    """Model and baselines on the same rows, each model − baseline difference paired by row, on all rows and
    on the leak-free rows."""
    gold = [row["gold"] for row in rows]
    samples, seed, groups = params.eval.bootstrap_samples, params.base.seed, data.groups
    bounds = metrics.label_range(spec, [r["label"] for r in data.train])
    answers = {"model": [row["answer"] for row in rows]}
    answers |= baseline_predictions(spec, data.train, data.test, seed)
    invalid = sum(a is None for a in answers["model"])
    result: dict = {
        "n": len(rows),
        "invalid_rate": round(invalid / max(len(rows), 1), 4),
        "labels": label_distribution(spec, gold),
        "resampling": f"{data.clusters} people (windows linked by shared readings)"
        if groups is not None
        else "rows",
        "label_bounds": list(bounds),  # worst answers of continuous tasks; compare pairs with these
    }
    losses = {}
    for name, values in answers.items():
        result[name] = metrics.score_answers(spec, gold, values, samples, seed, groups, bounds)
        losses[name] = metrics.per_example(spec, gold, metrics.worst_answers(spec, gold, values, bounds))
    baselines = [name for name in answers if name != "model"]
    result["paired"] = {
        name: metrics.paired(spec, losses["model"], losses[name], samples, seed, groups) for name in baselines
    }
    keep = np.array([row["id"] not in data.leaked for row in rows])
    kept_groups = groups[keep] if groups is not None else None
    result["leak_free"] = {"n": int(keep.sum())} | (
        {name: float(values[keep].mean()) for name, values in losses.items()}
        | {
            "paired": {
                name: metrics.paired(
                    spec, losses["model"][keep], losses[name][keep], samples, seed, kept_groups
                )
                for name in baselines
            }
        }
        if keep.any()
        else {}
    )
    if spec.closed:
        result["confusion"] = metrics.confusion(spec, gold, answers["model"])
    return result


def text_metrics(rows: list[dict], references: list[str], params: Params) -> dict:
    predictions = [row["answer"] for row in rows]
    scores = metrics.text_scores(references, predictions, params.eval.bootstrap_samples, params.base.seed)
    return {"n": len(rows), "model": scores}


def _disk_mb(location: str) -> float | None:
    path = Path(location)
    if not path.is_dir():
        return None
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def efficiency(runner: Runner, wall: float, choice: models.ModelChoice, peak: PeakMemory) -> dict:
    lat = np.array(runner.latencies or [0.0])
    result = {
        "examples": len(runner.latencies),
        "examples_per_s": round(len(runner.latencies) / wall, 3) if wall else None,
        "latency_mean_s": round(float(lat.mean()), 4),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 4),
        "ttft_mean_s": round(float(np.mean(runner.ttfts)), 4) if runner.ttfts else None,
        "decode_tokens_per_s": round(float(np.mean(runner.decode_rates)), 2) if runner.decode_rates else None,
        "peak_rss_mb": peak.mb,
        "cpu": cpu_name(),
        "numerics": runner.numerics,
        "peak_rss_scope": peak.scope,  # work: this mode's own peak (Linux); process: the process's
        "params_m": round(sum(p.numel() for p in runner.model.parameters()) / 1e6, 2),
        "disk_mb": _disk_mb(choice.location),
    }
    if torch.cuda.is_available():
        result["peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def _make_runner(params: Params, choice: models.ModelChoice, echo) -> Runner:
    torch.manual_seed(params.base.seed)
    model, tokenizer = models.load(choice, dtype=torch.float32)
    if torch.cuda.is_available():
        model = model.to("cuda")
    use_chat = models.use_chat_template(choice, tokenizer, params.eval.chat_template)
    prompt_format = choice.prompt_format or params.eval.prompt_format
    dtype = params.eval.dtype
    scorer = LabelScorer(model, tokenizer, dtype)
    numbers = NumberDecoder(model, tokenizer)
    used = numerics(dtype, models.weight_files(choice))
    echo(f"numerics: {dtype}, torch {used['torch']}, {used['cpu_kernels']}, {used['threads']} threads")
    return Runner(params, model, tokenizer, use_chat, prompt_format, scorer, numbers, dtype, used)


def _run_mode(runner: Runner, mode: str, records_dir: Path, out: Path, plots_dir: Path, echo) -> dict:
    params, shots = runner.params, int(mode.split("-")[1]) if mode.startswith("fs-") else 0
    results: dict = {}
    for spec in available_tasks(params.data.datasets, records_dir):
        if spec.label_kind == "text" and shots:
            continue
        if spec.key not in runner.sets:
            runner.sets[spec.key] = eval_set(spec, records_dir, params)
        data = runner.sets[spec.key]
        text_sample = eval_sample(data.test, spec, params.eval.text_limit, params.base.seed)
        if spec.label_kind == "text":
            rows, references = explain(runner, spec, text_sample)
            results[spec.key] = text_metrics(rows, references, params)
        else:
            examples, source = _fewshot_examples(spec, shots, records_dir, data.train)
            rows = predict(runner, spec, data.test, examples, f"{mode} {spec.key}")
            if data.groups is not None:  # the resampling unit, for compare and ondevice to pair with
                rows = [row | {"unit": int(unit)} for row, unit in zip(rows, data.groups, strict=True)]
            results[spec.key] = label_metrics(spec, rows, data, params) | source
            if runner.dtype == "bfloat16" and spec.closed and params.eval.strategy == "score":
                results[spec.key]["fp32_agreement"] = fp32_agreement(runner, spec, data.test, examples, rows)
            if spec.explained and not shots:  # IMHI: also the explanation, against gpt-3.5's
                text_rows, references = explain(runner, spec, text_sample)
                write_jsonl(out / f"{spec.key}_explanation.jsonl", text_rows)
                results[f"{spec.key}_explanation"] = text_metrics(text_rows, references, params)
        write_jsonl(out / f"{spec.key}.jsonl", rows)
        write_plots(plots_dir, mode, spec, rows, results[spec.key])
        echo(summary_line(mode, spec, results[spec.key]))
    return results


def evaluate(
    params: Params,
    finetuned: bool = False,
    records_dir: Path = RECORDS_DIR,
    predictions_root: Path = PREDICTIONS_DIR,
    metrics_out: Path | None = None,
    plots_root: Path = PLOTS_DIR,
    echo=print,
) -> dict:
    """The pretrained model's modes of eval.mode, or (finetuned) its ft mode; none gives an empty result."""
    group = model_group("ft" if finetuned else "zs")
    modes = [mode for mode in params.eval.mode if (mode == "ft") == finetuned]
    plots_dir = plots_root / group
    results: dict = {"efficiency": {}}
    shutil.rmtree(plots_dir, ignore_errors=True)
    plots_dir.mkdir(parents=True)
    with atomic_dir(predictions_root / group) as tmp:
        if modes:
            choice = models.finetuned(params) if finetuned else models.pretrained(params)
            runner = _make_runner(params, choice, echo)
        for mode in modes:
            runner.latencies, runner.ttfts, runner.decode_rates = [], [], []
            started = time.perf_counter()
            with PeakMemory() as peak:
                results[mode] = _run_mode(runner, mode, records_dir, tmp / mode, plots_dir, echo)
            results["efficiency"][mode] = efficiency(runner, time.perf_counter() - started, choice, peak)
    write_json(metrics_out or metrics_file("ft" if finetuned else "zs"), results)
    return results


def summary_line(mode: str, spec: TaskSpec, result: dict) -> str:
    model = result.get("model", {})
    metric = spec.metric if spec.metric in model else next(iter(model), "")
    if not metric:
        return f"{mode} {spec.key}: no valid answers (n={result['n']})"
    line = (
        f"{mode} {spec.key}: {metric} model {model[metric]:.3f} "
        f"[{model[metric + '_ci_low']:.3f}, {model[metric + '_ci_high']:.3f}]"
    )
    if "majority" in result:
        line += f" | majority {result['majority'][metric]:.3f} | classical {result['classical'][metric]:.3f}"
        verdicts = {name: paired["verdict"] for name, paired in result["paired"].items()}
        line += " | vs " + ", ".join(f"{name}: {verdict}" for name, verdict in verdicts.items())
    if result.get("invalid_rate"):
        line += f" | invalid {result['invalid_rate']:.1%}"
    return line + f" (n={result['n']})"
