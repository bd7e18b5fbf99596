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
    # raw files + record sets, and the readings of all of them
    assert len(result) == 8 + 8 + 1 and all(s["success"] for s in result.values())
    assert result["readings"]["tables"] == 16 and result["readings"]["rows"] > 16 * 299 * 40
    assert (
        result["pmdata_fatigue.train"]["duplicate_rows"] == 2
    )  # counted, below validate.max_duplicate_share
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
    assert (
        "pmdata_sleep_quality.eval: field 'label' expect_column_values_to_be_in_set "
        "(bound: one of 1, 2, 3, 4, 5)" in message
    )
    assert "1 row(s), e.g. row 5 (pmdata_sleep_quality-eval-00005) = 9" in message


def test_duplicate_ids_and_nulls_fail(records, tmp_path):
    def mutate(rows):
        rows[1]["id"] = rows[0]["id"]
        rows[2]["input"] = None

    _corrupt(records, records / "pmdata" / "stress.train.jsonl", mutate)
    message = _fails(records, tmp_path)
    assert "pmdata_stress.train: field 'id' expect_column_values_to_be_unique: 2 row(s)" in message
    assert (
        "pmdata_stress.train: field 'input' expect_column_values_to_not_be_null: 1 row(s), e.g. row 2"
        in message
    )


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
        "pmdata raw pmdata_readiness_eval.json: field 'answer' expect_column_values_to_match_regex" in message
    )
    assert "row 2 = 'The predicted readiness level is high.'" in message
    assert (
        "pmdata raw pmdata_readiness_eval.json: field 'question' expect_column_values_to_not_be_null"
        in message
    )


def test_impossible_readings_fail_at_the_raw_file_and_the_records(records, tmp_path):
    from healthslm.prepare import prepare

    data = records.parent / "data"
    raw = data / "pmdata" / "pmdata_fatigue_eval.json"
    rows = json.loads(raw.read_text())
    steps = rows[3]["question"].split("[Steps]: [", 1)[1].split("]", 1)[0]
    rows[3]["question"] = rows[3]["question"].replace(steps, "nan, -40.0, " + steps, 1)
    raw.write_text(json.dumps(rows))
    prepare(Params(), ["pmdata"], data_dir=data, out_dir=records, echo=lambda _: None)  # prepare lets them by
    message = _fails(records, tmp_path)
    lines = [line.strip() for line in message.splitlines()]
    assert (
        "pmdata readings: expect_column_values_to_not_be_null: 2 row(s), e.g. "
        "pmdata raw pmdata_fatigue_eval.json row 3 field 'Steps' = 'nan', "
        "pmdata_fatigue.eval row 3 field 'Steps' = 'nan'"
    ) in lines
    assert (
        "pmdata readings: expect_column_values_to_be_between "
        "(bound: [0, 100000], validate.physical_ranges.steps): 2 row(s), e.g. "
        "pmdata raw pmdata_fatigue_eval.json row 3 field 'Steps' = '-40.0', "
        "pmdata_fatigue.eval row 3 field 'Steps' = '-40.0'"
    ) in lines


def test_a_record_repeated_in_a_split_fails_above_the_share_and_is_counted_below(records, tmp_path):
    path = records / "pmdata" / "stress.eval.jsonl"
    original = path.read_text().splitlines()

    def repeat(times):
        copies = [json.loads(original[10]) | {"id": f"pmdata_stress-eval-copy{i}"} for i in range(times)]
        path.write_text("\n".join(original) + "\n" + "".join(json.dumps(c) + "\n" for c in copies))

    repeat(40)  # 41 of 339 rows (12 %) are one record
    message = _fails(records, tmp_path)
    assert (
        "pmdata_stress.eval: field 'input/output' expect_compound_columns_to_be_unique "
        "(bound: unique (input, output) in at least 95% of rows, validate.max_duplicate_share): "
        "41 row(s), e.g. row 10" in message
    )
    repeat(3)
    summary = validate(Params(), "pmdata", records, tmp_path / "docs", tmp_path / "v", echo=lambda _: None,
                       data_dir=records.parent / "data")  # fmt: skip
    assert summary["pmdata_stress.eval"]["duplicate_rows"] == 4 and summary["pmdata_stress.eval"]["success"]
