"""Where every stage reads and writes, relative to the project root: one place, imported by the stages
and by what reads their outputs (report, compare), so no module imports a stage to find a path."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")
RECORDS_DIR = Path("artifacts/records")
SKIPPED_FILE = "skipped.json"  # in a dataset's records folder: why it was skipped
VALIDATION_DIR = Path("reports/validation")
DOCS_DIR = Path("reports/data_docs")
TOKENS_FILE = Path("reports/token_economy.json")

AUGMENTED_DIR = Path("artifacts/augmented")
AUGMENT_CACHE = Path("artifacts/llm_cache/augment.jsonl")
AUGMENT_SUMMARY = Path("reports/augment.json")
AUGMENT_VALIDATION = Path("reports/augment_validation.json")

MODEL_DIR = Path("artifacts/model")
CHECKPOINTS_DIR = Path("artifacts/checkpoints")
TRAIN_REPORTS = Path("reports/train")
TRAINING_FILE = "training.json"  # in MODEL_DIR and TRAIN_REPORTS
TRAIN_CURVES_DIR = TRAIN_REPORTS / "plots" / "metrics"
TRAINING_SUMMARY = TRAIN_REPORTS / TRAINING_FILE
WANDB_ROOT = Path("wandb")

# Evaluation runs in two stages: the pretrained model's modes (zs, fs-k) and the fine-tuned model's (ft).
PREDICTIONS_DIR = Path("artifacts/predictions")
METRICS_FILE = Path("reports/metrics.json")
FT_METRICS_FILE = Path("reports/metrics_ft.json")
PLOTS_DIR = Path("reports/plots")

JUDGE_DIR = Path("artifacts/judge")
JUDGE_CACHE = Path("artifacts/llm_cache/judge.jsonl")
JUDGE_SUMMARY = Path("reports/judge.json")

GGUF_DIR = Path("artifacts/gguf")
EXPORT_REPORTS = Path("reports/export")
ONDEVICE_FILE = Path("reports/ondevice.json")
ONDEVICE_FIGURE = Path("reports/ondevice/speed_vs_accuracy.png")

REPORT_FILE = Path("reports/report.md")
SUMMARY_FILE = Path("reports/summary.md")  # the results page (docs/results.md), written by the report stage
EVAL_BENCHMARK = Path("reports/benchmarks/eval_speed.json")  # benchmarks/eval_speed.py's output
CAPACITY_BENCHMARK = Path("reports/benchmarks/capacity.json")  # benchmarks/capacity.py's output
TWIN_BENCHMARK = Path("reports/benchmarks/twins.json")  # benchmarks/twins.py: each preset's twin round trip
STAGE_TIMES_DIR = Path("reports/stages")  # each stage's wall time and peak memory (stage.run)
FIGURES_DIR = Path("reports/figures")
COMPARE_DIR = Path("reports/compare")


def model_group(mode: str) -> str:
    """`finetuned` for the ft mode, `base` for the pretrained model's modes: each is one stage's output."""
    return "finetuned" if mode == "ft" else "base"


def predictions_dir(mode: str, root: Path = PREDICTIONS_DIR) -> Path:
    return root / model_group(mode) / mode


def metrics_file(mode: str) -> Path:
    return FT_METRICS_FILE if mode == "ft" else METRICS_FILE
