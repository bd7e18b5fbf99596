"""The real pipeline in a temp git + DVC repo (a copy of the shared small run, conftest.small_run): fetch over
HTTP, dvc repro (training included), no-op repro, partial re-run, metrics, and experiments: `dvc exp run -S
model=...`, and a study (`healthslm study run`: LoRA and QLoRA of a second local model as two experiments)
compared by `dvc exp show`, `dvc metrics diff` and `healthslm compare`, or failing clearly."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import pipeline_env, run, set_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


NEW_STAGES = {"augment", "validate_augmented", "judge", "export", "quantize@q4_0", "ondevice"}


def _ran(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


def undeclared_reads(project: Path, traces: Path) -> list[str]:
    """Files a stage opened (HEALTHSLM_TRACE_READS) that are neither its deps nor its outs in dvc.yaml."""
    root = Path(__file__).resolve().parents[1]
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    problems = []
    for trace in sorted(traces.glob("*.json")):
        name, _, item = trace.stem.partition("@")
        entry = stages[name].get("do", stages[name])
        allowed = [str(p if isinstance(p, str) else next(iter(p))).replace("${item}", item)
                   for key in ("deps", "outs", "metrics", "plots") for p in entry.get(key, [])]  # fmt: skip
        for opened in map(Path, json.loads(trace.read_text())):
            if opened.parent.name == "__pycache__":  # a compiled module stands for its source
                opened = opened.parent.parent / f"{opened.name.split('.')[0]}.py"
            if opened.is_relative_to(project):
                relative = opened.relative_to(project).as_posix()
            elif opened.is_relative_to(root / "src"):  # the installed package, read from this checkout
                relative = opened.relative_to(root).as_posix()
            else:
                continue  # outside the project: Python, site-packages, the model cache
            # DVC's and git's files (DVCLive reads them), train's resumable checkpoints, W&B's offline runs,
            # the installed package's metadata:
            skipped = (".dvc/", ".git/", "artifacts/checkpoints/", "wandb/", "src/healthslm.egg-info/")
            metafiles = ("dvc.yaml", "dvc.lock", "params.yaml", "data.dvc", ".dvcignore", ".gitignore")
            if relative.startswith(skipped) or relative in metafiles:
                continue
            if not any(relative == a or relative.startswith(a.rstrip("/") + "/") for a in allowed):
                problems.append(f"{trace.stem} read {relative}")
    return sorted(set(problems))


def test_repro_then_noop_then_partial_rerun_then_experiments(small_run, tmp_path, tiny_model_dir, browser):
    project, env = small_run.copy(tmp_path / "project"), pipeline_env(tmp_path)
    first = subprocess.CompletedProcess([], 0, small_run.first_repro)  # the shared run's first `dvc repro`
    per_dataset = {
        f"{stage}@{name}" for stage in ("prepare", "validate") for name in ("pmdata", "pubmedqa", "globem")
    }
    assert (
        _ran(first)
        == per_dataset | {"token_economy", "train", "evaluate", "evaluate_finetuned", "report"} | NEW_STAGES
    )
    assert (
        undeclared_reads(small_run.project, small_run.traces) == []
    )  # every file a stage read is a dep in dvc.yaml
    assert "globem: skipped, no globem_anxiety.csv" in first.stdout
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["zs"]["pmdata_fatigue"]["n"] == 3 and set(metrics) == {"zs", "efficiency"}
    assert 0 <= metrics["zs"]["pmdata_fatigue"]["model"]["accuracy"] <= 1
    assert metrics["efficiency"]["zs"]["params_m"] == pytest.approx(134.5, abs=0.5)
    finetuned = json.loads((project / "reports" / "metrics_ft.json").read_text())
    assert metrics["zs"]["pubmedqa_answer"]["n"] == 3 and finetuned["ft"]["pmdata_fatigue"]["n"] == 3
    assert "ft" not in metrics and metrics["efficiency"]["zs"]["peak_rss_scope"] == "work"
    assert json.loads((project / "reports" / "train" / "metrics.json").read_text())["final/steps"] == 2
    report = (project / "reports" / "report.md").read_text()
    assert "| zs | pmdata_readiness | mae ↓ | 3 |" in report and "| globem |" in report
    assert (project / "reports" / "data_docs" / "pmdata" / "index.html").exists()
    dom, console = browser(project / "reports" / "report.html")
    assert console == [], console
    fatigue = metrics["zs"]["pmdata_fatigue"]["model"]
    assert f"{fatigue['accuracy']:.3f} [{fatigue['accuracy_ci_low']:.3f}, " in dom
    assert "confusion matrices" not in dom or "data:image/png;base64," in dom
    assert dom.count("data:image/png;base64,") >= 3  # score bars, confusion matrices, training curves
    tokens = json.loads((project / "reports" / "token_economy.json").read_text())
    assert tokens["pmdata_fatigue"]["compact_over_seed"] <= 1 / 3
    augmented = json.loads((project / "reports" / "augment.json").read_text())
    assert augmented["generated"] == 2 and augmented["http_requests"] == 2  # through the local server
    assert json.loads((project / "reports" / "augment_validation.json").read_text())["success"]
    ondevice = json.loads((project / "reports" / "ondevice.json").read_text())
    assert ondevice["q4_0"]["size_mb"] < ondevice["hf"]["size_mb"] / 4 and ondevice["bandwidth_gbs"] > 0
    assert (
        ondevice["q4_0"]["fraction_of_bound"] > 0
        and "agreement_with_hf" in ondevice["q4_0"]["tasks"]["pmdata_fatigue"]
        and ondevice["q4_0"]["decode_ratio_to_raw"] > 0  # beside raw llama.cpp on the same tokens
    )
    exported = json.loads((project / "reports" / "export" / "q4_0.json").read_text())
    assert exported["bits_per_weight"] < 6 and (project / "artifacts" / "gguf" / "model-q4_0.gguf").exists()
    assert "## On-device (GGUF, llama.cpp)" in report and "## Augmented responses" in report

    second = run(["dvc", "repro"], project, env)
    assert "Running stage" not in second.stdout

    shown = run(["dvc", "metrics", "show", "--json"], project, env)
    assert "pmdata_stress" in shown.stdout

    set_params(project, judge__max_tokens=150)
    third = run(["dvc", "repro"], project, env)
    # A param re-runs only the stages that read it (and after them only those whose inputs then changed).
    assert {"judge"} <= _ran(third) <= {"judge", "report"}
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project, env).stdout)["data"]
    assert any("confusion" in name for name in plots) and any(name.endswith(".png") for name in plots)

    # A change to one dataset's raw files re-runs only that dataset's stages (and what reads all records);
    # eval.limit changes too, so evaluate runs on 4 examples.
    raw = project / "data" / "pubmedqa" / "ori_pqal.json"
    questions = json.loads(raw.read_text())
    first_id = next(iter(questions))
    questions[first_id]["LONG_ANSWER"] += " (corrected)"
    raw.write_text(json.dumps(questions))
    run(["dvc", "add", "-q", "data"], project, env)
    set_params(project, eval__limit=4)
    fourth = run(["dvc", "repro"], project, env)
    assert _ran(fourth) - {"validate_augmented"} == {
        "prepare@pubmedqa",
        "validate@pubmedqa",
        "token_economy",
        "augment",
        "train",
        "evaluate",
        "evaluate_finetuned",
        "judge",
        "report",
        "ondevice",  # new ft predictions to compare with
    }
    # The corrected record is not among the 2 trained on: same run key, the finished run is reused, the model
    # is unchanged, so export and quantize do not run again.
    assert "was trained already" in fourth.stdout
    assert json.loads((project / "reports" / "metrics.json").read_text())["zs"]["pmdata_fatigue"]["n"] == 4
    rerun = json.loads((project / "reports" / "augment.json").read_text())
    assert rerun["http_requests"] == 0 and rerun["cache_hits"] == 2  # same requests: all from the cache

    # A study: two variants of a tiny model's training as DVC experiments, up to the evaluate stages.
    study = {
        "title": "LoRA or QLoRA on a tiny model",
        "question": "Which one learns more?",
        "params": {"model": str(tiny_model_dir), "eval.mode": ["fs-5", "ft"]},
        "variants": {
            "lora": {"train.method": "lora", "train.lora.r": 4},
            "qlora": {"train.method": "qlora", "train.lora.r": 8},
        },
        "estimate": {"cpu_2_cores_h": 0.05, "one_gpu_h": 0.01, "basis": "a guess"},
    }
    (project / "studies").mkdir()
    (project / "studies" / "tiny.yaml").write_text(yaml.safe_dump(study))
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "baseline"], project, env)
    committed = {name: (project / name).read_text() for name in ("params.yaml", "dvc.lock")}
    # Zero-shot benchmarking of another model never trains.
    zero_shot = ["dvc", "exp", "run", "evaluate", "-S", f"model={tiny_model_dir}", "-S", "eval.mode=[zs]"]
    assert _ran(run([*zero_shot, "-n", "tiny-zs"], project, env)) == {"evaluate"}
    run(["git", "checkout", "--", "."], project, env)
    run(["dvc", "checkout", "-q", "--force"], project, env)
    studied = run(["healthslm", "study", "run", "tiny"], project, env)
    assert _ran(studied) == {"train", "evaluate", "evaluate_finetuned"}  # each variant: only what it needs
    assert "git add reports/studies/tiny" in studied.stdout
    # The workspace is back at the commit, with the results beside it.
    assert {name: (project / name).read_text() for name in committed} == committed
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], project, env).stdout == ""
    results = project / "reports" / "studies" / "tiny"
    metrics = json.loads((results / "lora" / "metrics.json").read_text())
    assert metrics["efficiency"]["fs-5"]["params_m"] < 5 and set(metrics) == {"fs-5", "efficiency"}
    assert set(json.loads((results / "qlora" / "metrics_ft.json").read_text())) == {"ft", "efficiency"}
    assert yaml.safe_load((results / "qlora" / "params.yaml").read_text())["train"]["method"] == "qlora"
    assert json.loads((results / "lora" / "training.json").read_text())["recipe"]["lora"]["r"] == 4
    # Each variant's stage times are of the stages it ran: the second reused the first's evaluate.
    ran = {v: set(json.loads((results / v / "stages.json").read_text())) for v in ("lora", "qlora")}
    assert ran == {
        "lora": {"train", "evaluate", "evaluate_finetuned"},
        "qlora": {"train", "evaluate_finetuned"},
    }
    run_record = json.loads((results / "run.json").read_text())
    assert run_record["commit"] == run(["git", "rev-parse", "HEAD"], project, env).stdout.strip()
    assert [part["variant"] for part in run_record["parts"]] == ["lora", "qlora"]
    report = (results / "report.md").read_text()
    assert "## lora" in report and "| pmdata_fatigue | accuracy ↑ | ft |" in report
    assert "Trained (qlora r=8 alpha=" in report and "[comparison.md](compare/comparison.md)" in report
    comparison = (results / "compare" / "comparison.md").read_text()
    assert '| params.yaml | train.method | `"lora"` | `"qlora"` |' in comparison
    assert "final/trainable_params" in comparison
    assert "## healthslm: tiny-qlora vs tiny-lora" in comparison
    again = run(["healthslm", "study", "run", "tiny"], project, env)  # done: nothing runs again
    assert "Running stage" not in again.stdout and "tiny: up to date" in again.stdout
    table = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], project, env).stdout))
    assert "tiny-lora" in table and "tiny-qlora" in table and "final/trainable_params" in table
    diff = json.loads(
        run(["dvc", "metrics", "diff", "tiny-lora", "tiny-qlora", "--json"], project, env).stdout
    )
    trainable = diff["reports/train/metrics.json"]["final/trainable_params"]
    assert trainable["new"] == pytest.approx(2 * trainable["old"])  # r=8 vs r=4: twice the LoRA weights

    # Two commits whose params differ: compare shows both values and which way the change went.
    run(["dvc", "exp", "apply", "tiny-lora"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "tiny model"], project, env)
    set_params(project, eval__strategy="generate", eval__max_new_tokens=4)
    run(["dvc", "repro", "evaluate"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "generate"], project, env)
    run(["healthslm", "compare", "HEAD~1", "HEAD"], project, env)
    comparison = (project / "reports" / "compare" / "comparison.md").read_text()
    assert '| params.yaml | eval.strategy | `"score"` | `"generate"` |' in comparison
    assert "Same numerics on both sides" in comparison  # the change is the strategy's, not the numerics'
    # score always answers (invalid 0); a random tiny model's free generation rarely parses: worse, and the
    # page leads with it (what moved beyond noise), before the folded table of every row.
    changed, everything = comparison.split("### What changed beyond noise", 1)[1].split("<details>", 1)

    def row_of(section: str) -> list[str]:
        row = next(
            line for line in section.splitlines() if line.startswith("| fs-5 | pmdata_fatigue | invalid")
        )
        return [cell.strip() for cell in row.strip("|").split("|")]

    cells = row_of(changed)
    assert cells[2] == "invalid_rate ↓" and cells[3] == "0.000" and float(cells[4]) > 0, cells
    assert row_of(everything)[6] == "▼ worse"
    dom, console = browser(project / "reports" / "compare" / "comparison.html")
    assert console == [] and "eval.strategy" in dom

    hub = run(["dvc", "exp", "run", "-S", "model=tinyllama"], project, env, ok=False)
    assert hub.returncode != 0
    output = hub.stdout + hub.stderr
    assert "error: cannot download TinyLlama/TinyLlama-1.1B-Chat-v1.0" in output
    assert "Traceback" not in output
