"""`healthslm report`: reports/report.md from stage outputs (metrics, validation, token economy, params)."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

from healthslm.data.registry import all_tasks, get_dataset
from healthslm.evaluate import METRICS_FILE
from healthslm.io import write_text
from healthslm.metrics import LOWER_IS_BETTER
from healthslm.models.registry import resolve_model
from healthslm.params import Params
from healthslm.plots import PLOTS_DIR
from healthslm.tasks import TaskSpec
from healthslm.token_economy import TOKENS_FILE
from healthslm.validate import DOCS_DIR, SUMMARY_DIR

REPORT_FILE = Path("reports/report.md")
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


def _paper_value(table: dict, setting: str, model: str | None, spec: TaskSpec) -> str:
    row = table.get((setting, model or ""))
    value = (row or {}).get(PAPER_COLUMNS.get(spec.key, ""), "")
    if not value:
        return "—"
    number = float(value)
    return f"{number / 100:.3f}" if spec.metric == "accuracy" else f"{number:.2f}"


def _cell(result: dict, metric: str) -> str:
    if metric not in result:
        return "—"
    return f"{result[metric]:.3f} [{result[metric + '_ci_low']:.3f}, {result[metric + '_ci_high']:.3f}]"


def results_table(metrics: dict, params: Params, paper_model: str | None) -> list[str]:
    table = paper_reference()
    lines = [
        "| mode | task | metric | n | model [95% CI] | invalid | majority/median [95% CI] "
        f"| classical [95% CI] | paper, {paper_model or 'same model'} | paper, SLM mean |",
        "|---|---|---|--:|---|--:|---|---|--:|--:|",
    ]
    for mode in params.eval.mode:
        for key, spec in all_tasks().items():
            result = metrics.get(mode, {}).get(key)
            if not result or "majority" not in result:
                continue
            metric = spec.metric
            arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
            lines.append(
                f"| {mode} | {key} | {metric} {arrow} | {result['n']} | {_cell(result['model'], metric)} "
                f"| {result['invalid_rate']:.1%} | {_cell(result['majority'], metric)} "
                f"| {_cell(result['classical'], metric)} | {_paper_value(table, mode, paper_model, spec)} "
                f"| {_paper_value(table, mode, 'SLM_mean', spec)} |"
            )
    return lines


def text_table(metrics: dict) -> list[str]:
    lines = ["| task | n | ROUGE-L [95% CI] | BERTScore F1 [95% CI] |", "|---|--:|---|---|"]
    for key, result in metrics.get("zs", {}).items():
        if "rouge_l" in result.get("model", {}):
            lines.append(
                f"| {key} | {result['n']} | {_cell(result['model'], 'rouge_l')} "
                f"| {_cell(result['model'], 'bertscore_f1')} |"
            )
    return lines


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


def efficiency_table(efficiency: dict) -> list[str]:
    lines = ["| mode | " + " | ".join(EFFICIENCY_COLUMNS) + " |", "|---|" + "--:|" * len(EFFICIENCY_COLUMNS)]
    for mode, row in efficiency.items():
        cells = " | ".join("—" if row.get(c) is None else str(row[c]) for c in EFFICIENCY_COLUMNS)
        lines.append(f"| {mode} | {cells} |")
    return lines


def plot_gallery(plots_dir: Path) -> list[str]:
    images = sorted((plots_dir / "scores").glob("*.png"))
    return [f"![{image.stem}]({image.relative_to(REPORT_FILE.parent)})" for image in images]


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
    lines = [
        "| dataset | license | record sets | rows (train / eval) | gate | leakage (eval in train) "
        "| Data Docs |",
        "|---|---|--:|---|---|---|---|",
    ]
    for name, summary in validations.items():
        spec = get_dataset(name)
        if summary.get("skipped"):
            lines.append(f"| {name} | {spec.license} | 0 | — | skipped | — | — |")
            continue
        suites = summary["suites"]
        rows = " · ".join(
            f"{s.split('.')[0].removeprefix(name + '_')}: {suites.get(s, {}).get('rows', '?')}"
            f" / {suites.get(s.replace('.train', '.eval'), {}).get('rows', '?')}"
            for s in suites
            if s.endswith(".train")
        )
        leaks = ", ".join(
            f"{v['rate']:.1%} ({v['exact']} exact, {v['near']} near)" for v in summary["leakage"].values()
        )
        gate = "pass" if summary["success"] else "FAIL"
        docs = f"[docs]({DOCS_DIR.relative_to('reports')}/{name}/index.html)"
        lines.append(f"| {name} | {spec.license} | {len(suites)} | {rows} | {gate} | {leaks} | {docs} |")
    pages = [
        f"[{suite}]({DOCS_DIR.relative_to('reports')}/{name}/{page})"
        for name in validations
        if (DOCS_DIR / name / "pages.json").exists()
        for suite, page in json.loads((DOCS_DIR / name / "pages.json").read_text()).items()
    ]
    if pages:
        lines += ["", "Validation results (Data Docs pages, readable offline): " + " · ".join(pages)]
    return lines


def render(params: Params, metrics: dict, validations: dict[str, dict], tokens: dict) -> str:
    preset = resolve_model(params.model)
    limit = params.eval.limit or "all"
    lines = [
        "# healthslm report",
        "",
        f"Model **{params.model}** ({preset.hf_id or preset.local_path}) · "
        f"modes `{', '.join(params.eval.mode)}` · "
        f"answer strategy `{params.eval.strategy}` · prompt format `{params.eval.prompt_format}` · "
        f"chat template {'on' if params.eval.chat_template else 'off'} · eval limit {limit} per task.",
        "",
        "## Results",
        "",
        "Every score sits beside a constant baseline (majority class, or the train median) and a classical "
        "model (gradient boosting on the prompt's numbers, or TF-IDF + logistic regression on text), fitted "
        "on "
        "train and scored on the same examples. Brackets: 95 % percentile-bootstrap interval. Paper columns: "
        "HealthSLM-Bench (arXiv:2509.07260), n=299, generation with regex parsing, for the same mode.",
        "",
        *results_table(metrics, params, preset.paper_name),
        "",
        "Invalid: answers the seed's regex could not parse (`generate` only; `score` always answers).",
        "",
        "### Open-ended answers (zero-shot, generated)",
        "",
        *text_table(metrics),
        "",
        "BERTScore: F1 of all-MiniLM-L6-v2 token embeddings (layer 6, no baseline rescaling).",
        "",
        "### Plots",
        "",
        *plot_gallery(PLOTS_DIR),
        "",
        "Confusion matrices: `dvc plots show` / `dvc plots diff` (reports/plots/confusion/).",
        "",
        "## Efficiency",
        "",
        *efficiency_table(metrics["efficiency"]),
        "",
        "## Data",
        "",
        *data_section(validations),
        "",
        "Leakage: eval inputs identical to a train input, or TF-IDF cosine ≥ "
        f"{params.validate_.near_duplicate_similarity} (PMData's 14-day windows overlap between neighbouring "
        "days).",
        "",
        "## Token economy",
        "",
        "Tokens of the rendered instruction + input (SmolLM2 tokenizer), mean over each eval split.",
        "",
        *token_table(tokens),
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(params.model_dump(by_alias=True), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def read_validations(params: Params, summary_dir: Path = SUMMARY_DIR) -> dict[str, dict]:
    return {
        name: json.loads((summary_dir / f"{name}.json").read_text(encoding="utf-8"))
        for name in params.data.datasets
    }


def report(
    params: Params,
    metrics_file: Path = METRICS_FILE,
    summary_dir: Path = SUMMARY_DIR,
    tokens_file: Path = TOKENS_FILE,
    out_file: Path = REPORT_FILE,
    echo=print,
) -> None:
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    tokens = json.loads(tokens_file.read_text(encoding="utf-8"))
    write_text(out_file, render(params, metrics, read_validations(params, summary_dir), tokens))
    echo(f"wrote {out_file}")
