import json
import subprocess
import sys

import pytest
import yaml

from healthslm.errors import HealthSLMError
from healthslm.params import Params, load_params, parse_params


def test_project_params_file_is_valid():
    from tests.conftest import ROOT

    params = load_params(ROOT / "params.yaml")
    assert params.model == "smollm2-135m"
    assert params.eval.limit and params.eval.limit > 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"eval": {"mode": "zz"}},
            "eval.mode.0: Input should be 'zs', 'fs-1', 'fs-3', 'fs-5', 'fs-10' or 'ft' (got 'zz')",
        ),
        ({"eval": {"limit": "many"}}, "eval.limit: Input should be a valid integer"),
        ({"eval": {"limt": 3}}, "unknown key 'eval.limt'"),
        ({"trian": {}}, "unknown key 'trian'"),
        ({"data": {"datasets": ["pmdata", "nope"]}}, "data.datasets: unknown dataset(s) nope; known: pmdata"),
        ({"data": {"plugins": ["no_such_module"]}}, "data.plugins: cannot import 'no_such_module'"),
        (
            {"augment": {"endpoint": {"api_key_env": "sk-proj-abc123"}}},
            "augment.endpoint.api_key_env: String should match pattern",
        ),  # a key pasted where its variable's name goes is refused, so it never reaches dvc.lock
        ({"judge": {"endpoint": {"base_url": "https://api.openai.com/v1"}}}, "endpoint.model is required"),
        ({"export": {"quantizations": ["q3_x"]}}, "export.quantizations.0: Input should be 'q8_0'"),
        ({"eval": {"prompt_format": "tiny"}}, "eval.prompt_format: Input should be 'seed' or 'compact'"),
        ({"eval": {"limit": 0}}, "eval.limit: Input should be greater than 0"),
        # numerics come from params: the old machine-probed `auto` is refused, saying what to use instead
        ({"train": {"dtype": "auto"}}, "train.dtype: 'auto' (a speed probe on this machine) is gone"),
        ({"eval": {"dtype": "float16"}}, "eval.dtype: Input should be 'float32' or 'bfloat16'"),
        # combinations that cannot run
        (
            {"eval": {"mode": ["zs", "fs-5"]}, "prepare": {"few_shot_k": [1, 3]}},
            "eval.mode fs-5 needs 5 in prepare.few_shot_k (has 1, 3)",
        ),
        ({"judge": {"modes": ["fs-3"]}, "eval": {"mode": ["zs"]}}, "judge.modes fs-3 not in eval.mode (zs)"),
        (
            {"judge": {"modes": ["fs-3"]}, "eval": {"mode": ["fs-3"]}},
            "few-shot modes write no open-ended answers",
        ),
        (
            {"train": {"datasets": ["dr"]}, "data": {"datasets": ["pmdata"]}},
            "train.datasets dr not in data.datasets",
        ),
        ({"augment": {"min_chars": 50, "max_chars": 10}}, "augment: min_chars 50 is above max_chars 10"),
        (
            {"augment": {"endpoint": {"base_url": "https://api.example.com/v1", "model": "m"}}},
            "set endpoint.allow_remote: true",
        ),
        ({"judge": {"endpoint": {"base_url": "file:///etc", "model": "m"}}}, "must be an http(s) URL"),
        (
            {
                "augment": {
                    "endpoint": {
                        "base_url": "https://u:p@api.example.com/v1",
                        "model": "m",
                        "allow_remote": True,
                    }
                }
            },
            "base_url carries credentials",
        ),  # it would land in dvc.lock
        (
            {"judge": {"endpoint": {"base_url": "http://127.0.0.1:1/v1?api-key=abc", "model": "m"}}},
            "carries credentials",
        ),
        ({"validate": {"physical_ranges": {"steps": [5, 1]}}}, "steps: [5, 1] is not a range"),
        ({"validate": {"physical_ranges": {"stepz": [0, 1]}}}, "unknown quantity stepz; known: steps"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(raw, expected):
    with pytest.raises(HealthSLMError) as info:
        parse_params(raw, "params.yaml")
    assert str(info.value).startswith("params.yaml: ")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_file_means_defaults():
    assert parse_params(None) == Params()


def test_cli_reports_bad_params_in_one_line_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"eval": {"strategy": "guess"}}))
    result = subprocess.run(
        [sys.executable, "-m", "healthslm", "check-params", "--params", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "eval.strategy" in lines[0] and "'score'" in lines[0] and "'guess'" in lines[0]


def test_cli_reports_invalid_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("eval: [unclosed\n")
    result = subprocess.run(
        [sys.executable, "-m", "healthslm", "check-params", "--params", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "not valid YAML" in result.stderr and "Traceback" not in result.stderr


def test_every_reading_maps_to_a_quantity_with_a_physical_range():
    from healthslm.data.readings import QUANTITY
    from healthslm.params import PHYSICAL_RANGES

    assert set(QUANTITY.values()) <= set(PHYSICAL_RANGES)


def test_the_judge_follows_eval_mode_unless_told():
    assert parse_params({"eval": {"mode": ["ft"]}}, datasets=False).judged_modes == []  # nothing to judge
    assert parse_params({}, datasets=False).judged_modes == ["zs"]
    assert parse_params({"judge": {"modes": ["ft", "zs"]}}, datasets=False).judged_modes == ["ft", "zs"]


def test_committed_studies_are_valid_and_name_their_budget():
    from healthslm.study import STUDIES_DIR, load_study
    from tests.conftest import ROOT

    names = sorted(p.stem for p in (ROOT / STUDIES_DIR).glob("*.yaml"))
    assert names == ["mental-augmented", "pmdata-full", "pmdata-grouped", "presets"]
    studies = {name: load_study(name, ROOT) for name in names}
    assert (
        studies["pmdata-full"].params["train.lora.r"] == 8
        and studies["pmdata-full"].params["eval.limit"] is None
    )
    assert {v["train.targets"] for v in studies["mental-augmented"].variants.values()} == {
        "label",
        "augmented",
    }
    assert {v["data.split"] for v in studies["pmdata-grouped"].variants.values()} == {"seed", "grouped"}
    cpu_studies = [s for name, s in studies.items() if name != "presets"]  # presets: for one GPU
    assert all(s.estimate.cpu_2_cores_h <= 2.5 and s.subset for s in cpu_studies)
    from healthslm.models.registry import preset_names

    assert sorted(v["model"] for v in studies["presets"].variants.values()) == preset_names()


@pytest.mark.parametrize(
    ("params", "variants", "expected"),
    [
        ({"eval.limt": 3}, {}, "studies/bad.yaml: eval.limt: no such key in params.yaml"),
        ({"evl.limit": 3}, {}, "studies/bad.yaml: evl.limit: no block evl in params.yaml"),
        (
            {"eval.limit": 3},
            {"a": {"train.targets": "label"}, "b": {"train.targets": "explained"}},
            "studies/bad.yaml (variant b, on params.yaml): train.targets: Input should be 'label', "
            "'augmented' or 'both' (got 'explained')",
        ),
        (
            {},
            {"a": {"train.targets": "label"}, "b": {"eval.limit": 3}},
            "studies/bad.yaml: variants: each variant must set the same keys",
        ),
        (
            {"eval.limit": 3},
            {"a": "label"},
            "studies/bad.yaml: variants.a: Input should be a valid dictionary",
        ),
    ],
)
def test_a_bad_study_fails_in_one_line_naming_the_key(tmp_path, params, variants, expected):
    from healthslm.study import load_study
    from tests.conftest import ROOT

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "studies").mkdir()
    study = {
        "title": "t",
        "question": "q",
        "params": params,
        "estimate": {"cpu_2_cores_h": 1, "one_gpu_h": 1, "basis": "b"},
    }
    (tmp_path / "studies" / "bad.yaml").write_text(
        yaml.safe_dump(study | ({"variants": variants} if variants else {}))
    )
    with pytest.raises(HealthSLMError) as raised:
        load_study("bad", tmp_path)
    assert str(raised.value).replace(str(tmp_path) + "/", "") == expected


def test_a_study_whose_results_hold_is_up_to_date_and_not_replayed(tmp_path, monkeypatch):
    """Committing a study's results must not make the next `study run` replay it (and overwrite its times)."""
    from healthslm.study import Estimate, Study, _up_to_date

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    git("add", "-A")
    git("commit", "-qm", "base")
    commit = git("rev-parse", "HEAD").strip()
    estimate = Estimate(cpu_2_cores_h=1, one_gpu_h=1, basis="b")
    study = Study(title="t", question="q", params={"eval.limit": 3}, estimate=estimate)
    monkeypatch.chdir(tmp_path)
    assert _up_to_date("s", study) is None  # never run
    results = tmp_path / "reports" / "studies" / "s"
    results.mkdir(parents=True)
    (results / "run.json").write_text(json.dumps({"commit": commit, "overrides": {"run": {"eval.limit": 3}}}))
    assert _up_to_date("s", study) == commit  # collected, not committed yet
    git("add", "-A")
    git("commit", "-qm", "results")
    assert _up_to_date("s", study) == commit  # committed: only the results differ from the study's commit
    assert _up_to_date("s", study.model_copy(update={"params": {"eval.limit": 4}})) is None  # other overrides
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    assert _up_to_date("s", study) is None  # a tracked change, committed or not, means run again
    git("commit", "-qam", "seed")
    assert _up_to_date("s", study) is None


def test_study_list_shows_measured_time_where_a_study_has_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from healthslm.cli import cli
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    listed = CliRunner().invoke(cli, ["study", "list"])
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[0]: line for line in listed.output.splitlines() if not line.startswith(" ")}
    run = json.loads((ROOT / "reports" / "studies" / "pmdata-full" / "run.json").read_text())
    hours = sum(part["seconds"] for part in run["parts"]) / 3600
    assert (
        f"pmdata-full        {hours:.1f} h of wall time in {len(run['parts'])} part(s) on AMD EPYC"
        in (lines["pmdata-full"])
    )
    assert "(estimated 2.2 h on 2 CPU cores), ~0.2 h on one GPU (estimated)" in lines["pmdata-full"]
    # A study not run yet says so, with its estimate.
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "new.yaml").write_text((ROOT / "studies" / "pmdata-full.yaml").read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    listed = CliRunner().invoke(cli, ["study", "list"])
    assert listed.output.startswith("new                not run; estimated 2.2 h on 2 CPU cores, ~0.2 h"), (
        listed.output
    )
