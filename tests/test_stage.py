"""The stage runner's params view (a stage reads only what dvc.yaml declares) and per-work peak memory."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from healthslm.errors import HealthSLMError
from healthslm.params import Params
from healthslm.resources import CPUINFO, PeakMemory, allowed_cpus, physical_cores
from healthslm.stage import declared_params, restrict

ROOT = Path(__file__).resolve().parents[1]


def test_a_stage_sees_its_declared_params_and_fails_naming_any_other():
    params = restrict(Params(), ["base.seed", "augment.min_chars", "validate"], "demo")
    assert params.base.seed == 42 and params.augment.min_chars == 40
    assert params.validate_.max_leakage == 0.2  # declared by its YAML name (the field is validate_)
    for read in (
        lambda: params.model.upper(),
        lambda: "ft" in params.eval.mode,
        lambda: params.augment.max_chars + 1,
        lambda: bool(params.train.merge),
        lambda: f"{params.judge.max_tokens}",
    ):
        with pytest.raises(
            HealthSLMError,
            match=r"stage demo reads params.yaml's (model|eval|augment\.max_chars|train|judge)",
        ):
            read()


def test_every_stage_of_dvc_yaml_declares_params_the_schema_knows():
    fields = {info.alias or name for name, info in Params.model_fields.items()}
    for stage in ("prepare", "train", "evaluate", "evaluate_finetuned", "judge", "report", "quantize"):
        for name in declared_params(stage, ROOT / "dvc.yaml"):
            assert name.split(".")[0] in fields, (stage, name)


def test_a_stage_reading_an_undeclared_param_stops_in_one_line(tmp_path):
    """judge without its own block in its declaration: one line, exit 1 (this view once caught judge
    reading eval.mode undeclared)."""
    text = (
        (ROOT / "dvc.yaml")
        .read_text()
        .replace("      - eval.bootstrap_samples\n      - judge\n", "      - eval.bootstrap_samples\n", 1)
    )
    (tmp_path / "dvc.yaml").write_text(text)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "judge.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: stage judge reads params.yaml's judge, which dvc.yaml does not declare for it "
        "(add `- judge` to its params)"
    ]


def test_peak_memory_is_the_work_s_own():
    with PeakMemory() as big:
        block = bytearray(300 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
    with PeakMemory() as small:
        bytearray(10 * 2**20)
    assert big.scope == small.scope == "work"
    assert big.mb - small.mb > 250  # the second piece of work does not inherit the first one's peak


# Every subcommand (and a stage entry file) run where its inputs are missing: one line naming the input and
# the stage that makes it, no traceback.
MISSING_INPUTS = {
    ("prepare",): "data/pmdata/pmdata_fatigue_train_all.json: missing; run `healthslm fetch` first",
    ("validate",): "data/pmdata/pmdata_fatigue_train_all.json: missing; run `healthslm fetch` first",
    ("augment",): "made by the prepare@dreaddit stage",
    ("judge",): "artifacts/predictions/base/zs: missing; it is made by the evaluate stage",
    (
        "token-economy",
    ): "artifacts/records/pmdata/fatigue.eval.jsonl: missing; it is made by the prepare@pmdata",
    (
        "train",
    ): "artifacts/records/pmdata/fatigue.train.jsonl: missing; it is made by the prepare@pmdata stage",
    ("evaluate",): "artifacts/records/pmdata/fatigue.train.jsonl: missing; it is made by the prepare@pmdata",
    ("report",): "reports/token_economy.json: missing; it is made by the token_economy stage",
    ("readme",): "reports/summary.md: missing; it is made by the report stage",
    ("export",): "eval.finetuned: no model in artifacts/model/ (run the train stage",
    ("quantize", "--type", "q8_0"): "artifacts/gguf/model-f16.gguf: missing; run the export stage first",
    ("ondevice",): "eval.finetuned: no model in artifacts/model/ (run the train stage",
    ("wandb-sync",): "no offline W&B runs under wandb/",
    ("validate", "--augmented"): "missing; it is made by the augment stage",
}


def test_every_subcommand_names_its_missing_input_and_the_stage_that_makes_it(tmp_path):
    for name in ("params.yaml", "dvc.yaml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    runs = {
        command: subprocess.Popen(
            [sys.executable, "-m", "healthslm", *command],
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for command in MISSING_INPUTS
    }
    runs[("stage", "augment")] = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "augment.py")], cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    expected = {**MISSING_INPUTS, ("stage", "augment"): "made by the prepare@dreaddit stage"}
    for command, process in runs.items():
        _, stderr = process.communicate(timeout=600)
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert process.returncode == 1 and "Traceback" not in stderr, (command, stderr[-2000:])
        assert len(errors) == 1 and expected[command] in errors[0], (command, stderr[-2000:])


def test_physical_cores_counts_cores_not_hardware_threads(tmp_path):
    block = "processor\t: {n}\nmodel name\t: X\nphysical id\t: 0\nsiblings\t: 4\ncore id\t\t: {core}\n\n"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(block.format(n=n, core=n % 2) for n in range(4)))  # 2 cores, SMT on
    assert physical_cores(cpuinfo, allowed={0, 1, 2, 3}) == 2
    assert physical_cores(cpuinfo, allowed={1, 3}) == 1  # both threads of core 1 (taskset, a cpuset)
    assert physical_cores(cpuinfo, allowed={0, 1}) == 2
    assert physical_cores(tmp_path / "absent", allowed={0, 1, 2}) == 3
    assert physical_cores(CPUINFO) == physical_cores(CPUINFO, allowed_cpus())  # this process's own CPUs


def test_a_profiled_stage_writes_where_its_time_went_even_when_it_fails(tmp_path):
    """HEALTHSLM_PROFILE=<folder>: the stage's work under cProfile, listed in <folder>/<stage>.txt; a stage
    that stops on a missing input still leaves its profile and its one-line error."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {**os.environ, "HEALTHSLM_PROFILE": str(tmp_path / "profiles")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "token_economy.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    profile = (tmp_path / "profiles" / "token_economy.txt").read_text()
    assert profile.startswith("stage token_economy on ") and "Ordered by: cumulative time" in profile
    assert "token_economy.py" in profile  # the stage's own functions are listed
