"""Plots declared in dvc.yaml: confusion matrices (DVC's confusion template), score bars with CI whiskers."""

from __future__ import annotations

from pathlib import Path

from healthslm.io import atomic_path, write_json
from healthslm.tasks import TaskSpec

PLOTS_DIR = Path("reports/plots")
SYSTEMS = ("model", "majority", "classical")


def confusion_points(rows: list[dict]) -> list[dict]:
    return [{"actual": str(row["gold"]), "predicted": str(row["answer"])} for row in rows]


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (stages run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: Path) -> None:
    """Write the figure atomically and free it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    pyplot().close(figure)


def score_bars(path: Path, title: str, metric: str, result: dict) -> None:
    plt = pyplot()
    systems = [s for s in SYSTEMS if s in result]
    values = [result[s][metric] for s in systems]
    errors = [
        [v - result[s][f"{metric}_ci_low"] for s, v in zip(systems, values, strict=True)],
        [result[s][f"{metric}_ci_high"] - v for s, v in zip(systems, values, strict=True)],
    ]
    figure, axis = plt.subplots(figsize=(4, 3), dpi=100)
    axis.bar(systems, values, yerr=errors, capsize=6, color=["#4c72b0", "#999999", "#55a868"][: len(systems)])
    axis.set_title(title, fontsize=9)
    axis.set_ylabel(metric)
    figure.tight_layout()
    save_png(figure, path)


def write_plots(plots_dir: Path, mode: str, spec: TaskSpec, rows: list[dict], result: dict) -> None:
    name = f"{mode}__{spec.key}"
    if spec.closed:
        write_json(plots_dir / "confusion" / f"{name}.json", confusion_points(rows))
    if spec.metric in result.get("model", {}):
        score_bars(plots_dir / "scores" / f"{name}.png", f"{spec.key} ({mode})", spec.metric, result)
