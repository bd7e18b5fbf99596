"""Evaluation end to end on real records with a tiny local model: valid answers, baselines, CIs."""

import json
from collections import Counter

import numpy as np
import pytest

from healthslm.baselines import reading_features
from healthslm.data.registry import all_tasks
from healthslm.io import read_jsonl
from healthslm.metrics import score
from healthslm.params import Params
from healthslm.report import render

TASKS = {k: v for k, v in all_tasks().items() if v.dataset == "pmdata"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, pmdata_records, tiny_model_dir):
    from healthslm.evaluate import evaluate

    out = tmp_path_factory.mktemp("eval")
    params = Params.model_validate(
        {"model": str(tiny_model_dir), "eval": {"limit": 12}, "data": {"datasets": ["pmdata"]}}
    )
    results = evaluate(params, pmdata_records, out / "predictions", out / "metrics.json", echo=lambda _: None)
    return params, results, out


def test_every_answer_is_in_the_label_space(evaluated):
    _, _, out = evaluated
    for key, spec in TASKS.items():
        rows = read_jsonl(out / "predictions" / f"{key}.jsonl")
        assert len(rows) == 12
        assert all(str(row["answer"]) in spec.label_space for row in rows)
        assert all(set(row["scores"]) == set(spec.label_space) for row in rows)
        assert all(len(row["prompt_sha256"]) == 64 for row in rows)


def test_metrics_have_baselines_and_intervals(evaluated, pmdata_records):
    _, results, out = evaluated
    assert json.loads((out / "metrics.json").read_text()) == results
    for key, spec in TASKS.items():
        metric = spec.metric
        for system in ("model", "majority", "classical"):
            entry = results[key][system]
            assert entry[metric + "_ci_low"] <= entry[metric] <= entry[metric + "_ci_high"]
    train = read_jsonl(pmdata_records / "pmdata" / "fatigue.train.jsonl")
    test = read_jsonl(pmdata_records / "pmdata" / "fatigue.eval.jsonl")[:12]
    mode = Counter(r["label"] for r in train).most_common(1)[0][0]
    expected = np.mean([r["label"] == mode for r in test])
    assert results["pmdata_fatigue"]["majority"]["accuracy"] == pytest.approx(expected)
    efficiency = results["efficiency"]
    assert efficiency["examples"] == 48 and efficiency["examples_per_s"] > 0
    assert efficiency["params_m"] < 5 and efficiency["peak_rss_mb"] > 0


def test_report_shows_every_task_with_paper_columns(evaluated):
    params, results, _ = evaluated
    validation = {"pmdata": {"success": True, "suites": {}, "leakage": {}}}
    tokens = {
        "pmdata_fatigue": {
            "examples": 299,
            "seed_tokens": 666.0,
            "compact_tokens": 217.0,
            "compact_over_seed": 0.326,
        }
    }
    text = render(params, results, validation, tokens)
    for key in TASKS:
        assert f"| {key} |" in text
    assert "paper, SLM mean" in text and "| 0.522 |" in text  # the paper's zero-shot SLM mean for fatigue
    assert f"{results['pmdata_stress']['model']['mae']:.3f}" in text


def test_mae_metrics_and_interval():
    spec = TASKS["pmdata_stress"]
    result = score(spec, [1, 2, 3, 4], [1, 2, 3, 0], samples=1000, seed=0)
    assert result["mae"] == 1.0 and result["rmse"] == 2.0 and result["accuracy"] == 0.75
    # per-example errors are [0, 0, 0, 4]: resampled means lie on {0, 1, 2, 3, 4}
    assert result["mae_ci_low"] == 0.0 and 2.0 <= result["mae_ci_high"] <= 3.0


def test_features_read_the_prompt_numbers():
    text = (
        "[Steps]: [100.0, 300.0] steps, [Burned Calorories]: [200.0] calories, [Resting Heart Rate]: "
        "[0.0, 60.0] beats/min, [SleepMinutes]: [400.0] minutes, [Mood]: 4 out of 5;"
    )
    features = reading_features({"dataset": "pmdata", "input": text})
    assert features["steps_x100_mean"] == 2.0 and features["steps_x100_n"] == 2.0
    assert features["rest_hr_mean"] == 60.0 and features["rest_hr_n"] == 1.0  # 0.0 resting HR is missing
    assert features["mood_of_5"] == 4
