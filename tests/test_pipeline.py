"""The real pipeline in a temp git + DVC repo: fetch over HTTP, dvc repro, no-op repro, partial re-run,
metrics, and `dvc exp run -S model=...` switching to a second local model or failing clearly."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["HF_ENDPOINT"] = "https://hub.invalid"  # the Hub must not be needed (and never resolves here)
    env.pop("HEALTHSLM_DATA_MIRROR", None)
    return env


def run(cmd: list[str], cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if ok and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _set_params(project: Path, **changes) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in changes.items():
        block, key = dotted.split("__")
        params[block][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _ran(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


@pytest.fixture
def repo(project: Path, tmp_path: Path, mirror_url: str) -> tuple[Path, dict]:
    env = _env(tmp_path)
    _set_params(
        project, eval__limit=3, eval__bootstrap_samples=200, data__datasets=["pmdata", "pubmedqa", "globem"]
    )
    run(["git", "init", "-q"], project, env)
    run(["git", "config", "user.email", "ci@example.org"], project, env)
    run(["git", "config", "user.name", "ci"], project, env)
    run(["dvc", "init", "-q"], project, env)
    run(["dvc", "config", "core.site_cache_dir", str(tmp_path / "dvc-site")], project, env)
    run(
        ["healthslm", "fetch", "--dataset", "pmdata", "--dataset", "pubmedqa", "--mirror", mirror_url],
        project,
        env,
    )
    run(["dvc", "add", "-q", "data"], project, env)
    return project, env


def test_repro_then_noop_then_partial_rerun_then_experiments(repo, tiny_model_dir):
    project, env = repo
    first = run(["dvc", "repro"], project, env)
    per_dataset = {
        f"{stage}@{name}" for stage in ("prepare", "validate") for name in ("pmdata", "pubmedqa", "globem")
    }
    assert _ran(first) == per_dataset | {"token_economy", "evaluate", "report"}
    assert "globem: skipped, no globem_anxiety.csv" in first.stdout
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["zs"]["pmdata_fatigue"]["n"] == 3 and metrics["fs-3"]["pmdata_fatigue"]["n"] == 3
    assert 0 <= metrics["zs"]["pmdata_fatigue"]["model"]["accuracy"] <= 1
    assert metrics["efficiency"]["zs"]["params_m"] == pytest.approx(134.5, abs=0.5)
    assert metrics["zs"]["pubmedqa_answer"]["n"] == 3
    report = (project / "reports" / "report.md").read_text()
    assert "| zs | pmdata_readiness | mae ↓ | 3 |" in report and "| globem |" in report
    assert (project / "reports" / "data_docs" / "pmdata" / "index.html").exists()
    tokens = json.loads((project / "reports" / "token_economy.json").read_text())
    assert tokens["pmdata_fatigue"]["compact_over_seed"] <= 1 / 3

    second = run(["dvc", "repro"], project, env)
    assert "Running stage" not in second.stdout

    shown = run(["dvc", "metrics", "show", "--json"], project, env)
    assert "pmdata_stress" in shown.stdout

    _set_params(project, eval__limit=4)
    third = run(["dvc", "repro"], project, env)
    assert _ran(third) == {"evaluate", "report"}
    assert json.loads((project / "reports" / "metrics.json").read_text())["zs"]["pmdata_fatigue"]["n"] == 4
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project, env).stdout)["data"]
    assert any("confusion" in name for name in plots) and any(name.endswith(".png") for name in plots)

    # A change to one dataset's raw files re-runs only that dataset's stages (and what reads all records).
    raw = project / "data" / "pubmedqa" / "ori_pqal.json"
    questions = json.loads(raw.read_text())
    first_id = next(iter(questions))
    questions[first_id]["LONG_ANSWER"] += " (corrected)"
    raw.write_text(json.dumps(questions))
    run(["dvc", "add", "-q", "data"], project, env)
    fourth = run(["dvc", "repro"], project, env)
    assert _ran(fourth) == {"prepare@pubmedqa", "validate@pubmedqa", "token_economy", "evaluate", "report"}

    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "baseline"], project, env)
    experiment = ["dvc", "exp", "run", "-S", f"model={tiny_model_dir}", "-S", "eval.mode=fs-5", "-n", "tiny"]
    switched = run(experiment, project, env)
    assert _ran(switched) == {"evaluate", "report"}
    table = json.loads(run(["dvc", "exp", "show", "--json"], project, env).stdout)
    assert "tiny" in json.dumps(table)
    tiny = json.loads((project / "reports" / "metrics.json").read_text())
    assert tiny["efficiency"]["fs-5"]["params_m"] < 5 and set(tiny) == {"fs-5", "efficiency"}

    hub = run(["dvc", "exp", "run", "-S", "model=tinyllama"], project, env, ok=False)
    assert hub.returncode != 0
    output = hub.stdout + hub.stderr
    assert "error: cannot download TinyLlama/TinyLlama-1.1B-Chat-v1.0" in output
    assert "Traceback" not in output
