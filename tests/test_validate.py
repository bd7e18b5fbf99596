"""The Great Expectations gate on real records, and on records we corrupt."""

import json
import shutil

import pytest

from healthslm.errors import HealthSLMError
from healthslm.params import Params
from healthslm.validate import validate


def test_real_records_pass_and_data_docs_are_written(pmdata_records, tmp_path):
    docs, summaries = tmp_path / "docs", tmp_path / "validation"
    data = pmdata_records.parent / "data"
    result = validate(Params(), "pmdata", pmdata_records, docs, summaries, echo=lambda _: None, data_dir=data)
    assert {"raw.pmdata_fatigue_eval.json", "raw.pmdata_stress_train_all.json"} <= set(result)
    assert len(result) == 8 + 8 and all(s["success"] for s in result.values())  # raw files + record sets
    summary = json.loads((summaries / "pmdata.json").read_text())
    assert summary["success"] is True
    # PMData's overlapping 14-day windows: 41 of 299 eval inputs are near-copies of train inputs
    assert summary["leakage"]["pmdata_fatigue"]["near"] == 41
    index = (docs / "pmdata" / "index.html").read_text()
    assert "pmdata_fatigue.eval" in index
    pages = json.loads((docs / "pmdata" / "pages.json").read_text())
    assert set(pages) == set(result)  # one offline-readable page per record set, linked from the report
    assert all((docs / "pmdata" / page).exists() for page in pages.values())


def _corrupt(records, path, mutate):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    mutate(lines)
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))


@pytest.fixture
def records(pmdata_records, tmp_path):
    copy = tmp_path / "copy" / "records"
    shutil.copytree(pmdata_records, copy)
    shutil.copytree(pmdata_records.parent / "data", tmp_path / "copy" / "data")
    return copy


def _fails(records, tmp_path, data=None) -> str:
    data = data or records.parent / "data"
    with pytest.raises(HealthSLMError) as info:
        validate(
            Params(), "pmdata", records, tmp_path / "docs", tmp_path / "v", echo=lambda _: None, data_dir=data
        )
    return str(info.value)


def test_label_outside_label_space_fails_naming_set_and_value(records, tmp_path):
    _corrupt(records, records / "pmdata" / "sleep_quality.eval.jsonl", lambda rows: rows[5].update(label=9))
    message = _fails(records, tmp_path)
    assert "pmdata_sleep_quality.eval: expect_column_values_to_be_in_set column 'label'" in message
    assert "[9]" in message


def test_duplicate_ids_and_nulls_fail(records, tmp_path):
    def mutate(rows):
        rows[1]["id"] = rows[0]["id"]
        rows[2]["input"] = None

    _corrupt(records, records / "pmdata" / "stress.train.jsonl", mutate)
    message = _fails(records, tmp_path)
    assert "pmdata_stress.train: expect_column_values_to_be_unique column 'id'" in message
    assert "pmdata_stress.train: expect_column_values_to_not_be_null column 'input'" in message


def test_missing_column_and_tiny_split_fail(records, tmp_path):
    def mutate(rows):
        del rows[:]
        rows.extend({"id": f"x{i}", "label": 1} for i in range(3))

    _corrupt(records, records / "pmdata" / "fatigue.eval.jsonl", mutate)
    message = _fails(records, tmp_path)
    assert "pmdata_fatigue.eval: expect_table_columns_to_match_set" in message
    assert "pmdata_fatigue.eval: expect_table_row_count_to_be_between" in message


def test_leakage_above_the_threshold_fails_the_gate(records, tmp_path):
    train = [
        json.loads(line) for line in (records / "pmdata" / "stress.train.jsonl").read_text().splitlines()
    ]

    def copy_train_inputs(rows):
        for row, source in zip(rows[:100], train, strict=False):
            row["input"] = source["input"]

    _corrupt(records, records / "pmdata" / "stress.eval.jsonl", copy_train_inputs)
    message = _fails(records, tmp_path)
    assert "pmdata_stress: 40.8% of eval inputs also in train (exact or near)" in message
    assert "validate.max_leakage=0.2" in message and "'kind': 'exact'" in message
    leakage = json.loads((tmp_path / "v" / "pmdata.json").read_text())["leakage"]["pmdata_stress"]
    assert leakage["exact"] == 100


def test_raw_file_violations_fail_the_gate(records, tmp_path):
    raw = records.parent / "data" / "pmdata" / "pmdata_readiness_eval.json"
    rows = json.loads(raw.read_text())
    rows[2]["answer"] = "The predicted readiness level is high."
    rows[5]["question"] = None
    raw.write_text(json.dumps(rows))
    message = _fails(records, tmp_path)
    assert (
        "pmdata raw pmdata_readiness_eval.json: expect_column_values_to_match_regex column 'answer'"
        in message
    )
    assert "high" in message
    assert (
        "pmdata raw pmdata_readiness_eval.json: expect_column_values_to_not_be_null column 'question'"
        in message
    )
