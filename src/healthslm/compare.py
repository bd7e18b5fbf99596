"""`healthslm compare [BASE] [TARGET]`: what a change did to the numbers, as Markdown and the same as HTML.

BASE and TARGET are git revisions or DVC experiment names (TARGET defaults to the workspace). The page
holds `dvc metrics diff` (per task: model old -> new, the delta and whether it got better, beside the
baselines), `dvc params diff`, the plots that changed (`dvc plots diff`, drawn with matplotlib) and W&B runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from healthslm import metrics
from healthslm.data.registry import all_tasks
from healthslm.errors import HealthSLMError
from healthslm.html import inline_code, markdown_to_html
from healthslm.io import atomic_dir, write_text
from healthslm.metrics import direction
from healthslm.params import PARAMS_FILE, Params, public_url
from healthslm.paths import COMPARE_DIR, FT_METRICS_FILE, METRICS_FILE, TRAINING_SUMMARY, predictions_dir
from healthslm.plots import pyplot, save_png

EVAL_METRICS = (METRICS_FILE.as_posix(), FT_METRICS_FILE.as_posix())  # the evaluate stages' metrics
SYSTEMS = ("model", "majority", "classical")


@dataclass(frozen=True)
class Rev:
    name: str  # as the user gave it
    sha: str | None  # None = the workspace


def _run(cmd: list[str]) -> str:
    if cmd[0] == "dvc":  # this interpreter's DVC, whether or not the venv is on PATH
        cmd = [sys.executable, "-m", "dvc", *cmd[1:]]
    result = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"DVC_NO_ANALYTICS": "1"})
    if result.returncode:
        lines = (result.stderr or result.stdout).strip().splitlines()
        shown = " ".join(cmd).replace(f"{sys.executable} -m ", "")
        raise HealthSLMError(f"`{shown}` failed: {lines[-1] if lines else result.returncode}")
    return result.stdout


def resolve(rev: str | None) -> Rev:
    """A git revision, or an experiment name (refs/exps/...), to its commit; None is the workspace."""
    if rev is None:
        return Rev("workspace", None)
    found = subprocess.run(["git", "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"], capture_output=True)
    if found.returncode == 0:
        return Rev(rev, found.stdout.decode().strip())
    named = [(sha, baseline) for sha, baseline, name in experiments() if name == rev]
    if len(named) > 1:  # one name on several baselines: as DVC does, the one made on HEAD, else ask
        head = subprocess.run(
            ["git", "rev-parse", "-q", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        named = [candidate for candidate in named if candidate[1] == head] or named
    if len(named) > 1:
        made_on = ", ".join(baseline[:7] for _, baseline in named)
        raise HealthSLMError(
            f"{rev!r} names {len(named)} experiments, made on {made_on}: give the one you mean by its commit "
            "(see `dvc exp show -A`)"
        )
    if named:
        return Rev(rev, named[0][0])
    raise HealthSLMError(f"{rev!r} is neither a git revision nor an experiment (see `dvc exp show`)")


def experiments() -> list[tuple[str, str, str]]:
    """DVC's experiments here, (commit, baseline commit, name), from refs/exps/<base[:2]>/<rest>/<name>."""
    found = []
    for line in _run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"]).splitlines():
        sha, ref = line.split(" ", 1)
        parts = ref.split("/")
        if len(parts) == 5:  # not refs/exps/exec/..., DVC's own bookkeeping while a run executes
            found.append((sha, parts[2] + parts[3], parts[4]))
    return found


def _as_rev(rev: str | Rev | None) -> Rev:
    return rev if isinstance(rev, Rev) else resolve(rev)


def _dvc_revs(base: Rev, target: Rev) -> list[str]:
    return [base.sha or "workspace"] + ([target.sha] if target.sha else [])


def arrow(metric: str) -> str:
    return {"lower": "↓", "higher": "↑"}.get(direction(metric) or "", "")


def verdict(metric: str, old, new) -> str:
    if old == new:
        return "="
    if not isinstance(old, int | float) or not isinstance(new, int | float):
        return "≠ changed"  # a text value (train.targets), or one side missing
    if (way := direction(metric)) is None:
        return "≠ changed"
    return "▲ better" if (new < old) == (way == "lower") else "▼ worse"


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _delta(old, new) -> str:
    if isinstance(old, int | float) and isinstance(new, int | float):
        return f"{new - old:+.3f}" if isinstance(new - old, float) else f"{new - old:+d}"
    return "—"


def task_table(diff: dict[str, dict]) -> list[str]:
    """The evaluate stages' metrics, keys `<mode>.<task>.<system>.<metric>`: a row per mode, task, metric."""
    rows: dict[tuple[str, str, str], dict[str, dict]] = {}
    for key, change in diff.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[2] == "invalid_rate":  # the model's alone: baselines always answer
            rows.setdefault((parts[0], parts[1], "invalid_rate"), {})["model"] = change
        elif len(parts) == 4 and parts[2] in SYSTEMS and not parts[3].endswith(("_ci_low", "_ci_high")):
            mode, task, system, metric = parts
            rows.setdefault((mode, task, metric), {})[system] = change
    lines = [
        "| mode | task | metric | model, base | model, target [95% CI] | Δ | | constant | classical |",
        "|---|---|---|--:|--:|--:|---|--:|--:|",
    ]
    for (mode, task, metric), systems in sorted(rows.items()):
        model = systems.get("model", {})
        old, new = model.get("old"), model.get("new")
        low = diff.get(f"{mode}.{task}.model.{metric}_ci_low", {}).get("new")
        high = diff.get(f"{mode}.{task}.model.{metric}_ci_high", {}).get("new")
        interval = f" [{_fmt(low)}, {_fmt(high)}]" if low is not None else ""
        baselines = [_fmt(systems.get(s, {}).get("new")) for s in ("majority", "classical")]
        lines.append(
            f"| {mode} | {task} | {metric} {arrow(metric)} | {_fmt(old)} | {_fmt(new)}{interval} "
            f"| {_delta(old, new)} | {verdict(metric, old, new)} | {baselines[0]} | {baselines[1]} |"
        )
    return lines


def _predictions(rev: Rev, mode: str, task: str) -> dict[str, dict] | str:
    """One revision's prediction rows of a task and mode by id, if its outputs are in the workspace or the
    DVC cache; otherwise why not (the change then has no paired interval, and the table says so)."""
    from dvc.exceptions import PathMissingError
    from dvc_data.index import DataIndexError

    path = predictions_dir(mode) / f"{task}.jsonl"
    try:
        if rev.sha is None:
            text = path.read_text(encoding="utf-8")
        else:
            import dvc.api

            text = dvc.api.read(path.as_posix(), rev=rev.sha, encoding="utf-8")
    except FileNotFoundError:
        return f"the workspace has no {path}"
    except (PathMissingError, DataIndexError):  # "no such output" and "not pulled" differ in text only
        return f"{rev.name}'s {path} is not in the DVC cache here (not an output there, or not pulled)"
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {row["id"]: row for row in rows if "gold" in row}


def _resampling(rev: Rev) -> tuple[int, int]:
    """The revision's eval.bootstrap_samples and base.seed: a change is resampled as its evaluation was."""
    raw, defaults = yaml.safe_load(_text_at(rev, PARAMS_FILE) or "") or {}, Params()
    samples = (raw.get("eval") or {}).get("bootstrap_samples", defaults.eval.bootstrap_samples)
    return int(samples), int((raw.get("base") or {}).get("seed", defaults.base.seed))


def _label_bounds(rev: Rev, mode: str, task: str) -> tuple[float, float] | None:
    """The bounds the revision's evaluation scored invalid answers with (from its train labels)."""
    for path in EVAL_METRICS:
        bounds = ((_json_at(rev, Path(path)) or {}).get(mode, {}).get(task) or {}).get("label_bounds")
        if bounds:
            return bounds[0], bounds[1]
    return None


def paired_change(base: Rev, target: Rev, mode: str, task: str) -> dict | str:
    """Target − base paired by row, when both sides scored the same rows: the change's 95 % interval and
    verdict by metrics.paired, the rule evaluate uses (the same resampling units, the target's label bounds,
    bootstrap samples and seed). Otherwise why the change is unpaired: either side's predictions are
    unavailable, the rows differ (another sample), or the target predates recorded label bounds."""
    spec = all_tasks().get(task)
    if spec is None:
        return f"{task} is not a task here"
    old, new = _predictions(base, mode, task), _predictions(target, mode, task)
    for side in (old, new):
        if isinstance(side, str):
            return side
    if not old or old.keys() != new.keys():
        return "the two sides scored different rows"
    if (bounds := _label_bounds(target, mode, task)) is None:
        return f"{target.name} predates recorded label bounds"
    common = sorted(new)
    gold = [new[i]["gold"] for i in common]
    groups = metrics.row_units([new[i] for i in common])
    samples, seed = _resampling(target)

    def losses(rows: dict) -> np.ndarray:
        answers = metrics.worst_answers(spec, gold, [rows[i]["answer"] for i in common], bounds)
        return metrics.per_example(spec, gold, answers)

    return metrics.paired(spec, losses(new), losses(old), samples, seed, groups) | {"n": len(common)}


def _key(mode: str, task: str, metric: str) -> str:
    """The metrics-file key of the model's metric (the invalid rate sits beside the systems)."""
    return f"{mode}.{task}.{metric}" if metric == "invalid_rate" else f"{mode}.{task}.model.{metric}"


def _verdict_keys(diff: dict[str, dict], mode: str, task: str) -> list[str]:
    prefix = f"{mode}.{task}.paired."
    return sorted(k for k in diff if k.startswith(prefix) and k.endswith(".verdict"))


def _outside(diff: dict[str, dict], mode: str, task: str, metric: str) -> bool:
    """One side's value outside the other side's 95 % interval."""
    value = diff[_key(mode, task, metric)]
    for side, other in (("old", "new"), ("new", "old")):
        low = diff.get(f"{_key(mode, task, metric)}_ci_low", {}).get(side)
        high = diff.get(f"{_key(mode, task, metric)}_ci_high", {}).get(side)
        if None not in (low, high, value.get(other)) and not low <= value[other] <= high:
            return True
    return False


def _verdict_changed(diff: dict[str, dict], mode: str, task: str) -> bool:
    """A verdict against a baseline that both sides have, and that differs."""
    pairs = [(diff[k].get("old"), diff[k].get("new")) for k in _verdict_keys(diff, mode, task)]
    return any(old is not None and new is not None and old != new for old, new in pairs)


def moved(mode: str, task: str, metric: str, diff: dict[str, dict], change: dict | None) -> bool:
    """Whether a headline metric moved beyond noise: the paired interval of the change excludes zero (where
    both sides' predictions of the same rows exist), else one side's value lies outside the other's
    interval; or a verdict against a baseline changed. The invalid rate counts when it changed at all."""
    value = diff[_key(mode, task, metric)]
    if metric == "invalid_rate" or not all(isinstance(value.get(s), int | float) for s in ("old", "new")):
        return value.get("old") != value.get("new")
    if _verdict_changed(diff, mode, task):
        return True
    if change is not None:
        return change["verdict"] != "no difference"
    return _outside(diff, mode, task, metric)


def _change_row(
    mode: str, task: str, name: str, diff: dict[str, dict], change: dict | None, unpaired: str | None = None
) -> str:
    old, new = diff[_key(mode, task, name)].get("old"), diff[_key(mode, task, name)].get("new")
    interval = f"— (unpaired: {unpaired}; moved by the intervals of each side)" if unpaired else "—"
    if change:
        fragile = ", fragile" if change["fragile"] else ""
        interval = (
            f"{change['diff']:+.3f} [{change['ci_low']:+.3f}, {change['ci_high']:+.3f}] ({change['n']} rows, "
            f"{change['units_differing']}/{change['units']} units differ{fragile})"
        )
    verdicts = " · ".join(
        f"{k.split('.')[3]}: {diff[k].get('old') or '—'} → {diff[k].get('new') or '—'}"
        for k in _verdict_keys(diff, mode, task)
    )
    return (
        f"| {mode} | {task} | {name} {arrow(name)} | {_fmt(old)} | {_fmt(new)} | {_delta(old, new)} "
        f"| {interval} "
        f"| {verdicts or '—'} |"
    )


def changes_table(
    diff: dict[str, dict], base: Rev, target: Rev, numerics_changed: frozenset[str] = frozenset()
) -> list[str]:
    """The task rows whose headline metric, invalid rate or verdict moved beyond noise; a row of a mode whose
    numerics changed is marked ⚠ (that change may be the numerics', not the revision's)."""
    lines = [
        "| mode | task | metric | base | target | Δ | change, paired 95% CI (rows, units) "
        "| verdict vs baselines, base → target |",
        "|---|---|---|--:|--:|--:|---|---|",
    ]
    tasks = all_tasks()
    for mode, task in sorted({tuple(k.split(".")[:2]) for k in diff if k.count(".") >= 2}):
        if task not in tasks:
            continue
        headline = tasks[task].metric if _key(mode, task, tasks[task].metric) in diff else "rouge_l"
        change = paired_change(base, target, mode, task) if tasks[task].label_kind != "text" else None
        unpaired = change if isinstance(change, str) else None  # why the headline has no paired interval
        change = None if unpaired else change
        for name, paired, why in ((headline, change, unpaired), ("invalid_rate", None, None)):
            if _key(mode, task, name) in diff and moved(mode, task, name, diff, paired):
                row = _change_row(mode, task, name, diff, paired, why)
                lines.append(row.replace("| ", "| ⚠ ", 1) if mode in numerics_changed else row)
    return lines if len(lines) > 2 else []


def other_metrics_table(path: str, diff: dict[str, dict], only_changed: bool) -> list[str]:
    lines = []
    for key, change in sorted(diff.items()):
        old, new = change.get("old"), change.get("new")
        if only_changed and old == new:
            continue
        lines.append(
            f"| {path} | {key} | {_fmt(old)} | {_fmt(new)} | {_delta(old, new)} | {verdict(key, old, new)} |"
        )
    header = ["| file | metric | base | target | Δ | |", "|---|---|--:|--:|--:|---|"]
    return header + lines if lines else []


def _shown(key: str, value):
    return public_url(value) if key.endswith("base_url") and isinstance(value, str) else value


def params_table(diff: dict[str, dict]) -> list[str]:
    lines = ["| file | param | base | target |", "|---|---|---|---|"]
    for path, params in diff.items():
        for key, change in sorted(params.items()):
            old, new = (json.dumps(_shown(key, change.get(side))) for side in ("old", "new"))
            lines.append(f"| {path} | {key} | {inline_code(old)} | {inline_code(new)} |")
    return lines if len(lines) > 2 else ["No parameter changed."]


def _text_at(rev: Rev, path: Path) -> str | None:
    """A git-tracked file as the revision has it (the workspace's file for no revision); None if absent."""
    if rev.sha is None:
        return path.read_text(encoding="utf-8") if path.exists() else None
    shown = subprocess.run(["git", "show", f"{rev.sha}:{path.as_posix()}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def _json_at(rev: Rev, path: Path) -> dict | None:
    """A git-tracked JSON report as the revision has it (the workspace's file for no revision)."""
    text = _text_at(rev, path)
    return json.loads(text) if text is not None else None


def _training_summary(rev: Rev) -> dict | None:
    return _json_at(rev, TRAINING_SUMMARY)


# What decides the numbers (models/dtype.py). The weights count for the pretrained model's modes and for
# training (the base they start from); the ft mode's weights are the training's result, which a change may
# legitimately move. Thread counts are left out: the pinned float32 kernels give the same bits for any.
NUMERICS_FIELDS = ("dtype", "torch", "device", "cpu_kernels")


def recorded_numerics(rev: Rev) -> dict[str, dict]:
    """Per mode (and `train`) the numerics a revision's run recorded; a run made before they were recorded
    shows only its scoring dtype, or nothing."""
    runs = {}
    for path in (METRICS_FILE, FT_METRICS_FILE):
        for mode, row in ((_json_at(rev, path) or {}).get("efficiency") or {}).items():
            runs[mode] = row.get("numerics") or {"dtype": row.get("scoring_dtype", "not recorded")}
    if numerics := (_training_summary(rev) or {}).get("numerics"):
        runs["train"] = numerics
    return runs


def numerics_changes(base: Rev, target: Rev) -> dict[str, list[str]]:
    """Per run whose numerics differ between the sides: 'field: old → new' for each differing field."""
    old, new = recorded_numerics(base), recorded_numerics(target)
    changes = {}
    for run in sorted(old.keys() & new.keys()):
        fields = NUMERICS_FIELDS + (("weights_sha256",) if run != "ft" else ())
        differ = [
            f"{field}: {_short(old[run].get(field))} → {_short(new[run].get(field))}"
            for field in fields
            if old[run].get(field) != new[run].get(field)
        ]
        if differ:
            changes[run] = differ
    return changes


def _short(value) -> str:
    text = "not recorded" if value is None else str(value)
    return text[:12] if len(text) == 64 else text  # a sha256


def numerics_lines(changes: dict[str, list[str]]) -> list[str]:
    if not changes:
        return [
            "Same numerics on both sides (dtype, torch, CPU kernels, model weights): a change below is the "
            "change's own."
        ]
    return [
        "**The two sides were computed with different numerics**, so their differences are not the change's "
        "alone; task rows of these modes are marked ⚠:",
        "",
        *(f"- {run}: " + "; ".join(differ) for run, differ in changes.items()),
    ]


def wandb_lines(base: Rev, target: Rev) -> list[str]:
    lines = []
    for rev in (base, target):
        run = (_training_summary(rev) or {}).get("wandb")
        if run:
            where = f"[{run['id']}]({run['url']})" if run.get("url") else f"offline run `{run['id']}`"
            lines.append(f"- {rev.name}: W&B {where} (project `{run['project']}`)")
    return lines


def _render_vega(entry: dict, path: Path, names: dict[str, str]) -> None:
    """A DVC vega plot (train curves: x/y fields; confusion: actual/predicted) drawn per revision, each titled
    by `names` (DVC's revision -> the name the user gave)."""
    plt = pyplot()
    content = entry["content"]
    values = content["data"]["values"]
    revs = entry["revisions"]
    title = {rev: names.get(rev, rev[:12]) for rev in revs}
    encoding = content.get("encoding", {})
    if values and {"actual", "predicted"} <= set(values[0]):
        labels = sorted({str(v["actual"]) for v in values} | {str(v["predicted"]) for v in values})
        figure, axes = plt.subplots(1, len(revs), figsize=(3.2 * len(revs), 3), dpi=90, squeeze=False)
        for axis, rev in zip(axes[0], revs, strict=True):
            counts = [[0] * len(labels) for _ in labels]
            for v in (v for v in values if v.get("rev") == rev):
                counts[labels.index(str(v["actual"]))][labels.index(str(v["predicted"]))] += 1
            axis.imshow(counts, cmap="Blues")
            axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
            axis.set_yticks(range(len(labels)), labels, fontsize=7)
            axis.set_title(title[rev], fontsize=8)
            axis.set_xlabel("predicted", fontsize=7)
            axis.set_ylabel("actual", fontsize=7)
    else:
        x = encoding.get("x", {}).get("field", "step")
        y = encoding.get("y", {}).get("field")
        figure, axis = plt.subplots(figsize=(5, 3), dpi=90)
        for rev in revs:
            points = [v for v in values if v.get("rev") == rev]
            y_field = y or next(k for k in points[0] if k not in (x, "rev", "timestamp", "step"))
            axis.plot([float(p[x]) for p in points], [float(p[y_field]) for p in points], label=title[rev])
            axis.set_ylabel(y_field)
        axis.set_xlabel(x)
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_png(figure, path)


def _vega_changed(entry: dict) -> bool:
    by_rev: dict[str, list] = {}
    for value in entry["content"]["data"]["values"]:
        row = {k: v for k, v in value.items() if k != "rev"}
        by_rev.setdefault(value.get("rev"), []).append(row)
    return len(by_rev) < 2 or len({json.dumps(rows, sort_keys=True) for rows in by_rev.values()}) > 1


def plot_images(base: Rev, target: Rev, images_dir: Path) -> list[tuple[str, list[str]]]:
    """(plot name, [image files]) for every plot whose data differs between the revisions."""
    raw = images_dir / "dvc"
    out = _run(["dvc", "plots", "diff", *_dvc_revs(base, target), "--json", "-o", str(raw)])
    names = {rev.sha or "workspace": rev.name for rev in (base, target)}
    plots = []
    for number, (name, entries) in enumerate(sorted(json.loads(out).get("data", {}).items())):
        files = []
        if not entries:  # a plot neither revision has data for (an eval mode neither ran)
            continue
        if entries[0]["type"] == "image":
            contents = {Path(e["url"]).read_bytes() for e in entries if Path(e["url"]).exists()}
            if len(contents) < 2 and len(entries) > 1:
                continue
            for entry in entries:
                dest = images_dir / f"{number:03d}_{entry['revisions'][0][:12]}.png"
                shutil.copy(entry["url"], dest)
                files.append(dest.name)
        else:
            entry = entries[0]
            if not _vega_changed(entry):
                continue
            dest = images_dir / f"{number:03d}.png"
            _render_vega(entry, dest, names)
            files.append(dest.name)
        plots.append((name, files))
    shutil.rmtree(raw, ignore_errors=True)
    return plots


def compare(
    base_rev: str | Rev | None, target_rev: str | Rev | None, out_dir: Path = COMPARE_DIR, echo=print
) -> Path:
    """base/target: a git revision or experiment name, or a Rev already resolved (a study's experiment, named
    by the study); no target is the workspace."""
    base, target = _as_rev(base_rev or "main"), _as_rev(target_rev)
    revs = _dvc_revs(base, target)
    metrics = json.loads(_run(["dvc", "metrics", "diff", *revs, "--all", "--json"]) or "{}")
    params = json.loads(_run(["dvc", "params", "diff", *revs, "--json"]) or "{}")
    eval_diff = {k: v for path in EVAL_METRICS for k, v in metrics.get(path, {}).items()}
    numerics = numerics_changes(base, target)
    marked = frozenset(numerics) | ({"ft"} if "train" in numerics else set())  # ft runs what train made
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        plots = plot_images(base, target, tmp / "images")
        lines = [
            f"## healthslm: {target.name} vs {base.name}",
            "",
            f"Base `{base.name}` ({(base.sha or 'workspace')[:10]}), target `{target.name}` "
            f"({(target.sha or 'workspace')[:10]}). ▲/▼: better/worse for that metric (↑ higher is better, "
            "↓ lower is better; ≠: changed, a value with no better direction); baselines are the target's, "
            "on the same examples.",
            "",
            "### Numerics",
            "",
            *numerics_lines(numerics),
            "",
            "### What changed beyond noise",
            "",
            *(
                changes_table(eval_diff, base, target, marked)
                or ["Nothing: no headline metric, invalid rate or verdict moved beyond its 95 % interval."]
            ),
            "",
            "<details><summary>Every task row: model vs baselines</summary>",
            "",
            *task_table(eval_diff),
            "",
            "</details>",
            "",
            "### Other metrics that changed",
            "",
        ]
        others = [
            line
            for path, diff in sorted(metrics.items())
            if path not in EVAL_METRICS
            for line in other_metrics_table(path, diff, only_changed=True)
        ]
        lines += _merge_tables(others) or ["None."]
        lines += ["", "### Parameters", "", *params_table(params), ""]
        if runs := wandb_lines(base, target):
            lines += ["### W&B runs", "", *runs, ""]
        lines += ["### Plots that changed", ""] + ([] if plots else ["None."])
        # The Markdown (a PR comment) links the images; the HTML page embeds them.
        linked = [f"- {name}: " + ", ".join(f"[{f}](images/{f})" for f in files) for name, files in plots]
        shown = [
            f"**{name}**\n\n" + " ".join(f"![{name}](images/{f})" for f in files) + "\n"
            for name, files in plots
        ]
        markdown = "\n".join(lines + linked) + "\n"
        write_text(tmp / "comparison.md", markdown)
        page = markdown_to_html("\n".join(lines + shown) + "\n", "healthslm comparison", tmp)
        write_text(tmp / "comparison.html", page)
    echo(f"wrote {out_dir}/comparison.md and comparison.html ({len(plots)} changed plots)")
    return out_dir / "comparison.md"


def _merge_tables(lines: list[str]) -> list[str]:
    """Per-file tables share one header."""
    header = lines[:2]
    body = [line for line in lines if not line.startswith(("| file |", "|---|"))]
    return header + body if body else []
