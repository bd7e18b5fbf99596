"""`healthslm report`: reports/report.md from stage outputs (metrics, validation, token economy, params)."""

from __future__ import annotations

import csv
import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from healthslm.data.fetch import load_sources
from healthslm.data.registry import all_tasks, get_dataset
from healthslm.html import markdown_to_html, untrusted
from healthslm.io import write_text
from healthslm.metrics import MIN_UNITS
from healthslm.models.registry import ModelPreset, resolve_model
from healthslm.params import Params, public_params
from healthslm.paths import (
    AUGMENT_SUMMARY,
    AUGMENT_VALIDATION,
    CAPACITY_BENCHMARK,
    DOCS_DIR,
    EVAL_BENCHMARK,
    FIGURES_DIR,
    FT_METRICS_FILE,
    JUDGE_SUMMARY,
    METRICS_FILE,
    ONDEVICE_FILE,
    PLOTS_DIR,
    REPORT_FILE,
    STAGE_TIMES_DIR,
    SUMMARY_FILE,
    TOKENS_FILE,
    TRAIN_CURVES_DIR,
    TRAINING_SUMMARY,
)
from healthslm.paths import VALIDATION_DIR as SUMMARY_DIR
from healthslm.plots import pyplot, save_png
from healthslm.summary import RESULTS_PAGE, made_by, readme_summary
from healthslm.tasks import TaskSpec
from healthslm.verdicts import Verdict, task_verdicts, verdict_figure, verdict_summary, with_interval

PAPER_COLUMNS = {
    "pmdata_stress": "STRS",
    "pmdata_readiness": "READ",
    "pmdata_fatigue": "FATG",
    "pmdata_sleep_quality": "SQ",
    "globem_anxiety": "ANX",
    "globem_depression": "DEP",
    "aw_fb_activity": "ACT",
    "aw_fb_calories": "CAL",
}


def paper_reference() -> dict[tuple[str, str], dict[str, str]]:
    """(setting, model) -> {column: value} from HealthSLM-Bench's published tables."""
    text = resources.files("healthslm.reference").joinpath("healthslm_bench_tables.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {(row["setting"], row["model"]): row for row in rows}


def _paper_value(table: dict, mode: str, model: str | None, spec: TaskSpec) -> str:
    row = table.get((mode, model or ""))
    value = (row or {}).get(PAPER_COLUMNS.get(spec.key, ""), "")
    if not value:
        return "—"
    number = float(value)
    return f"{number / 100:.3f}" if spec.metric == "accuracy" else f"{number:.2f}"


def protocol_departures(params: Params, mode: str, result: dict, spec: TaskSpec) -> list[str]:
    """How this number's protocol differs from HealthSLM-Bench's (greedy generation + regex on its raw
    prompts, its few-shot pools, all 299 eval rows, its own LoRA runs per task)."""
    if spec.key not in PAPER_COLUMNS:
        return ["task not in the paper"]
    departures = []
    if mode == "ft":
        departures.append("our fine-tuning (one model, all tasks)")
    if params.eval.strategy != "generate":
        departures.append("likelihood scoring")
    if params.eval.chat_template:
        departures.append("chat template")
    prompt_format = params.train.prompt_format if mode == "ft" else params.eval.prompt_format
    if prompt_format != "seed":
        departures.append(f"{prompt_format} prompts")
    if "seed's pool" not in result.get("fewshot_pool", "the seed's pool"):
        departures.append("our k-shot pool (the seed has none for this k)")
    if params.eval.limit is not None:
        departures.append(f"{result['n']} sampled rows")
    return departures


def _labels(distribution: dict) -> str:
    if "median" in distribution:
        return f"median {distribution['median']:g} ({distribution['min']:g}–{distribution['max']:g})"
    return " ".join(f"{label}:{count}" for label, count in distribution.items() if count)


def _leak_free(verdict: Verdict) -> str:
    if verdict.leak_free_model is None:
        return "0 rows"
    return (
        f"{verdict.leak_free_n}: {verdict.leak_free_model:.3f} vs {verdict.leak_free_baseline:.3f}, "
        f"{verdict.leak_free_verdict}"
    )


def results_table(metrics: dict, params: Params, paper_model: str | None) -> list[str]:
    table = paper_reference()
    tasks = all_tasks()
    lines = [
        "| mode | task | metric | n | labels scored | model [95% CI] | invalid | constant [95% CI] "
        "| classical [95% CI] | model − best baseline [paired 95% CI] | verdict | leak-free rows: model vs "
        f"baseline | paper, {paper_model or 'same model'} | paper, SLM mean | protocol vs the paper |",
        "|---|---|---|--:|---|---|--:|---|---|---|---|---|--:|--:|---|",
    ]
    for verdict in task_verdicts(metrics, params.eval.mode):
        spec, result = tasks[verdict.task], metrics[verdict.mode][verdict.task]
        arrow = "↓" if verdict.lower_is_better else "↑"
        departures = protocol_departures(params, verdict.mode, result, spec)
        paper = (
            ["—", "—"]
            if departures
            else [_paper_value(table, verdict.mode, m, spec) for m in (paper_model, "SLM_mean")]
        )
        protocol = "; ".join(departures) or "same"
        lines.append(
            f"| {verdict.mode} | {verdict.task} | {verdict.metric} {arrow} | {verdict.n} "
            f"| {_labels(result['labels'])} | {with_interval(result['model'], verdict.metric)} "
            f"| {result['invalid_rate']:.1%} | {with_interval(result['majority'], verdict.metric)} "
            f"| {with_interval(result['classical'], verdict.metric)} | {verdict.difference} "
            f"| {verdict.shown} | {_leak_free(verdict)} | {paper[0]} | {paper[1]} | {protocol} |"
        )
    return lines


def text_table(metrics: dict, modes: list[str]) -> list[str]:
    lines = ["| mode | task | n | ROUGE-L [95% CI] | BERTScore F1 [95% CI] |", "|---|---|--:|---|---|"]
    for mode in modes:
        for key, result in metrics.get(mode, {}).items():
            if "rouge_l" in result.get("model", {}):
                lines.append(
                    f"| {mode} | {key} | {result['n']} | {with_interval(result['model'], 'rouge_l')} "
                    f"| {with_interval(result['model'], 'bertscore_f1')} |"
                )
    return lines


TRAINING_COLUMNS = ("steps", "examples", "train_loss", "tokens_per_s", "runtime_s", "peak_rss_mb")


TASK_COUNT_HEADERS = {  # train.TARGET_COUNTS, as the report's columns
    "examples": "records",
    "dropped_long_prompt": "dropped (prompt too long)",
    "cut_long_answer": "answer cut",
    "with_response": "with a kept response",
    "left_out_without_response": "left out (no response)",
}


def training_section(training: dict | None) -> list[str]:
    if not training:
        return ["No fine-tuned model in this run."]
    recipe = training["recipe"]
    lora = recipe["lora"]
    targets = training.get("targets", "label")
    counted = [name for name in TASK_COUNT_HEADERS if any(name in c for c in training["tasks"].values())]
    lines = [
        f"`{training['method']}` on {training['model']}, prompt format `{training['prompt_format']}`, "
        f"LoRA r={lora['r']} alpha={lora['alpha']} dropout={lora['dropout']}, batch {recipe['batch_size']} "
        f"x accumulation {recipe['grad_accum']}, {recipe['epochs']} epoch(s)"
        + (f", max {recipe['max_steps']} steps" if recipe.get("max_steps") else "")
        + f"; {training['trainable_params'] / 1e6:.2f} M trainable parameters"
        + (f"; resumed from step {resumed}" if (resumed := training.get("resumed_from_step")) else "")
        + ".",
        "",
        "| " + " | ".join(TRAINING_COLUMNS) + " |",
        "|" + "--:|" * len(TRAINING_COLUMNS),
        "| " + " | ".join(str(training.get(c, "—")) for c in TRAINING_COLUMNS) + " |",
        "",
        f"Targets (`train.targets`): `{targets}`"
        + (
            " (the gold label, then the kept augmented response's explanation)"
            if targets != "label"
            else " (the gold label alone)"
        )
        + ".",
        "",
        "| task | " + " | ".join(TASK_COUNT_HEADERS[name] for name in counted) + " |",
        "|---|" + "--:|" * len(counted),
    ]
    for key, counts in training["tasks"].items():
        lines.append(f"| {key} | " + " | ".join(str(counts.get(name, "—")) for name in counted) + " |")
    if plan := training.get("memory_plan"):
        lines += [
            "",
            "Memory plan: activations of the largest batch estimated at "
            f"{plan['estimated_activations_gb']} GB within the {plan['activation_budget_gb']} GB budget "
            f"(`train.activation_budget_gb`): micro-batches "
            f"of {plan['micro_batch']} x accumulation {plan['grad_accum']}, gradient checkpointing "
            f"{'on' if plan['gradient_checkpointing'] else 'off'}; the LM head sees only answer tokens.",
        ]
    lines += ["", "Curves (loss, learning rate, tokens/s by step): `dvc plots show reports/train/plots`."]
    return lines


def augmentation_section(summary: dict | None, validation: dict | None) -> list[str]:
    if not summary:
        return ["No augmentation in this run."]
    rate = summary["cache_hit_rate"]
    lines = [
        f"Endpoint: {summary['endpoint']}, model `{summary['model']}`, prompt `{summary['prompt_version']}`. "
        f"{summary['generated']} responses requested ({summary['new_responses']} new, "
        f"{summary['cache_hits']} from the cache{f', hit rate {rate:.0%}' if rate is not None else ''}; "
        f"{summary['http_requests']} HTTP requests in {summary['wall_s']} s), "
        f"{summary['imported']} imported (DR/Dreaddit's gpt-3.5-turbo explanations).",
        "",
        f"Tokens this run: {summary['prompt_tokens']} prompt + {summary['completion_tokens']} completion, "
        f"cost ${summary['cost_usd']:.4f}. Whole generated set: {summary['all_prompt_tokens']} + "
        f"{summary['all_completion_tokens']} tokens, ${summary['all_cost_usd']:.4f} at the configured price, "
        f"${summary['all_cost_usd_at_gpt_4o_mini']:.4f} at gpt-4o-mini's list price.",
        "",
        "| task | kept | of them generated |",
        "|---|--:|--:|",
        *(
            f"| {task} | {count} | {summary.get('accepted_generated', {}).get(task, '—')} |"
            for task, count in summary["accepted"].items()
        ),
        "",
        "| rejected because | responses |",
        "|---|--:|",
        *(f"| {reason} | {count} |" for reason, count in summary["rejected"].items()),
    ]
    if validation:
        verdict = (
            "passed" if validation["success"] else "failed: " + untrusted("; ".join(validation["failures"]))
        )
        lines += ["", f"Great Expectations gate over the kept records ({len(validation['suites'])} sets): "
                  f"{verdict}. Data Docs: `reports/data_docs/augmented/index.html`."]  # fmt: skip
    return lines


def judge_section(judge: dict | None) -> list[str]:
    if not judge:
        return ["No judged answers in this run."]
    criteria = judge["criteria"]
    usage = judge["usage"]
    lines = [
        f"Judge `{usage['model']}` at {usage['endpoint']}, rubric `{judge['rubric_version']}`, scores 0-5 "
        "(mean [95% CI] over every answer); an answer the judge could not score in two tries counts as "
        "failed and scores 0 on every criterion, so failing on hard answers cannot raise a mean.",
        "",
        "| mode | answers | n | failed (rate) | " + " | ".join(criteria) + " | overall |",
        "|---|---|--:|--:|" + "---|" * (len(criteria) + 1),
    ]
    for mode, sets in judge.items():
        if mode == "usage" or not isinstance(sets, dict):
            continue
        for name, stats in sets.items():
            cells = " | ".join(with_interval(stats, c) for c in (*criteria, "overall"))
            failed = f"{stats['failed']} ({stats['failed'] / max(stats['n'], 1):.0%})"
            lines.append(f"| {mode} | {name} | {stats['n']} | {failed} | {cells} |")
    return lines


ONDEVICE_COLUMNS = (
    "size_mb",
    "bits_per_weight",
    "load_s",
    "ttft_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "bound_tokens_per_s",
    "fraction_of_bound",
    "peak_rss_mb",
)


def weights_note(preset: ModelPreset) -> str:
    """What the `hf` engine runs, and how to read the quantized ones against it."""
    note = f"`hf` is the deployed model in transformers, fp32; its base weights: {preset.provenance}."
    if preset.prequantized:
        note += (
            f" Those weights were rounded to {preset.prequantized} once already, so each GGUF type here is a "
            f"second rounding of them: its accuracy loss is against the dequantized {preset.prequantized} "
            "model, not against full-precision weights."
        )
    return note


def _build_line(engines: dict) -> list[str]:
    """The kernels llama.cpp picked on this CPU (its system info), once for every GGUF engine."""
    builds = sorted({row["build"] for row in engines.values() if row.get("build")})
    if not builds:
        return []
    return ["", "llama.cpp build, as it runs on this CPU: " + " / ".join(f"`{b}`" for b in builds)]


def ondevice_section(ondevice: dict | None, preset: ModelPreset) -> list[str]:
    if not ondevice:
        return ["No on-device export in this run."]
    engines = {name: row for name, row in ondevice.items() if isinstance(row, dict)}
    lines = [
        f"Each GGUF on llama.cpp beside the HF model, {ondevice['n_threads']} threads on "
        f"{ondevice.get('cpu', 'an unrecorded CPU')}, batch 1, {ondevice['prompts']} task prompts, each "
        "engine in its own process. Decoding reads every weight once per token, so tokens/s ≤ memory "
        "bandwidth / weight bytes; bandwidth measured in the "
        f"same run: {ondevice['bandwidth_gbs']} GB/s. {weights_note(preset)}",
        *_build_line(engines),
        "",
        "| engine | " + " | ".join(ONDEVICE_COLUMNS) + " |",
        "|---|" + "--:|" * len(ONDEVICE_COLUMNS),
    ]
    for name, row in engines.items():
        lines.append(f"| {name} | " + " | ".join(str(row.get(c, "—")) for c in ONDEVICE_COLUMNS) + " |")
    lines += ["", *_raw_llama_cpp_lines(engines)]
    lines += [
        "",
        "Accuracy kept (a seeded, label-stratified subset of the ft eval rows, `export.accuracy_rows` per "
        "task, the same for every engine; label scoring through each engine's logits; agreement = share of "
        "answers equal to the HF model's):",
        "",
        "| task | metric | " + " | ".join(engines) + " |",
        "|---|---|" + "---|" * len(engines),
    ]
    for key, spec in all_tasks().items():
        if key not in engines.get("hf", {}).get("tasks", {}):
            continue
        cells = []
        for row in engines.values():
            result = row["tasks"][key]
            agreement = result.get("agreement_with_hf")
            cells.append(
                with_interval(result, spec.metric) + (f" ({agreement:.0%})" if agreement is not None else "")
            )
        lines.append(f"| {key} | {spec.metric} | " + " | ".join(cells) + " |")
    return [*lines, "", "![speed vs accuracy](ondevice/speed_vs_accuracy.png)"]


def _raw_llama_cpp_lines(engines: dict) -> list[str]:
    """The harness against llama.cpp alone on the same file, threads and tokens (its anchor)."""
    measured = {name: row for name, row in engines.items() if "raw_llama_cpp" in row}
    if not measured:
        return []
    parts = []
    for name, row in measured.items():
        raw = row["raw_llama_cpp"]
        parts.append(
            f"{name} decode {row['decode_tokens_per_s']} vs {raw['decode_tokens_per_s']} tok/s "
            f"({row['decode_ratio_to_raw']:.3f}), prefill {row['prefill_tokens_per_s']} vs "
            f"{raw['prefill_tokens_per_s']} ({row['prefill_ratio_to_raw']:.3f})"
        )
    return [
        "The harness against raw llama.cpp (llama_decode alone on the same file, threads, cache and tokens, "
        "each step just before or after the harness's; harness / raw in brackets): " + "; ".join(parts) + "."
    ]


EFFICIENCY_COLUMNS = (
    "examples",
    "examples_per_s",
    "latency_mean_s",
    "latency_p95_s",
    "ttft_mean_s",
    "decode_tokens_per_s",
    "peak_rss_mb",
    "params_m",
    "disk_mb",
)
NUMERICS_COLUMNS = ("dtype", "torch", "device", "cpu_kernels", "threads", "weights_sha256")


def efficiency_table(efficiency: dict) -> list[str]:
    lines = ["| mode | " + " | ".join(EFFICIENCY_COLUMNS) + " |", "|---|" + "--:|" * len(EFFICIENCY_COLUMNS)]
    for mode, row in efficiency.items():
        cells = " | ".join("—" if row.get(c) is None else str(row[c]) for c in EFFICIENCY_COLUMNS)
        lines.append(f"| {mode} | {cells} |")
    return lines


def read_stage_times(folder: Path = STAGE_TIMES_DIR) -> list[dict]:
    """Each stage's reports/stages/<stage>.json (written by the run that made its outputs), slowest first."""
    rows = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("*.json"))]
    return sorted(rows, key=lambda row: -(row.get("wall_s") or 0))


def stage_time_section(rows: list[dict]) -> list[str]:
    """Where a `dvc repro` spends its time: the stage runs that made the committed outputs."""
    if not rows:
        return ["No stage timings yet (reports/stages/ is written by each stage's run)."]
    total = sum(row.get("wall_s") or 0 for row in rows)
    cpus = sorted({row["cpu"] for row in rows})
    lines = [
        f"Stage runs that made these outputs: {total / 60:.1f} min in total on {', '.join(cpus)} "
        f"({rows[0]['cores']} cores), process start-up included; the report stage itself is not counted. "
        "A stage DVC skipped keeps its earlier run's time.",
        "",
        "| stage | wall s | share | peak RSS MB | largest child's peak RSS MB |",
        "|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        wall = row.get("wall_s") or 0
        lines.append(
            f"| {row['stage']} | {wall:.1f} | {wall / max(total, 1e-9):.0%} | {row['peak_rss_mb']:.0f} "
            f"| {row['children_peak_rss_mb']:.0f} |"
        )
    return lines


def numerics_section(metrics: dict, training: dict | None) -> list[str]:
    """What decided the numbers, per mode and for training: the same on any machine at float32."""
    runs = {mode: row["numerics"] for mode, row in metrics["efficiency"].items() if row.get("numerics")}
    if training and training.get("numerics"):
        runs["train"] = training["numerics"]
    if not runs:
        return ["No numerics recorded (a run made before they were)."]
    lines = ["| run | " + " | ".join(NUMERICS_COLUMNS) + " |", "|---|" + "---|" * len(NUMERICS_COLUMNS)]
    for run, used in runs.items():
        cells = [str(used.get(c, "—")) for c in NUMERICS_COLUMNS]
        cells[-1] = cells[-1][:12]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines += ["", *_fp32_agreement_lines(metrics)]
    return lines


def _fp32_agreement_lines(metrics: dict) -> list[str]:
    """bf16 scoring's answers beside fp32's on the checked rows, per mode (nothing at float32)."""
    lines = []
    for mode in metrics["efficiency"]:
        checks = [r["fp32_agreement"] for r in metrics.get(mode, {}).values() if r.get("fp32_agreement")]
        if rows := sum(c["rows"] for c in checks):
            agree = sum(c.get("agree", 0) for c in checks)
            lines.append(
                f"{mode}: bfloat16 answers agree with float32 on {agree} of {rows} rows "
                f"({agree / rows:.0%}; `eval.fp32_check_rows` per task)."
            )
    return lines or [
        "float32 throughout: the same numbers on any x86-64 CPU (kernels pinned to one code path, any "
        "thread count). `-S eval.dtype=bfloat16` is faster where supported and reports its agreement here."
    ]


def plot_gallery(plots_dir: Path) -> list[str]:
    images = sorted(plots_dir.glob("*/scores/*.png"))
    return [f"![{image.stem}]({image.relative_to(REPORT_FILE.parent)})" for image in images]


def confusion_figure(metrics: dict, mode: str, path: Path) -> bool:
    """All closed tasks' confusion matrices of one mode in one image (rows: actual, columns: predicted)."""
    matrices = [
        (k, r["confusion"]) for k, r in metrics.get(mode, {}).items() if r.get("confusion", {}).get("matrix")
    ]
    if not matrices:
        return False
    plt = pyplot()
    columns = min(3, len(matrices))
    rows = -(-len(matrices) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.2 * rows), dpi=80, squeeze=False)
    for axis in axes.flat[len(matrices) :]:
        axis.axis("off")
    for axis, (key, confusion) in zip(axes.flat, matrices, strict=False):
        labels = [label[:10] for label in confusion["labels"]]
        axis.imshow(confusion["matrix"], cmap="Blues")
        for (i, j), count in np.ndenumerate(np.array(confusion["matrix"])):
            if count:
                axis.text(j, i, str(count), ha="center", va="center", fontsize=7)
        axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        axis.set_title(key, fontsize=8)
    figure.suptitle(f"confusion matrices, {mode} (rows actual, columns predicted)", fontsize=9)
    figure.tight_layout()
    save_png(figure, path)
    return True


def _read_curve(tsv: Path) -> tuple[list[float], list[float]]:
    with tsv.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [float(r["step"]) for r in rows], [float(r[tsv.stem]) for r in rows]


def training_figure(curves_dir: Path, path: Path) -> bool:
    names = [n for n in ("loss", "learning_rate", "tokens_per_s") if (curves_dir / f"{n}.tsv").exists()]
    if not names:
        return False
    plt = pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 2.8), dpi=80, squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        axis.plot(*_read_curve(curves_dir / f"{name}.tsv"))
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
    figure.tight_layout()
    save_png(figure, path)
    return True


def provenance_section(lock_file: Path = Path("dvc.lock"), data_file: Path = Path("data.dvc")) -> list[str]:
    """The data versions that produced this report: data.dvc's hash and each dataset's hash in dvc.lock."""
    lines = []
    if data_file.exists():
        out = yaml.safe_load(data_file.read_text())["outs"][0]
        lines.append(f"- `data/` (data.dvc): md5 `{out['md5']}`, {out.get('nfiles', '?')} files")
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {}
    for stage, entry in sorted(lock.get("stages", {}).items()):
        for dep in entry.get("deps", []):
            if dep["path"].startswith("data/") and stage.startswith("prepare@"):
                lines.append(f"- `{dep['path']}` (stage {stage}): md5 `{dep.get('md5', '?')}`")
    return lines or ["No dvc.lock yet (run through `dvc repro`)."]


def token_table(tokens: dict) -> list[str]:
    lines = [
        "| task | eval examples | seed tokens | compact tokens | compact / seed |",
        "|---|--:|--:|--:|--:|",
    ]
    for key, row in tokens.items():
        lines.append(
            f"| {key} | {row['examples']} | {row['seed_tokens']:.0f} | {row['compact_tokens']:.0f} "
            f"| {row['compact_over_seed']:.2f} |"
        )
    return lines


def data_section(validations: dict[str, dict]) -> list[str]:
    sources = load_sources()
    lines = [
        "| dataset | source | license | GX suites | rows (train / eval) | gate "
        "| leakage (eval rows in train, per task) | Data Docs |",
        "|---|---|---|--:|---|---|---|---|",
    ]
    for name, summary in validations.items():
        spec = get_dataset(name)
        pins = sorted({f"{f.repo}@{f.commit[:7]}" for f in sources.get(name, [])})
        source = ", ".join(pins) or "user-supplied"
        if summary.get("skipped"):
            lines.append(f"| {name} | {source} | {spec.license} | 0 | — | skipped | — | — |")
            continue
        suites = summary["suites"]
        rows = " · ".join(
            f"{s.split('.')[0].removeprefix(name + '_')}: {suites.get(s, {}).get('rows', '?')}"
            f" / {suites.get(s.replace('.train', '.eval'), {}).get('rows', '?')}"
            for s in suites
            if s.endswith(".train")
        )
        leaks = ", ".join(
            f"{key.removeprefix(name + '_')} {v['rate']:.1%} ({v['exact']} exact, {v['near']} near"
            + (f"; {v['cross_task']} in another task's train" if v.get("cross_task") else "")
            + (f"; {v['shared_readings']} share days of readings" if v.get("shared_readings") else "")
            + ")"
            for key, v in summary["leakage"].items()
        )
        gate = "pass" if summary["success"] else "FAIL"
        docs = f"[docs]({DOCS_DIR.relative_to('reports')}/{name}/index.html)"
        lines.append(
            f"| {name} | {source} | {spec.license} | {len(suites)} | {rows} | {gate} | {leaks} | {docs} |"
        )
    pages = [
        f"[{suite}]({DOCS_DIR.relative_to('reports')}/{name}/{page})"
        for name in validations
        if (DOCS_DIR / name / "pages.json").exists()
        for suite, page in json.loads((DOCS_DIR / name / "pages.json").read_text()).items()
    ]
    if pages:
        lines += ["", "Validation results (Data Docs pages, readable offline): " + " · ".join(pages)]
    return lines


def render(
    params: Params,
    metrics: dict,
    validations: dict[str, dict],
    tokens: dict,
    training: dict | None = None,
    figures: tuple[str, ...] = (),
    augmentation: dict | None = None,
    augmentation_validation: dict | None = None,
    judge: dict | None = None,
    ondevice: dict | None = None,
    stage_times: list[dict] = (),
) -> str:
    preset = resolve_model(params.model)
    limit = params.eval.limit or "all"
    lines = [
        "# healthslm report",
        "",
        f"Model **{params.model}**: {preset.provenance} · "
        f"modes `{', '.join(params.eval.mode)}` · "
        f"answer strategy `{params.eval.strategy}` · prompt format `{params.eval.prompt_format}` · "
        f"chat template {'on' if params.eval.chat_template else 'off'} · eval limit {limit} per task.",
        "",
        "## Results",
        "",
        *(
            [f"![model − best baseline]({FIGURES_DIR.relative_to('reports')}/verdicts.png)", ""]
            if "verdicts" in figures
            else []
        ),
        *verdict_summary(task_verdicts(metrics, params.eval.mode)),
        "",
        "Every score sits beside a constant baseline (majority class, or the train median) and a classical "
        "model (gradient boosting on the prompt's numbers, or TF-IDF + logistic regression on text), fitted "
        "on train and scored on the same rows. "
        + (
            f"The rows: {params.eval.limit} per task, drawn seeded and label-stratified from the eval split, "
            "the same for every mode and model (listed in the predictions). "
            if params.eval.limit
            else "The rows: every eval row. "
        )
        + "Brackets: 95 % percentile bootstrap. The verdict reads the interval of the model − baseline "
        "difference paired on the same rows (better / worse when it excludes zero), against the better of "
        "the two baselines. Resampling unit: a row, except where one person's rows can be recovered — "
        "PMData's 14-day windows slide by a day, and windows linked by three consecutive daily readings of "
        "a series, over train and eval together, form 19 groups (the dataset has 16 participants); there "
        "whole groups are resampled, which widens the intervals to what the data can support. Each verdict "
        f"also counts the units whose answers differ; it is marked fragile when fewer than {MIN_UNITS} "
        "carry it or an exact sign test over those units reads otherwise. "
        f"Data split: `{params.data.split}`"
        + (
            " (HealthSLM-Bench's files: on PMData nearly every eval window shares days of readings with a "
            "train window of the same person; `data.split: grouped` keeps each person on one side). "
            if params.data.split == "seed"
            else " (no person's windows on both sides of the split). "
        )
        + "Leak-free rows: those with no exact or "
        f"near copy (TF-IDF cosine ≥ {params.validate_.near_duplicate_similarity}) in the task's train "
        "split, no three consecutive days of readings shown by a train row, and no copy of their readings "
        "in another task's train split of the same dataset (AW_FB's "
        "calories prompts show the activity type of the same minutes).",
        "",
        *results_table(metrics, params, preset.paper_name),
        "",
        "Invalid: answers the seed's regex could not parse (`generate` only; `score` always answers); an "
        "invalid answer counts as wrong (accuracy) or as the farthest value of the label range (error "
        "metrics), so every row is scored. The paper scores error metrics over its valid answers only: that "
        "figure is `<metric>_valid_only` in the metrics files. Paper columns (HealthSLM-Bench, "
        "arXiv:2509.07260, its published tables) appear only where our protocol is the paper's; otherwise "
        "the last column says how it differs.",
        "",
        "### Open-ended answers (generated)",
        "",
        *text_table(metrics, params.eval.mode),
        "",
        "BERTScore: F1 of all-MiniLM-L6-v2 token embeddings (layer 6, no baseline rescaling).",
        "",
        "### Plots",
        "",
        *plot_gallery(PLOTS_DIR),
        "",
        *(
            f"![confusion {mode}]({FIGURES_DIR.relative_to('reports')}/confusion_{mode}.png)"
            for mode in figures
            if mode not in ("training", "verdicts")
        ),
        "",
        "Interactive: `dvc plots show` / `dvc plots diff` (reports/plots/confusion/).",
        "",
        "### LLM judge",
        "",
        *judge_section(judge),
        "",
        "## Fine-tuning",
        "",
        *training_section(training),
        "",
        *(
            [f"![training curves]({FIGURES_DIR.relative_to('reports')}/training.png)"]
            if "training" in figures
            else []
        ),
        "",
        "## Efficiency",
        "",
        *efficiency_table(metrics["efficiency"]),
        "",
        "Latency is per example (a text batch's time is shared by its prompts). Time to first token and "
        "decode tokens/s are the open-ended generation's, per batch of up to "
        f"{params.eval.text_batch_size} prompts (decode counts the tokens of every sequence).",
        "",
        "### Numerics",
        "",
        *numerics_section(metrics, training),
        "",
        "### Where the time goes",
        "",
        *stage_time_section(list(stage_times)),
        "",
        "## On-device (GGUF, llama.cpp)",
        "",
        *ondevice_section(ondevice, preset),
        "",
        "## Data",
        "",
        *data_section(validations),
        "",
        "Leakage: eval inputs identical to a train input, or TF-IDF cosine ≥ "
        f"{params.validate_.near_duplicate_similarity} (PMData's 14-day windows overlap between neighbouring "
        "days).",
        "",
        "## Augmented responses",
        "",
        *augmentation_section(augmentation, augmentation_validation),
        "",
        "## Token economy",
        "",
        "Tokens of the rendered instruction + input (SmolLM2 tokenizer), mean over each eval split.",
        "",
        *token_table(tokens),
        "",
        "## Data versions",
        "",
        *provenance_section(),
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(public_params(params), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


OPTIONAL_INPUTS = {
    "augmentation": AUGMENT_SUMMARY,
    "augmentation_validation": AUGMENT_VALIDATION,
    "judge": JUDGE_SUMMARY,
    "ondevice": ONDEVICE_FILE,
}


def _read_optional(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def merged_metrics(files: tuple[Path, ...]) -> dict:
    """The evaluate stages' metrics (pretrained modes, ft) as one `{mode: ..., "efficiency": {mode: ...}}`."""
    merged: dict = {"efficiency": {}}
    for path in files:
        part = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        merged["efficiency"] |= part.pop("efficiency", {})
        merged |= part
    return merged


def read_validations(params: Params, summary_dir: Path = SUMMARY_DIR) -> dict[str, dict]:
    return {
        name: json.loads((summary_dir / f"{name}.json").read_text(encoding="utf-8"))
        for name in params.data.datasets
    }


def report(
    params: Params,
    metrics_files: tuple[Path, ...] = (METRICS_FILE, FT_METRICS_FILE),
    summary_dir: Path = SUMMARY_DIR,
    tokens_file: Path = TOKENS_FILE,
    training_file: Path = TRAINING_SUMMARY,
    out_file: Path = REPORT_FILE,
    summary_file: Path = SUMMARY_FILE,
    benchmark_file: Path = EVAL_BENCHMARK,
    echo=print,
) -> None:
    metrics = merged_metrics(metrics_files)
    tokens = json.loads(tokens_file.read_text(encoding="utf-8"))
    training = json.loads(training_file.read_text(encoding="utf-8")) if training_file.exists() else None
    if training and training.get("trained") is False:  # no ft mode: nothing was trained
        training = None
    validations = read_validations(params, summary_dir)
    figures_dir = out_file.parent / FIGURES_DIR.name
    shutil.rmtree(figures_dir, ignore_errors=True)
    figures = [
        m for m in params.eval.mode if confusion_figure(metrics, m, figures_dir / f"confusion_{m}.png")
    ]
    if training and training_figure(TRAIN_CURVES_DIR, figures_dir / "training.png"):
        figures.append("training")
    if verdict_figure(task_verdicts(metrics, params.eval.mode), figures_dir / "verdicts.png"):
        figures.append("verdicts")
    extras = {name: _read_optional(path) for name, path in OPTIONAL_INPUTS.items()}
    stage_times = read_stage_times()
    markdown = render(
        params,
        metrics,
        validations,
        tokens,
        training,
        tuple(figures),
        **extras,
        stage_times=stage_times,
    )
    write_text(out_file, markdown)
    preset = resolve_model(params.model)
    summary = readme_summary(
        params,
        preset,
        metrics,
        training,
        extras["ondevice"],
        _read_optional(benchmark_file),
        made_by(),
        extras["augmentation"],
        extras["judge"],
        _read_optional(CAPACITY_BENCHMARK),
        stage_times,
    )
    write_text(summary_file, summary)
    html_file = out_file.with_suffix(".html")
    write_text(html_file, markdown_to_html(markdown, "healthslm report", out_file.parent))
    echo(f"wrote {html_file}")
    echo(f"wrote {out_file}")
    echo(f"wrote {summary_file} (`healthslm readme` puts it in {RESULTS_PAGE})")
