"""Per task and mode: does the model beat the best baseline on the same rows? Read from the evaluate
stages' metrics (the paired difference and its interval), for the report, the results page and
`healthslm compare`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from healthslm.data.registry import all_tasks
from healthslm.metrics import direction, holm
from healthslm.plots import pyplot, save_png

BASELINES = ("majority", "classical")
SENTENCES = {
    "better": "Better than the best baseline",
    "worse": "Worse than the best baseline",
    "no difference": "No difference from the best baseline",
}
LIMIT = 100  # the figure's x range, ±: accuracy points or % of the baseline's error
COLOURS = {"better": "tab:green", "worse": "tab:red", "no difference": "tab:gray"}


@dataclass(frozen=True)
class Verdict:
    mode: str
    task: str
    metric: str
    n: int
    model: float
    baseline: str  # the better of the two baselines on these rows
    baseline_value: float
    diff: float  # model − baseline, paired by row
    low: float
    high: float
    verdict: str  # better | worse | no difference (95 %)
    leak_free_n: int
    leak_free_model: float | None
    leak_free_baseline: float | None
    leak_free_verdict: str | None
    units: int = 0  # resampling units (people, or rows) among the n rows
    units_differing: int = 0  # units whose model and baseline answers differ
    sign_test_p: float = 1.0  # exact sign test over the differing units
    fragile: bool = False  # fewer than metrics.MIN_UNITS units carry it, or the sign test reads otherwise

    @property
    def shown(self) -> str:
        """ "**better** (7/18 units, fragile)": the verdict and how many independent units carry it."""
        fragile = ", fragile" if self.fragile else ""
        return f"**{self.verdict}** ({self.units_differing}/{self.units} units{fragile})"

    @property
    def difference(self) -> str:
        """The paired difference as the tables show it: "-0.160 [-0.368, +0.000] vs constant"."""
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}] vs {self.baseline_name}"

    @property
    def baseline_name(self) -> str:
        """ "constant" (the majority class, or the train median of a number) or "classical"."""
        return "constant" if self.baseline == "majority" else self.baseline

    @property
    def lower_is_better(self) -> bool:
        return direction(self.metric) == "lower"

    def gain(self) -> tuple[float, float, float]:
        """(value, low, high) of the improvement over the baseline, positive = better: accuracy points,
        or for an error metric the share of the baseline's error removed (%)."""
        if self.lower_is_better:
            scale = -100 / self.baseline_value if self.baseline_value else 0.0
            return self.diff * scale, self.high * scale, self.low * scale
        return self.diff * 100, self.low * 100, self.high * 100


def with_interval(result: dict, metric: str) -> str:
    """ "0.480 [0.261, 0.739]": a metric and its 95 % interval, or a dash where there is none."""
    if metric not in result:
        return "—"
    return f"{result[metric]:.3f} [{result[metric + '_ci_low']:.3f}, {result[metric + '_ci_high']:.3f}]"


def best_baseline(result: dict, metric: str) -> str:
    values = {name: result[name][metric] for name in BASELINES if metric in result.get(name, {})}
    pick = min if direction(metric) == "lower" else max
    return pick(values, key=values.__getitem__)


def task_verdicts(metrics: dict, modes: list[str]) -> list[Verdict]:
    """One Verdict per mode and closed or numeric task that has paired differences, in task order."""
    out = []
    for mode in modes:
        for key, spec in all_tasks().items():
            result = metrics.get(mode, {}).get(key)
            if not result or "paired" not in result or spec.metric not in result["model"]:
                continue
            name = best_baseline(result, spec.metric)
            paired, leak_free = result["paired"][name], result.get("leak_free", {})
            free = leak_free.get("paired", {}).get(name, {})
            out.append(
                Verdict(
                    mode,
                    key,
                    spec.metric,
                    result["n"],
                    result["model"][spec.metric],
                    name,
                    result[name][spec.metric],
                    paired["diff"],
                    paired["ci_low"],
                    paired["ci_high"],
                    paired["verdict"],
                    leak_free.get("n", 0),
                    leak_free.get("model"),
                    leak_free.get(name),
                    free.get("verdict"),
                    paired.get("units", 0),
                    paired.get("units_differing", 0),
                    paired.get("sign_test_p", 1.0),
                    paired.get("fragile", False),
                )
            )
    return out


def verdict_figure(verdicts: list[Verdict], path: Path) -> bool:
    """Every task × mode in one picture: the model's paired gain over the best baseline with its 95 %
    interval; left of zero the model is worse."""
    if not verdicts:
        return False
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 0.28 * len(verdicts) + 1.2), dpi=90)
    for row, verdict in enumerate(reversed(verdicts)):
        value, low, high = verdict.gain()
        colour = COLOURS[verdict.verdict]
        # An error many times the baseline's would squash the rest: clip at ±LIMIT and print the value.
        axis.plot([max(low, -LIMIT), min(high, LIMIT)], [row, row], color=colour, linewidth=2)
        axis.plot([min(max(value, -LIMIT), LIMIT)], [row], "o", color=colour, markersize=4)
        if abs(value) > LIMIT:
            axis.annotate(f"{value:.0f}", (math.copysign(LIMIT, value), row), fontsize=6, va="bottom",
                          ha="left" if value < 0 else "right")  # fmt: skip
    labels = [f"{v.mode} {v.task} vs {v.baseline_name}" for v in reversed(verdicts)]
    axis.set_yticks(range(len(verdicts)), labels, fontsize=7)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_xlim(-LIMIT * 1.05, LIMIT * 1.05)
    axis.set_xlabel(
        "model − best baseline, paired 95 % interval (accuracy: points; error: % of the baseline's removed)",
        fontsize=7,
    )
    axis.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    save_png(figure, path)
    return True


def verdict_summary(verdicts: list[Verdict]) -> list[str]:
    """Plain sentences: per verdict, the tasks and modes it holds for; then the fragile ones, and the
    reading adjusted for the table's many verdicts (Holm over their sign tests)."""
    lines = []
    for word, label in SENTENCES.items():
        if chosen := [v for v in verdicts if v.verdict == word]:
            items = ", ".join(f"{v.task} ({v.mode})" + (" fragile" if v.fragile else "") for v in chosen)
            lines.append(f"- **{label}** at 95 % ({len(chosen)} of {len(verdicts)}): {items}.")
    if verdicts:
        adjusted = holm([v.sign_test_p for v in verdicts])
        kept = [
            v for v, p in zip(verdicts, adjusted, strict=True) if v.verdict != "no difference" and p < 0.05
        ]
        plain = sum(v.verdict != "no difference" for v in verdicts)
        items = ", ".join(f"{v.task} ({v.mode}) {v.verdict}" for v in kept) or "none"
        lines.append(
            f"- **Adjusted for {len(verdicts)} verdicts** (Holm over exact sign tests on the differing "
            f"units): {len(kept)} of the {plain} better/worse verdicts hold at 5 %: {items}."
        )
    return lines
