"""`healthslm report`: reports/report.md from the stage outputs (metrics, validation, params)."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

from healthslm.evaluate import METRICS_FILE
from healthslm.io import write_text
from healthslm.metrics import LOWER_IS_BETTER
from healthslm.models.registry import resolve_model
from healthslm.params import Params
from healthslm.tasks import TASKS, TaskSpec
from healthslm.validate import DOCS_DIR, SUMMARY_FILE

REPORT_FILE = Path("reports/report.md")
PAPER_COLUMNS = {
    "pmdata_stress": "STRS",
    "pmdata_readiness": "READ",
    "pmdata_fatigue": "FATG",
    "pmdata_sleep_quality": "SQ",
}


def paper_reference() -> dict[tuple[str, str], dict[str, str]]:
    """(setting, model) -> {column: value} from HealthSLM-Bench's published tables."""
    text = resources.files("healthslm.reference").joinpath("healthslm_bench_tables.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {(row["setting"], row["model"]): row for row in rows}


def _paper_value(table: dict, setting: str, model: str | None, spec: TaskSpec) -> str:
    row = table.get((setting, model or ""))
    value = (row or {}).get(PAPER_COLUMNS.get(spec.key, ""), "")
    if not value:
        return "—"
    number = float(value)
    return f"{number / 100:.3f}" if spec.metric == "accuracy" else f"{number:.2f}"


def _cell(result: dict, metric: str) -> str:
    return f"{result[metric]:.3f} [{result[metric + '_ci_low']:.3f}, {result[metric + '_ci_high']:.3f}]"


def results_table(metrics: dict, params: Params, paper_model: str | None) -> list[str]:
    table = paper_reference()
    lines = [
        "| task | metric | n | model [95% CI] | majority/median [95% CI] | classical [95% CI] "
        f"| paper, {paper_model or 'same model'} | paper, SLM mean |",
        "|---|---|--:|---|---|---|--:|--:|",
    ]
    for key, spec in TASKS.items():
        if key not in metrics:
            continue
        result, metric = metrics[key], spec.metric
        arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
        lines.append(
            f"| {key} | {metric} {arrow} | {result['n']} | {_cell(result['model'], metric)} "
            f"| {_cell(result['majority'], metric)} | {_cell(result['classical'], metric)} "
            f"| {_paper_value(table, params.eval.mode, paper_model, spec)} "
            f"| {_paper_value(table, params.eval.mode, 'SLM_mean', spec)} |"
        )
    return lines


def efficiency_table(efficiency: dict) -> list[str]:
    return [
        "| examples | examples/s | mean latency (s) | p95 latency (s) | peak RSS (MB) | params (M) "
        "| disk (MB) |",
        "|--:|--:|--:|--:|--:|--:|--:|",
        "| {examples} | {examples_per_s} | {latency_mean_s} | {latency_p95_s} | {peak_rss_mb} | {params_m} "
        "| {disk_mb} |".format(**efficiency),
    ]


def render(params: Params, metrics: dict, validation: dict) -> str:
    preset = resolve_model(params.model)
    limit = params.eval.limit or "all"
    suites = validation.get("suites", {})
    lines = [
        "# healthslm report",
        "",
        f"Model **{params.model}** ({preset.hf_id or preset.local_path}) · mode `{params.eval.mode}` · "
        f"answer strategy `{params.eval.strategy}` · prompt format `{params.prepare.prompt_format}` · "
        f"chat template {'on' if params.eval.chat_template else 'off'} · eval limit {limit} per task.",
        "",
        "## Results",
        "",
        "Every score sits beside a constant baseline (majority class, or the train median) and a classical "
        "model (gradient boosting on the same 14-day series), on the same examples. Brackets: 95 % "
        "percentile-bootstrap interval. Paper columns: HealthSLM-Bench (arXiv:2509.07260), n=299, "
        "generation with regex parsing; ours scores the label set by likelihood, so every answer is valid.",
        "",
        *results_table(metrics, params, preset.paper_name),
        "",
        "## Efficiency",
        "",
        *efficiency_table(metrics["efficiency"]),
        "",
        "## Data validation",
        "",
        f"Great Expectations: {sum(s['success'] for s in suites.values())}/{len(suites)} record sets pass "
        f"([Data Docs]({DOCS_DIR.relative_to('reports')}/index.html)).",
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(params.model_dump(by_alias=True), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def report(
    params: Params,
    metrics_file: Path = METRICS_FILE,
    validation_file: Path = SUMMARY_FILE,
    out_file: Path = REPORT_FILE,
    echo=print,
) -> None:
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    validation = json.loads(validation_file.read_text(encoding="utf-8"))
    write_text(out_file, render(params, metrics, validation))
    echo(f"wrote {out_file}")
