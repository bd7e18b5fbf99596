"""The default run's results page (docs/results.md), written from the committed reports so it cannot drift:
the report stage writes reports/summary.md, `healthslm readme` copies it between the page's markers, and a
test fails when the two differ or when the summary no longer follows from the reports it names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from healthslm.errors import HealthSLMError
from healthslm.io import write_text
from healthslm.models.registry import ModelPreset
from healthslm.params import Params
from healthslm.paths import CAPACITY_BENCHMARK, EVAL_BENCHMARK, FIGURES_DIR
from healthslm.verdicts import Verdict, task_verdicts, verdict_summary, with_interval

BEGIN = "<!-- results: generated from reports/ by the report stage; `healthslm readme` updates it -->"
END = "<!-- /results -->"
RESULTS_PAGE = Path("docs/results.md")  # where the summary is shown; its links are relative to docs/
CODE_PATHS = ("src", "stages", "params.yaml", "dvc.yaml")


def made_by(root: Path = Path(".")) -> str:
    """The commit the run started from, and whether code or params differed from it."""

    def git(*args: str) -> str:
        found = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return found.stdout.strip() if found.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD") or "no commit"
    dirty = git("status", "--porcelain", "--", *CODE_PATHS)
    return f"commit `{commit}`" + (" with uncommitted changes to code or params" if dirty else "")


def _pretrained_modes(params: Params) -> str:
    """How the pretrained model was asked: zero-shot, few-shot or both."""
    kinds = {"zero-shot" if mode == "zs" else "few-shot" for mode in params.eval.mode if mode != "ft"}
    return {2: "zero- and few-shot", 1: next(iter(kinds), ""), 0: "(no pretrained mode)"}[len(kinds)]


def _run_line(
    params: Params, preset: ModelPreset, training: dict | None, efficiency: dict, origin: str
) -> str:
    modes = ", ".join(params.eval.mode)
    rows = f"{params.eval.limit} eval rows per task" if params.eval.limit else "every eval row"
    cpu = next((row["cpu"] for row in efficiency.values() if row.get("cpu")), "an unrecorded CPU")
    line = (
        f"Made by `dvc repro` from {origin}, with params.yaml as committed there: model "
        f"`{params.model}` ({preset.provenance}); modes {modes}; data split `{params.data.split}`; {rows} "
        "(seeded, label-stratified, the same rows in every mode; intervals resampled by person on PMData, by "
        f"row elsewhere); answer strategy `{params.eval.strategy}`; `{params.eval.prompt_format}` "
        f"prompts{' in the chat template' if params.eval.chat_template else ''} {_pretrained_modes(params)}"
    )
    if training:
        lora = training["recipe"]["lora"]
        line += (
            f", `{training['prompt_format']}` prompts for ft as trained ({training['method']} r={lora['r']} "
            f"on {training['examples']} examples, {training['steps']} steps)"
        )
    used = next((row["numerics"] for row in efficiency.values() if row.get("numerics")), None)
    if used:  # what decides the numbers (models/dtype.py): at float32 the same on any x86-64 CPU
        line += f"; numerics {used['dtype']}, torch {used['torch']}, {used['cpu_kernels']}"
    return line + f"; on {cpu}."


def _row(verdict: Verdict, result: dict) -> str:
    arrow = "↓" if verdict.lower_is_better else "↑"
    leak_free = (
        f"{verdict.leak_free_n}: {verdict.leak_free_verdict}" if verdict.leak_free_verdict else "0 rows"
    )
    model = with_interval(result["model"], verdict.metric)
    return (
        f"| {verdict.task} | {verdict.metric} {arrow} | {verdict.mode} | {model} "
        f"| {result['majority'][verdict.metric]:.3f} | {result['classical'][verdict.metric]:.3f} "
        f"| {verdict.difference} "
        f"| {verdict.shown} | {leak_free} |"
    )


def results_table(metrics: dict, verdicts: list[Verdict]) -> list[str]:
    lines = [
        "| task | metric | mode | model [95% CI] | constant | classical "
        "| model − best baseline [paired 95% CI] | verdict | leak-free rows: verdict |",
        "|---|---|---|---|--:|--:|---|---|---|",
    ]
    order = sorted(verdicts, key=lambda v: [v.task for v in verdicts].index(v.task))
    return lines + [_row(v, metrics[v.mode][v.task]) for v in order]


def text_lines(metrics: dict, modes: list[str]) -> list[str]:
    parts = []
    for mode in modes:
        for key, result in metrics.get(mode, {}).items():
            if "rouge_l" in result.get("model", {}):
                model = result["model"]
                parts.append(
                    f"{key} {mode}: ROUGE-L {model['rouge_l']:.3f}, BERTScore F1 {model['bertscore_f1']:.3f} "
                    f"(n={result['n']})"
                )
    return (
        ["Open-ended answers (generated, scored against the references): " + "; ".join(parts) + "."]
        if parts
        else []
    )


def ondevice_lines(ondevice: dict | None, preset: ModelPreset) -> list[str]:
    if not ondevice:
        return []
    engines = {name: row for name, row in ondevice.items() if isinstance(row, dict)}
    hf = engines.get("hf", {})
    quantized = [
        f"{name} is {row['size_mb']:.0f} MB and decodes {row['decode_tokens_per_s']} tokens/s "
        f"({row['fraction_of_bound']:.0%} of its memory-bandwidth bound, peak RSS {row['peak_rss_mb']} MB, "
        f"time to first token {row['ttft_s']} s)"
        for name, row in engines.items()
        if name != "hf"
    ]
    agreement = []
    for name, row in engines.items():
        shares = [t["agreement_with_hf"] for t in row.get("tasks", {}).values() if "agreement_with_hf" in t]
        if name != "hf" and shares:
            agreement.append(f"{name} {min(shares):.0%}-{max(shares):.0%}")
    text = (
        f"**On device** (`reports/ondevice.json`, {ondevice['n_threads']} threads, batch 1, "
        f"{ondevice.get('cpu', 'an unrecorded CPU')}; bandwidth {ondevice['bandwidth_gbs']} GB/s measured in "
        f"the same run): " + "; ".join(quantized) + f". The transformers model (hf, fp32): "
        f"{hf.get('decode_tokens_per_s')} tokens/s, peak RSS {hf.get('peak_rss_mb')} MB, time to first token "
        f"{hf.get('ttft_s')} s."
    )
    if agreement:
        text += " Answers equal to the hf model's, per task: " + ", ".join(agreement) + "."
    if preset.prequantized:
        text += (
            f" The base weights were {preset.prequantized} already, so each GGUF type is a second rounding "
            "of them: read its accuracy loss against the dequantized model, not full precision."
        )
    return [text]


def augment_lines(augment: dict | None, judge: dict | None) -> list[str]:
    if not augment:
        return []
    kept = sum((augment.get("accepted_generated") or {}).values())
    text = (
        "**Augmentation and judge** (`reports/augment.json`, `reports/judge.json`): "
        f"{augment['endpoint']} (`{augment['model']}`) explained the gold label of {augment['generated']} "
        f"train records, {kept} kept (the rest rejected with the reason); {augment['imported']} gpt-3.5 "
        "explanations imported (DR, Dreaddit)."
    )
    if judge:
        overall = [
            f"{name} {mode} {stats['overall']:.2f} "
            f"({stats['failed']}/{stats['n']} failed; a failure counts 0)"
            for mode, sets in judge.items()
            if mode not in ("usage", "criteria", "rubric_version") and isinstance(sets, dict)
            for name, stats in sets.items()
        ]
        text += (
            f" The judge (`{judge['usage']['model']}`) scored the open-ended answers 0-5 overall: "
            + ", ".join(overall)
            + ". With the embedded 135M model as writer and judge these only show the machinery works."
        )
    return [text]


def cost_lines(efficiency: dict, training: dict | None) -> list[str]:
    modes = "; ".join(
        f"{mode} {row['examples_per_s']} examples/s, mean latency {row['latency_mean_s']} s, peak RSS "
        f"{row['peak_rss_mb']} MB"
        for mode, row in efficiency.items()
    )
    text = f"**Cost** (`reports/metrics.json`, `reports/metrics_ft.json`): {modes}."
    if training:
        text += (
            f" Fine-tuning (`reports/train/training.json`): {training['tokens_per_s']} tokens/s, "
            f"{training['runtime_s']} s, peak RSS {training['peak_rss_mb']} MB."
        )
    return [text + " Compare speeds only within one run, on one CPU."]


def benchmark_lines(benchmark: dict | None) -> list[str]:
    if not benchmark:
        return []
    lines = [
        "**Eval benchmark** (`python benchmarks/eval_speed.py`, its output "
        f"`{EVAL_BENCHMARK.as_posix()}`): {benchmark['task']}, {benchmark['examples']} examples, "
        f"{benchmark['model']}, {benchmark['threads']} threads, {benchmark['cpu']}; our scorer "
        "against a seed-style loop (raw prompt, batch 1, greedy "
        "`generate` + the seed's regex) on the same examples:",
        "",
        "| mode | seed loop | invalid | score, seed prompt | score, compact prompt "
        "| compact, after the header |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for mode, row in benchmark["modes"].items():
        seed, ours, compact = row["seed_loop"], row["score_seed"], row["score_compact"]
        lines.append(
            f"| {mode} | {seed['examples_per_s']} ex/s | {seed['invalid_rate']:.0%} | {ours['speed_up']}× "
            f"| {compact['speed_up']}× | {compact['steady_speed_up']}× |"
        )
    if text := benchmark.get("text_generation"):
        lines += [
            "",
            f"Open-ended generation in batches of {text['batch_size']} grouped by length: "
            f"{text['speed_up']}× batch 1 on {text['prompts']} {text['task']} prompts, "
            f"{text['identical_texts']}/{text['prompts']} texts identical.",
        ]
    return lines


def _run_cell(run: dict) -> str:
    if "error" in run or not run:
        return run.get("error", "—")
    return f"{run['peak_rss_mb'] / 1024:.1f} GiB, {run['train_tokens_per_s']} ({run['batch']})"


def capacity_lines(capacity: dict | None) -> list[str]:
    """benchmarks/capacity.py's committed output: each preset's shape, today's training vs the memory plan."""
    if not capacity:
        return []
    lines = [
        f"**Capacity** (`python benchmarks/capacity.py`, its output `{CAPACITY_BENCHMARK.as_posix()}`): "
        f"random-weight models of each preset's exact shape, {capacity['cpu']}, {capacity['cores']} cores, "
        f"activation budget {capacity['budget_gb']} GB. A LoRA train step before the memory plan (TRL's "
        "head over every position, sequences packed) and with it, on the same tokens; then the preset's "
        "largest batch under the plan; and a 640-token scoring prefill:",
        "",
        "| preset | train, before: peak RSS, tok/s | with the plan | ratio tok/s, peak | preset defaults "
        "under the plan | scoring fp32 / bf16 tok/s |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name, row in capacity["presets"].items():
        today, ours, default, score = (row.get(k, {}) for k in ("today", "ours", "ours-default", "score"))
        ratio = row.get("ratio_to_today", {})
        lines.append(
            f"| {name} | {_run_cell(today)} | {_run_cell(ours)} | {ratio.get('train_tokens_per_s', '—')}×, "
            f"{ratio.get('peak_rss', '—')}× | {_run_cell(default)} "
            f"| {' / '.join(str(v) for v in score.get('score_tokens_per_s', {}).values()) or '—'} |"
        )
    return lines


def stage_time_lines(stage_times: list[dict]) -> list[str]:
    """The stage runs that made these outputs: total and the slowest, from reports/stages/."""
    if not stage_times:
        return []
    total = sum(row.get("wall_s") or 0 for row in stage_times)
    slowest = ", ".join(f"{row['stage']} {row['wall_s']:.0f} s" for row in stage_times[:4])
    return [
        f"**Where the time goes** (`reports/stages/`, one file per stage run): {total / 60:.1f} min of stage "
        f"runs on {stage_times[0]['cpu']}, {stage_times[0]['cores']} cores (process start-ups included, "
        f"the report stage not); slowest: {slowest}. The full table is in reports/report.md.",
    ]


def readme_summary(
    params: Params,
    preset: ModelPreset,
    metrics: dict,
    training: dict | None,
    ondevice: dict | None,
    benchmark: dict | None,
    origin: str,
    augment: dict | None = None,
    judge: dict | None = None,
    capacity: dict | None = None,
    stage_times: list[dict] = (),
) -> str:
    verdicts = task_verdicts(metrics, params.eval.mode)
    lines = [
        BEGIN,
        "",
        _run_line(params, preset, training, metrics["efficiency"], origin),
        "",
        f"![model − best baseline, per task and mode](../{FIGURES_DIR.as_posix()}/verdicts.png)",
        "",
        *verdict_summary(verdicts),
        "",
        *results_table(metrics, verdicts),
        "",
        *text_lines(metrics, params.eval.mode),
        "",
        *ondevice_lines(ondevice, preset),
        "",
        *augment_lines(augment, judge),
        "",
        *cost_lines(metrics["efficiency"], training),
        "",
        *stage_time_lines(list(stage_times)),
        "",
        *benchmark_lines(benchmark),
        "",
        *capacity_lines(capacity),
        "",
        END,
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def origin_of(summary: str) -> str:
    """The `from ...,` part of a written summary (the commit it was made from)."""
    found = re.search(r"Made by `dvc repro` from (.+?), with params\.yaml", summary)
    if not found:
        raise HealthSLMError("reports/summary.md: no 'Made by `dvc repro` from ...' line")
    return found.group(1)


def readme_block(readme: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise HealthSLMError(f"{RESULTS_PAGE}: no generated results block ({BEGIN} ... {END})")
    start = readme.index(BEGIN)
    return readme[start : readme.index(END, start) + len(END)] + "\n"


def update_readme(summary_file: Path, readme_file: Path = RESULTS_PAGE) -> bool:
    """Put the summary between the results page's markers; False when it was already there."""
    summary = summary_file.read_text(encoding="utf-8")  # first: a missing summary names the stage to run
    readme = readme_file.read_text(encoding="utf-8")
    block = readme_block(readme)
    if block == summary:
        return False
    write_text(readme_file, readme.replace(block, summary))
    return True
