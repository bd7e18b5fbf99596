"""The data layer on the real data: every dataset's records, TOON == JSONL, few-shot pools, the compact
format's token economy, GLOBEM on a generated fixture, and a plug-in dataset from a local CSV."""

import csv
import hashlib
import json
import shutil
import sys

import pytest

from healthslm.data.loaders import write_globem_fixture
from healthslm.data.registry import DATASETS, all_tasks
from healthslm.errors import HealthSLMError
from healthslm.params import Params, parse_params
from healthslm.prepare import SKIPPED_FILE, prepare, read_records, read_toon_records, records_path
from healthslm.prompts import compact_readings, question
from healthslm.validate import validate
from tests.conftest import ROOT

EXPECTED_ROWS = {
    ("pmdata", "fatigue"): {"train": 690, "eval": 299},
    ("aw_fb", "activity"): {"train": 3131, "eval": 299},
    ("aw_fb", "calories"): {"train": 3131, "eval": 299},
    ("pubmedqa", "answer"): {"train": 500, "eval": 500},
    ("medquad", "answer"): {"train": 15429, "eval": 978},
    ("dr", "depression"): {"train": 1003, "valid": 430, "eval": 405},
    ("dreaddit", "stress"): {"train": 2837, "valid": 300, "eval": 414},
}


@pytest.mark.parametrize(("dataset", "task"), list(EXPECTED_ROWS))
def test_every_dataset_gives_typed_records(all_records, dataset, task):
    for split, rows in EXPECTED_ROWS[(dataset, task)].items():
        records = read_records(all_records, dataset, task, split)
        assert len(records) == rows
        assert len({r["id"] for r in records}) == rows
        spec = all_tasks()[f"{dataset}_{task}"]
        for record in records[:50]:
            if spec.closed:
                assert str(record["label"]) in spec.label_space
            assert record["provenance"]["sha256"] and record["input"] and record["output"]


def test_label_types_follow_the_task(all_records):
    activity = read_records(all_records, "aw_fb", "activity", "eval")[0]
    assert activity["label"] == "Running 3 METs" and activity["output"].endswith("is 5.")
    assert isinstance(read_records(all_records, "aw_fb", "calories", "eval")[0]["label"], float)
    assert isinstance(read_records(all_records, "pmdata", "stress", "eval")[0]["label"], int)
    assert read_records(all_records, "medquad", "answer", "eval")[0]["label"] is None
    dr = read_records(all_records, "dr", "depression", "train")[0]
    assert dr["label"] == "yes" and dr["output"].startswith("yes. Reasoning:")
    assert dr["provenance"]["response_by"] == "gpt-3.5-turbo"  # the IMHI responses, kept as references


def test_pubmedqa_eval_is_the_official_test_split(all_records, raw_data):
    official = json.loads((raw_data / "pubmedqa" / "test_ground_truth.json").read_text())
    records = read_records(all_records, "pubmedqa", "answer", "eval")
    assert {r["provenance"]["pmid"]: r["label"] for r in records} == official


def test_toon_files_hold_the_same_records_as_jsonl(all_records):
    files = sorted(all_records.glob("*/*.jsonl"))
    assert len(files) == 22
    for jsonl in files:
        dataset, name = jsonl.parent.name, jsonl.name.removesuffix(".jsonl")
        task, split = name.split(".")
        toon = records_path(all_records, dataset, task, split, "toon")
        assert read_toon_records(toon) == read_records(all_records, dataset, task, split), toon


def test_fewshot_pools_are_nested_train_only_and_deterministic(all_records, tmp_path, raw_data):
    drawn = json.loads((all_records / "pubmedqa" / "answer.fewshot.json").read_text())  # no published pools
    assert set(drawn["1"]) <= set(drawn["3"]) <= set(drawn["5"]) <= set(drawn["10"])
    assert set(drawn["sources"].values()) == {"drawn from train (seeded)"}
    pools = json.loads((all_records / "pmdata" / "fatigue.fewshot.json").read_text())
    assert {k: len(v) for k, v in pools.items()} == {"1": 1, "3": 3, "5": 5, "10": 10, "sources": 4}
    assert all("-train-" in record_id for record_id in pools["10"])
    prepare(Params(), ["pmdata"], raw_data, tmp_path / "again", echo=lambda _: None)
    assert json.loads((tmp_path / "again" / "pmdata" / "fatigue.fewshot.json").read_text()) == pools
    other_seed = Params.model_validate({"base": {"seed": 7}})
    prepare(other_seed, ["pmdata"], raw_data, tmp_path / "seed7", echo=lambda _: None)
    assert json.loads((tmp_path / "seed7" / "pmdata" / "fatigue.fewshot.json").read_text()) != pools


def test_compact_prompts_take_at_most_a_third_of_the_seed_tokens(all_records, embedded):
    _, tokenizer = embedded
    spec = all_tasks()["pmdata_fatigue"]
    records = read_records(all_records, "pmdata", "fatigue", "eval")
    seed = sum(len(tokenizer(question(r, spec, "seed")).input_ids) for r in records)
    compact = sum(len(tokenizer(question(r, spec, "compact")).input_ids) for r in records)
    assert compact / seed <= 1 / 3


def test_compact_keeps_the_readings_rounded_and_missing_as_null():
    record = {
        "dataset": "pmdata",
        "input": "[Steps]: [4955.0, 6495.0] steps, [Burned Calorories]: [458.0] "
        "calories, [Resting Heart Rate]: [49.29, 0.0] beats/min, [SleepMinutes]: [372.0] minutes, "
        "[Mood]: 4 out of 5; What would be the predicted fatigue?",
    }
    assert compact_readings(record, "pmdata") == {
        "steps_x100": [50, 65],
        "kcal_x100": [5],
        "rest_hr": [49, None],
        "sleep_x10min": [37],
        "mood_of_5": 4,
    }


def test_globem_is_skipped_with_one_line_when_absent(all_records):
    reason = json.loads((all_records / "globem" / SKIPPED_FILE).read_text())["reason"]
    assert "globem: skipped, no globem_anxiety.csv, globem_depression.csv" in reason


def test_globem_from_a_user_copy_with_the_documented_schema(tmp_path):
    write_globem_fixture(tmp_path / "data" / "globem", rows=80)
    messages = []
    prepare(Params(), ["globem"], tmp_path / "data", tmp_path / "records", echo=messages.append)
    anxiety = read_records(tmp_path / "records", "globem", "anxiety", "eval")
    assert len(anxiety) == 40 and all(r["label"] in range(5) for r in anxiety)
    assert anxiety[0]["output"].startswith("The predicted PHQ-4 anxiety score is")
    suites = validate(
        Params(),
        "globem",
        tmp_path / "records",
        tmp_path / "docs",
        tmp_path / "v",
        echo=print,
        data_dir=tmp_path / "data",
    )
    assert len(suites) == 2 + 4 + 1 and all(s["success"] for s in suites.values())  # and their readings
    assert suites["readings"]["tables"] == 6 and suites["readings"]["rows"] == 2 * 2 * 80 * 6


def test_globem_bad_label_names_file_row_and_field(tmp_path):
    folder = tmp_path / "data" / "globem"
    write_globem_fixture(folder, rows=20)
    rows = list(csv.reader((folder / "globem_depression.csv").open()))
    rows[4][-1] = "7"
    with (folder / "globem_depression.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(
        HealthSLMError, match=r"globem_depression.csv row 3: field 'Depression' = '7' is not 0-4"
    ):
        prepare(Params(), ["globem"], tmp_path / "data", tmp_path / "records", echo=lambda _: None)
    assert not (tmp_path / "records" / "globem").exists()


def test_imhi_csv_without_its_column_is_a_clear_error(tmp_path, raw_data):
    folder = tmp_path / "data" / "dr"
    shutil.copytree(raw_data / "dr", folder)
    (folder / "DR_valid_complete.csv").write_text("post,question\nhello,there\n")
    with pytest.raises(HealthSLMError, match=r"DR_valid_complete.csv: missing column\(s\) response"):
        prepare(Params(), ["dr"], tmp_path / "data", tmp_path / "records", echo=lambda _: None)


EMOTIONS = ["joy", "fear", "anger", "sadness", "disgust", "shame", "guilt"]  # the shipped plug-in's labels


def _trains_and_evaluates_as_declared(tmp_path, model_dir) -> None:
    """The plug-in's task in ft: trained and scored on the same prompt, "<instruction>\n<text>" then its
    answer prefix, and no explanation task (its outputs are template sentences, not explanations)."""
    from healthslm.evaluate import evaluate
    from healthslm.models.loader import load_model_and_tokenizer
    from healthslm.models.registry import resolve_model
    from healthslm.prompts import build_context
    from healthslm.train import train, training_examples

    params = parse_params(
        {
            "model": str(model_dir),
            "data": {"datasets": ["isear"], "plugins": ["isear_plugin"]},
            "train": {"examples_per_task": 7, "max_steps": 2, "merge": False, "wandb": {"enabled": False}},
            "eval": {"mode": ["ft"], "limit": 7, "finetuned": str(tmp_path / "model")},
        }
    )
    records = tmp_path / "records"
    _, tokenizer = load_model_and_tokenizer(resolve_model(str(model_dir)))
    examples, _ = training_examples(params, tokenizer, True, 256, records)
    assert all(e["prompt"].endswith("The emotion is") for e in examples)
    assert {e["completion"] for e in examples} <= {f" {emotion}." for emotion in EMOTIONS}
    train(params, records, tmp_path / "model", tmp_path / "ckpt", tmp_path / "live", echo=lambda _: None)
    out = tmp_path / "eval"
    results = evaluate(
        params, True, records, out / "pred", out / "m.json", out / "plots", echo=lambda _: None
    )
    assert set(results["ft"]) == {"isear_emotion"}  # no "<task>_explanation"
    result = results["ft"]["isear_emotion"]
    assert result["n"] == 7 and result["invalid_rate"] == 0
    assert result["labels"] == dict.fromkeys(EMOTIONS, 1)  # a stratified sample, not the first rows
    spec = all_tasks()["isear_emotion"]
    rows = json.loads((out / "pred" / "finetuned" / "ft" / "isear_emotion.jsonl").read_text().splitlines()[0])
    record = next(r for r in read_records(records, "isear", "emotion", "eval") if r["id"] == rows["id"])
    context = build_context(record, spec, tokenizer, True, "compact")
    assert context.endswith(
        f"{record['instruction']}\n{record['input']}<|im_end|>\n<|im_start|>assistant\nThe emotion is"
    )
    assert rows["prompt_sha256"] == hashlib.sha256(context.encode()).hexdigest()


def test_the_shipped_plugin_adds_a_csv_text_dataset_without_touching_the_core(
    tmp_path, monkeypatch, tiny_model_dir
):
    """plugins/isear_plugin.py as docs/adding-a-dataset.md says to use it: CSVs in data/isear/, the module
    named in data.plugins, `isear` in data.datasets; prepared, gated, trained and evaluated as declared."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "plugins").mkdir()
    shutil.copy(ROOT / "plugins" / "isear_plugin.py", tmp_path / "plugins" / "isear_plugin.py")
    folder = tmp_path / "data" / "isear"
    folder.mkdir(parents=True)
    words = ["river", "garden", "exam", "storm", "letter", "train", "dog", "concert", "hospital", "wedding",
             "bicycle", "market"]  # fmt: skip
    for name, first, count in (("train.csv", 0, 35), ("test.csv", 500, 14)):
        with (folder / name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "emotion"])
            for i in range(first, first + count):
                story = " ".join(words[(i * k) % len(words)] for k in (1, 5, 7))
                emotion = EMOTIONS[(i - first) % len(EMOTIONS)]
                writer.writerow([f"Something about the {story} ({i * 7919}) made me feel it.", emotion])
    try:
        params = parse_params({"data": {"datasets": ["isear"], "plugins": ["isear_plugin"]}})
        prepare(params, ["isear"], tmp_path / "data", tmp_path / "records", echo=lambda _: None)
        records = read_records(tmp_path / "records", "isear", "emotion", "eval")
        assert len(records) == 14 and records[1]["label"] == "fear"
        assert records[1]["output"] == "The emotion is fear."
        suites = validate(
            params, "isear", tmp_path / "records", tmp_path / "docs", tmp_path / "v", echo=lambda _: None
        )
        assert set(suites) == {"raw.train.csv", "raw.test.csv", "isear_emotion.train", "isear_emotion.eval"}
        # The raw files are gated on their declared columns, label space and the length bounds (params)
        lines = (folder / "test.csv").read_text().splitlines()
        (folder / "test.csv").write_text("\n".join([*lines[:4], "Help,joy", *lines[4:]]) + "\n")
        with pytest.raises(HealthSLMError) as error:
            validate(params, "isear", tmp_path / "records", tmp_path / "docs", tmp_path / "v", echo=print)
        assert (
            "isear raw test.csv: field 'text' expect_column_value_lengths_to_be_between "
            "(bound: [5, 20000], validate.min_input_chars, validate.max_prompt_chars): "
            "1 row(s), e.g. row 3 = 'Help'"
        ) in str(error.value)
        shorter = parse_params({**params.model_dump(by_alias=True), "validate": {"min_input_chars": 4}})
        validate(shorter, "isear", tmp_path / "records", tmp_path / "docs", tmp_path / "v", echo=print)
        _trains_and_evaluates_as_declared(tmp_path, tiny_model_dir)
    finally:
        DATASETS.pop("isear", None)
