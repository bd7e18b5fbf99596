"""Records from the real PMData files, and clear errors (file, row, field) for corrupted inputs."""

import json
import shutil

import pytest

from healthslm.errors import HealthSLMError
from healthslm.io import read_jsonl
from healthslm.params import Params
from healthslm.prepare import prepare


def test_records_follow_the_schema(pmdata_records):
    eval_rows = read_jsonl(pmdata_records / "pmdata" / "fatigue.eval.jsonl")
    train_rows = read_jsonl(pmdata_records / "pmdata" / "readiness.train.jsonl")
    assert len(eval_rows) == 299 and len(train_rows) == 690
    first = eval_rows[0]
    assert set(first) == {
        "id",
        "dataset",
        "task",
        "split",
        "instruction",
        "input",
        "output",
        "label",
        "label_space",
        "provenance",
    }
    assert first["id"] == "pmdata_fatigue-eval-00000"
    assert first["label"] == 2 and first["output"] == "The predicted fatigue level is 2."
    assert first["label_space"] == ["0", "1", "2", "3", "4", "5"]
    assert first["provenance"]["file"] == "pmdata/pmdata_fatigue_eval.json"
    assert len(first["provenance"]["sha256"]) == 64
    assert "[Burned Calorories]" in first["input"]  # the seed's quirks are kept verbatim


@pytest.fixture
def raw(tmp_path, raw_data):
    data = tmp_path / "data"
    shutil.copytree(raw_data / "pmdata", data / "pmdata")
    return data


def _prepare(raw, tmp_path):
    out = tmp_path / "records"
    with pytest.raises(HealthSLMError) as info:
        prepare(Params(), ["pmdata"], data_dir=raw, out_dir=out, echo=lambda _: None)
    assert not (out / "pmdata").exists(), "a failed prepare must leave no output"
    assert not list(out.glob("**/*.jsonl")) if out.exists() else True
    return str(info.value)


def _rewrite(path, mutate):
    rows = json.loads(path.read_text())
    mutate(rows)
    path.write_text(json.dumps(rows))


def test_label_out_of_range(raw, tmp_path):
    path = raw / "pmdata" / "pmdata_stress_eval.json"
    _rewrite(path, lambda rows: rows[7].update(answer="The predicted stress level is 9."))
    message = _prepare(raw, tmp_path)
    assert f"{path} row 7: field 'answer'" in message and "0, 1, 2, 3, 4, 5" in message


def test_missing_field(raw, tmp_path):
    path = raw / "pmdata" / "pmdata_fatigue_train_all.json"
    _rewrite(path, lambda rows: rows[3].pop("question"))
    assert f"{path} row 3: field 'question' is missing" in _prepare(raw, tmp_path)


def test_truncated_json(raw, tmp_path):
    path = raw / "pmdata" / "pmdata_readiness_eval.json"
    path.write_bytes(path.read_bytes()[:5000])
    assert f"{path}: not valid JSON (line" in _prepare(raw, tmp_path)


def test_empty_file(raw, tmp_path):
    path = raw / "pmdata" / "pmdata_sleep_quality_eval.json"
    path.write_text("[]")
    assert f"{path}: expected a non-empty JSON list" in _prepare(raw, tmp_path)


def test_wrong_encoding(raw, tmp_path):
    path = raw / "pmdata" / "pmdata_fatigue_eval.json"
    path.write_bytes(path.read_text().encode("utf-16"))
    assert f"{path}: not UTF-8 text" in _prepare(raw, tmp_path)


def test_missing_file_says_to_fetch(raw, tmp_path):
    (raw / "pmdata" / "pmdata_stress_train_all.json").unlink()
    assert "run `healthslm fetch` first" in _prepare(raw, tmp_path)
