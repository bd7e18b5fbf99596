"""`healthslm study run NAME`: a committed, named set of params overrides (studies/NAME.yaml) run as DVC
experiments, one per variant, its results committed under reports/studies/NAME/.

Each variant is `dvc exp run --name NAME-VARIANT -S key=value ... evaluate evaluate_finetuned` in this
workspace: the stages the results need (not export, ondevice or report). A study starts from a clean commit
and records it. Interrupted, it resumes when run again: finished stages are in dvc.lock and DVC's run cache,
training continues from its last checkpoint, and a variant whose experiment exists is not run again; each
part's wall time is kept in .dvc/tmp/studies/NAME.json. When every variant is done the workspace goes back
to that commit, and reports/studies/NAME/ gets, per variant, the evaluate stages' metrics, the training
summary, the params and the time of each stage it ran, then report.md (the model beside the constant and the
classical baseline, paired, on all rows and on the leak-free ones) and, with two variants, `healthslm compare`
of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthslm.compare import Rev, compare, experiments
from healthslm.errors import HealthSLMError
from healthslm.io import atomic_dir, write_json, write_text
from healthslm.params import PARAMS_FILE, parse_params
from healthslm.paths import FT_METRICS_FILE, METRICS_FILE, STAGE_TIMES_DIR, TRAINING_SUMMARY
from healthslm.resources import cpu_name, physical_cores
from healthslm.summary import results_table, text_lines
from healthslm.verdicts import task_verdicts, verdict_summary

STUDIES_DIR = Path("studies")
RESULTS_DIR = Path("reports/studies")
PROGRESS_DIR = Path(".dvc/tmp/studies")  # per study: its commit and each part's wall time (not in git)
STAGES = ("evaluate", "evaluate_finetuned")  # dvc exp run's targets: what a study's results are made of
COLLECTED = {  # in the experiment's commit -> in reports/studies/NAME/VARIANT/
    METRICS_FILE.as_posix(): "metrics.json",
    FT_METRICS_FILE.as_posix(): "metrics_ft.json",
    TRAINING_SUMMARY.as_posix(): "training.json",
    PARAMS_FILE.as_posix(): "params.yaml",
}


class Estimate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_2_cores_h: float = Field(gt=0)  # sized from measured rates before a run; run.json has the real time
    one_gpu_h: float = Field(gt=0)  # estimated: no GPU here
    basis: str  # how the GPU figure was had


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    question: str
    params: dict[str, Any]  # params.yaml overrides, dotted keys, as `dvc exp run -S key=value`
    variants: dict[str, dict[str, Any]] = {"run": {}}  # name -> more overrides; one experiment each
    estimate: Estimate
    subset: str = ""  # how a train subset was sized and drawn, when not every row is trained on


def study_file(name: str, root: Path = Path(".")) -> Path:
    return root / STUDIES_DIR / f"{name}.yaml"


def _override(raw: dict, dotted: str, value: Any, source: str) -> None:
    *blocks, key = dotted.split(".")
    node = raw
    for depth, block in enumerate(blocks):
        if not isinstance(node.get(block), dict):
            raise HealthSLMError(
                f"{source}: {dotted}: no block {'.'.join(blocks[: depth + 1])} in params.yaml"
            )
        node = node[block]
    if key not in node:
        raise HealthSLMError(f"{source}: {dotted}: no such key in params.yaml")
    node[key] = value


def load_study(name: str, root: Path = Path(".")) -> Study:
    """The study, each variant's overrides checked against params.yaml's schema (errors name the key)."""
    path = study_file(name, root)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (root / STUDIES_DIR).glob("*.yaml"))) or "none"
        raise HealthSLMError(f"{path}: not found; studies: {known}")
    try:
        study = Study.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise HealthSLMError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HealthSLMError(f"{path}: {problems}") from None
    keys = {frozenset(v) for v in study.variants.values()}
    if len(keys) > 1:  # a variant runs on the workspace the previous one left: each must set the same keys
        raise HealthSLMError(f"{path}: variants: each variant must set the same keys")
    for variant in study.variants:
        raw = yaml.safe_load((root / PARAMS_FILE).read_text(encoding="utf-8"))
        for dotted, value in overrides(study, variant).items():
            _override(raw, dotted, value, f"{path}")
        parse_params(raw, f"{path} (variant {variant}, on params.yaml)")
    return study


def overrides(study: Study, variant: str) -> dict[str, Any]:
    return study.params | study.variants[variant]


def set_flags(values: dict[str, Any]) -> list[str]:
    """`-S key=value` per override; the value as YAML (JSON is YAML): lists, null and strings survive."""
    return [flag for key, value in values.items() for flag in ("-S", f"{key}={json.dumps(value)}")]


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode:
        raise HealthSLMError(f"`git {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def _dvc(*args: str) -> None:
    """DVC with this interpreter, its output on the terminal (a study runs for hours)."""
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    if subprocess.run([sys.executable, "-m", "dvc", *args], env=env).returncode:
        raise HealthSLMError(f"`dvc {' '.join(args)}` failed (its output is above)")


def experiment(name: str, baseline: str) -> str | None:
    """The commit of the experiment `name` made on `baseline`, if there is one."""
    return next((sha for sha, made_on, found in experiments() if (made_on, found) == (baseline, name)), None)


def _progress(name: str) -> Path:
    return PROGRESS_DIR / f"{name}.json"


def _start(name: str) -> dict:
    """The study's progress: resumed if the workspace holds its unfinished run, else a new one from a clean
    commit (the commit the results are then said to come from)."""
    progress = json.loads(_progress(name).read_text()) if _progress(name).exists() else None
    head = _git("rev-parse", "HEAD").strip()
    dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    if progress and progress["commit"] == head:
        return progress
    if dirty:
        raise HealthSLMError(
            "uncommitted changes to tracked files: commit them first, a study records the commit it ran on"
        )
    return {"study": name, "commit": head, "parts": []}


def _run_variant(study_name: str, variant: str, values: dict, progress: dict, echo) -> str:
    exp = f"{study_name}-{variant}"
    if sha := experiment(exp, progress["commit"]):
        echo(f"{exp}: done already (experiment {sha[:10]})")
        return sha
    echo(f"{exp}: dvc exp run {' '.join(set_flags(values))} {' '.join(STAGES)}")
    # The part is on record before it starts: a killed part shows up (its time unknown), an interrupted one
    # with its time.
    part = {
        "variant": variant,
        "seconds": None,
        "cpu": cpu_name(),
        "cores": physical_cores(),
        "finished": False,
    }
    progress["parts"].append(part)
    write_json(_progress(study_name), progress)
    started = time.time()
    try:
        _dvc("exp", "run", "--name", exp, *set_flags(values), *STAGES)
        part["finished"] = True
    finally:
        part["seconds"] = round(time.time() - started)
        write_json(_progress(study_name), progress)
    sha = experiment(exp, progress["commit"])
    if sha is None:
        raise HealthSLMError(f"dvc exp run finished but no experiment {exp} is on {progress['commit'][:10]}")
    return sha


def _time_files(rev: str) -> dict[str, str]:
    """reports/stages/ in `rev`: file name -> blob id."""
    try:
        listing = _git("ls-tree", f"{rev}:{STAGE_TIMES_DIR.as_posix()}")  # "<mode> blob <id>\t<name>" lines
    except HealthSLMError:  # no stage has run at that commit
        return {}
    return {line.split("\t")[1]: line.split()[2] for line in listing.splitlines()}


def stage_times(sha: str, before_sha: str) -> dict[str, dict]:
    """The time of each stage the experiment ran. `before_sha`: what its workspace held when it started (the
    study's commit, or the previous variant's experiment, whose results `dvc exp run` leaves applied); a time
    file unchanged from there is that run's, the stage was skipped."""
    before = _time_files(before_sha)
    return {
        Path(name).stem: json.loads(_git("show", blob))
        for name, blob in sorted(_time_files(sha).items())
        if before.get(name) != blob
    }


def _collect(sha: str, before_sha: str, dest: Path) -> None:
    for source, name in COLLECTED.items():
        shown = subprocess.run(["git", "show", f"{sha}:{source}"], capture_output=True, text=True)
        if shown.returncode == 0:
            write_text(dest / name, shown.stdout)
    write_json(dest / "stages.json", stage_times(sha, before_sha))


def _up_to_date(name: str, study: Study) -> str | None:
    """The commit of reports/studies/NAME/ if it holds this study's results for the files here: the same
    overrides, and nothing tracked differs from that commit but the results themselves (committed since, or
    not yet). Running again would replay DVC's caches and overwrite the measured times with the replay's."""
    recorded = _read(RESULTS_DIR / name / "run.json")
    if not recorded or _progress(name).exists():
        return None
    if recorded["overrides"] != {v: overrides(study, v) for v in study.variants}:
        return None
    try:
        changed = _git("diff", "--name-only", recorded["commit"], "--").split()
    except HealthSLMError:  # that commit is not in this clone
        return None
    ours = (RESULTS_DIR / name).as_posix() + "/"
    return None if any(not path.startswith(ours) for path in changed) else recorded["commit"]


def run_study(name: str, echo=print) -> Path:
    study = load_study(name)
    if commit := _up_to_date(name, study):
        echo(f"{name}: up to date, {RESULTS_DIR / name}/ holds its results from commit {commit[:10]}")
        return RESULTS_DIR / name
    PROGRESS_DIR.mkdir(parents=True, exist_ok=True)
    progress = _start(name)
    write_json(_progress(name), progress)
    shas = {v: _run_variant(name, v, overrides(study, v), progress, echo) for v in study.variants}
    # Back to the commit the study started from: its params, lock and outputs.
    _git("checkout", progress["commit"], "--", ".")
    _dvc("checkout", "--quiet", "--force")
    out = RESULTS_DIR / name
    with atomic_dir(out) as tmp:
        before = progress["commit"]  # each variant starts from the previous one's applied results
        for variant, sha in shas.items():
            _collect(sha, before, tmp / variant)
            before = sha
        write_json(tmp / "run.json", progress | {"experiments": shas, "overrides": {
            v: overrides(study, v) for v in study.variants}})  # fmt: skip
        if len(shas) == 2:  # named as the study names them: NAME-VARIANT
            base, target = (Rev(f"{name}-{variant}", sha) for variant, sha in shas.items())
            compare(base, target, tmp / "compare", echo=echo)
        write_text(tmp / "report.md", study_report(name, study, tmp))
    _progress(name).unlink()
    echo(f"wrote {out}/: commit it (git add {out})")
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def measured(run: dict, each_part: bool = False) -> str:
    """A study's measured time from its run.json: the parts' wall times summed, and the machines."""
    seconds = sum(part["seconds"] or 0 for part in run["parts"])
    parts = ", ".join(
        f"{p['variant']} {_hours(p['seconds']) if p['seconds'] is not None else 'killed, time unknown'}"
        for p in run["parts"]
    )
    machines = ", ".join(sorted({f"{p['cpu']} ({p['cores']} cores)" for p in run["parts"]}))
    listed = f" ({parts})" if each_part else ""
    return f"{_hours(seconds)} of wall time in {len(run['parts'])} part(s){listed} on {machines}"


def _timing_line(name: str, study: Study, run: dict) -> str:
    return (
        f"Run by `healthslm study run {name}` on commit `{run['commit'][:10]}` (studies/{name}.yaml as "
        f"committed there): {measured(run, each_part=True)}. On one GPU: about {study.estimate.one_gpu_h} h, "
        f"estimated ({study.estimate.basis})."
    )


def _training_line(training: dict) -> list[str]:
    if "steps" not in training:  # nothing was trained (no ft mode)
        return []
    lora = training["recipe"]["lora"]
    # A resumed run's trainer times only its own process: say so rather than pass it off as the whole run's.
    resumed = training.get("resumed_from_step")
    timed = f"steps {resumed}-{training['steps']}, the last part: " if resumed else ""
    return [
        f"Trained ({training['method']} r={lora['r']} alpha={lora['alpha']}, "
        f"targets `{training['targets']}`): {training['examples']} examples, {training['steps']} steps; "
        f"{timed}{training['tokens_per_s']} tokens/s, {_hours(training['runtime_s'])} on {training['cpu']}.",
        "",
    ]


def _variant_lines(variant: str, values: dict, folder: Path) -> list[str]:
    metrics = _read(folder / "metrics.json") | {
        mode: result for mode, result in _read(folder / "metrics_ft.json").items() if mode != "efficiency"
    }
    modes = [mode for mode in metrics if mode != "efficiency"]
    verdicts = task_verdicts(metrics, modes)
    shown = ", ".join(f"`{key}={json.dumps(value)}`" for key, value in values.items())
    return [
        f"## {variant}",
        "",
        f"Overrides: {shown}.",
        "",
        *_training_line(_read(folder / "training.json")),
        *results_table(metrics, verdicts),
        "",
        *verdict_summary(verdicts),
        "",
        *text_lines(metrics, modes),
        "",
    ]


def study_report(name: str, study: Study, results: Path) -> str:
    """reports/studies/NAME/report.md from the collected files, nothing else."""
    run = _read(results / "run.json")
    lines = [f"# Study `{name}`: {study.title}", "", study.question, "", _timing_line(name, study, run), ""]
    if study.subset:
        lines += [f"Train subset: {study.subset}", ""]
    for variant, values in run["overrides"].items():
        lines += _variant_lines(variant, values, results / variant)
    if (results / "compare" / "comparison.md").exists():
        lines += [
            "## The variants compared",
            "",
            "`healthslm compare`: [comparison.md](compare/comparison.md).",
            "",
        ]
    return "\n".join(lines)
