"""Evaluation end to end on real records with a tiny local model: every mode and task kind, valid answers,
baselines and intervals, plots; the seed's generate strategy and number decoding with the embedded model."""

import json
import platform
import re
from collections import Counter

import numpy as np
import pytest

from healthslm.baselines import reading_features
from healthslm.data.registry import all_tasks
from healthslm.generation import NumberDecoder, parse_answer
from healthslm.io import read_jsonl
from healthslm.metrics import score
from healthslm.params import Params
from healthslm.prepare import eval_sample, read_records
from healthslm.prompts import build_context, fewshot_header
from healthslm.report import render

TASKS = all_tasks()
DATASETS = ["pmdata", "aw_fb", "pubmedqa", "medquad", "dr"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, all_records, tiny_model_dir):
    from healthslm.evaluate import evaluate

    out = tmp_path_factory.mktemp("eval")
    params = Params.model_validate(
        {
            "model": str(tiny_model_dir),
            "data": {"datasets": DATASETS},
            "eval": {"mode": "zs,fs-3", "limit": 6, "text_limit": 2, "text_max_new_tokens": 6},
        }
    )
    results = evaluate(
        params,
        False,
        all_records,
        out / "predictions",
        out / "metrics.json",
        out / "plots",
        echo=lambda _: None,
    )
    return params, results, out


def test_every_closed_answer_is_in_the_label_space(evaluated):
    _, results, out = evaluated
    for mode in ("zs", "fs-3"):
        for key in (
            "pmdata_fatigue",
            "pmdata_readiness",
            "aw_fb_activity",
            "pubmedqa_answer",
            "dr_depression",
        ):
            spec = TASKS[key]
            rows = read_jsonl(out / "predictions" / "base" / mode / f"{key}.jsonl")
            assert len(rows) == 6
            assert all(str(row["answer"]) in spec.label_space for row in rows)
            assert all(set(row["scores"]) == set(spec.spoken_answers) for row in rows)
            assert results[mode][key]["invalid_rate"] == 0.0


def test_few_shot_prompts_differ_from_zero_shot(evaluated):
    _, _, out = evaluated
    zs = read_jsonl(out / "predictions" / "base" / "zs" / "pmdata_stress.jsonl")
    fs = read_jsonl(out / "predictions" / "base" / "fs-3" / "pmdata_stress.jsonl")
    assert [r["id"] for r in zs] == [r["id"] for r in fs]
    assert all(a["prompt_sha256"] != b["prompt_sha256"] for a, b in zip(zs, fs, strict=True))


def test_continuous_task_gets_numbers_and_text_tasks_get_text_scores(evaluated):
    _, results, out = evaluated
    calories = read_jsonl(out / "predictions" / "base" / "zs" / "aw_fb_calories.jsonl")
    assert all(isinstance(row["answer"], float) for row in calories)
    assert "mae" in results["zs"]["aw_fb_calories"]["model"]
    for key in ("medquad_answer", "dr_depression_explanation"):
        model = results["zs"][key]["model"]
        assert 0 <= model["rouge_l"] <= 1 and -1 <= model["bertscore_f1"] <= 1
        assert model["rouge_l_ci_low"] <= model["rouge_l"] <= model["rouge_l_ci_high"]
    assert "medquad_answer" not in results["fs-3"]  # open-ended tasks run zero-shot only


def test_metrics_have_baselines_intervals_and_confusion(evaluated, all_records):
    _, results, out = evaluated
    assert json.loads((out / "metrics.json").read_text()) == results
    for key in ("pmdata_fatigue", "pmdata_stress", "aw_fb_activity", "pubmedqa_answer"):
        metric = TASKS[key].metric
        for system in ("model", "majority", "classical"):
            entry = results["zs"][key][system]
            assert entry[metric + "_ci_low"] <= entry[metric] <= entry[metric + "_ci_high"]
    matrix = results["zs"]["pmdata_fatigue"]["confusion"]["matrix"]
    assert np.array(matrix).sum() == 6 and len(matrix) == 6
    assert "balanced_accuracy" in results["zs"]["aw_fb_activity"]["model"]
    train = read_records(all_records, "pmdata", "fatigue", "train")
    test = eval_sample(read_records(all_records, "pmdata", "fatigue", "eval"), TASKS["pmdata_fatigue"], 6, 42)
    mode = Counter(r["label"] for r in train).most_common(1)[0][0]
    assert results["zs"]["pmdata_fatigue"]["majority"]["accuracy"] == pytest.approx(
        np.mean([r["label"] == mode for r in test])
    )
    efficiency = results["efficiency"]["zs"]
    assert efficiency["examples"] == 6 * 8 + 2 * 2  # 8 label tasks, 2 text tasks
    assert efficiency["examples_per_s"] > 0
    assert efficiency["ttft_mean_s"] > 0 and efficiency["params_m"] < 5


def test_plots_are_written(evaluated):
    _, _, out = evaluated
    points = json.loads((out / "plots" / "base" / "confusion" / "zs__pmdata_fatigue.json").read_text())
    assert len(points) == 6 and set(points[0]) == {"actual", "predicted"}
    png = (out / "plots" / "base" / "scores" / "fs-3__pmdata_stress.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_report_shows_modes_baselines_and_paper_columns(evaluated):
    params, results, _ = evaluated
    validation = {name: {"success": True, "suites": {}, "leakage": {}} for name in DATASETS}
    tokens = {
        "pmdata_fatigue": {
            "examples": 299,
            "seed_tokens": 666.0,
            "compact_tokens": 217.0,
            "compact_over_seed": 0.326,
        }
    }
    text = render(params, results, validation, tokens)
    assert "| zs | pmdata_fatigue | accuracy ↑ | 6 |" in text and "| fs-3 | pmdata_fatigue |" in text
    assert "| medquad_answer | 2 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| zs | pmdata_fatigue |"))
    assert "vs constant |" in row or "vs classical |" in row  # the paired difference to the best baseline
    assert row.endswith("| — | — | likelihood scoring; chat template; 6 sampled rows |")
    # The paper's numbers stand beside ours only where the protocol is the paper's.
    seed_protocol = {"strategy": "generate", "chat_template": False, "limit": None}
    same = params.model_copy(update={"eval": params.eval.model_copy(update=seed_protocol)})
    rows = [
        line
        for line in render(same, results, validation, tokens).splitlines()
        if "| pmdata_fatigue |" in line
    ]
    assert rows[0].endswith("| 0.522 | same |")  # zero-shot: the paper's SLM mean for fatigue
    assert rows[1].startswith("| fs-3 ") and rows[1].endswith("| same |")  # the seed's own 3-shot pool


def test_seed_fewshot_header_is_byte_for_byte():
    spec = TASKS["pmdata_fatigue"]
    examples = [{"instruction": "I.", "input": "Q 1.5?", "output": "The predicted fatigue level is 3."}]
    assert fewshot_header(examples, spec, "seed") == (
        "You are a health assistant. Your mission is to read the following 1 examples and return your "
        "prediction based on the health query.\n\nExample 1\nI. Q 1.5? The predicted fatigue level is 3.\n"
        "\nFinally, please answer to the below question:\n"
    )


@pytest.mark.parametrize(
    ("key", "generated", "expected"),
    [
        ("pmdata_fatigue", " 3.", "3"),
        ("pmdata_fatigue", "10:15:15", None),  # the embedded model's zero-shot answer: not a valid label
        ("pmdata_readiness", ": 10", "10"),
        ("pmdata_stress", "I think 2.0 overall", "2"),
        ("aw_fb_activity", " 4.", "4"),
        ("aw_fb_calories", " 63.5 calories.", "63.5"),
        ("pubmedqa_answer", " Maybe, the data are weak.", "maybe"),
        ("dr_depression", " no. Reasoning: ...", "no"),
        ("pmdata_sleep_quality", "unclear", None),
    ],
)
def test_seed_parsing(key, generated, expected):
    assert parse_answer(TASKS[key], generated) == expected


def test_generate_strategy_reports_invalid_rate_with_the_embedded_model(tmp_path, pmdata_records, embedded):
    from healthslm.evaluate import evaluate

    params = Params.model_validate(
        {
            "data": {"datasets": ["pmdata"]},
            "eval": {
                "mode": "zs",
                "strategy": "generate",
                "limit": 2,
                "chat_template": False,
                "max_new_tokens": 8,
            },
        }
    )
    results = evaluate(
        params,
        False,
        pmdata_records,
        tmp_path / "p",
        tmp_path / "m.json",
        tmp_path / "plots",
        echo=lambda _: None,
    )
    rows = read_jsonl(tmp_path / "p" / "base" / "zs" / "pmdata_fatigue.jsonl")
    assert len(rows) == 2 and all("raw" in row for row in rows)
    rate = results["zs"]["pmdata_fatigue"]["invalid_rate"]
    assert rate == sum(row["answer"] is None for row in rows) / 2
    assert results["efficiency"]["zs"]["decode_tokens_per_s"] > 0


def test_number_decoding_always_gives_a_number(embedded, all_records):
    model, tokenizer = embedded
    spec = TASKS["aw_fb_calories"]
    decoder = NumberDecoder(model, tokenizer)
    for record in read_records(all_records, "aw_fb", "calories", "eval")[:3]:
        value = float(decoder(build_context(record, spec, tokenizer, True), special_tokens=False))
        assert value >= 0


def test_number_decoding_stops_where_the_model_ends_the_number(embedded):
    """The decoder reads the number greedy decoding writes and stops where the model's own best token is no
    digit: before issue 30 it could only stop at EOS or a newline, so "250 calories" became "2500" or
    "250.3". Its digits are ASCII ("²" passes str.isdigit, not float())."""
    from healthslm.generation import generate

    model, tokenizer = embedded
    decoder = NumberDecoder(model, tokenizer)
    assert all(decoder.pieces[i].isascii() for i in decoder.digits)
    assert any(not p.isascii() and p.isdigit() for p in decoder.pieces.values())  # the vocabulary has some
    contexts = [
        "I burned 250 calories on Monday and 250 calories on Tuesday. On Wednesday I burned",
        "The meeting room holds 12 people. Our team has 12 people, so the room holds",
        "Q: How many legs does a spider have?\nA: A spider has",
    ]
    compared = 0
    for context in contexts:
        written = generate(model, tokenizer, context, 8, special_tokens=True).text
        number = re.match(r"\s*(\d+(?:\.\d+)?)(?!\d)", written)
        assert number and written[number.end() :].strip(), written  # a number, then more than the number
        assert decoder(context, special_tokens=True) == number.group(1), (context, written)
        compared += 1
    assert compared == len(contexts)


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


def test_batched_generation_equals_batch_one(embedded, all_records):
    """Left-padded batches of open-ended prompts decode exactly what batch 1 decodes, in input order; a
    sequence that stops early counts only its own tokens."""
    from healthslm.generation import generate, generate_batch, length_buckets

    model, tokenizer = embedded
    contexts = [
        build_context(record, TASKS[f"{dataset}_{name}"], tokenizer, True)
        for dataset, name in (("medquad", "answer"), ("dr", "depression"))
        for record in read_records(all_records, dataset, name, "eval")[:2]
    ]
    singles = [generate(model, tokenizer, c, 24, special_tokens=False) for c in contexts]
    batched = generate_batch(model, tokenizer, contexts, 24, special_tokens=False)
    assert [b.text for b in batched] == [s.text for s in singles]
    assert [b.new_tokens for b in batched] == [s.new_tokens for s in singles]
    assert len({len(tokenizer(c).input_ids) for c in contexts}) == 4  # the batch really was padded
    assert min(s.new_tokens for s in singles) < 24 == max(s.new_tokens for s in singles)  # one stopped early
    assert length_buckets([5, 1, 4, 2, 3], 2) == [[1, 3], [4, 2], [0]]


def test_numerics_are_recorded_and_float32_needs_no_agreement_check(evaluated):
    _, results, _ = evaluated
    used = results["efficiency"]["zs"]["numerics"]
    assert used["dtype"] == "float32" and used["torch"] and used["threads"] >= 1
    assert len(used["weights_sha256"]) == 64
    if platform.machine() == "x86_64":  # pinned by healthslm/__init__.py, whatever this CPU offers
        assert used["cpu_kernels"].startswith("ATen AVX2, MKL AVX2,STRICT")
    assert all("fp32_agreement" not in row for row in results["zs"].values())


def test_bf16_scoring_reports_how_often_it_agrees_with_fp32(tmp_path, pmdata_records, tiny_model_dir):
    """The tiny model (a Llama, SmolLM2's tokenizer) takes the embedded model's autocast path in seconds."""
    from healthslm.evaluate import evaluate
    from healthslm.report import numerics_section

    def run(dtype: str, limit: int) -> dict:
        eval_ = {"mode": "zs", "limit": limit, "dtype": dtype, "fp32_check_rows": 2}
        data = {"datasets": ["pmdata"]}
        params = Params.model_validate({"model": str(tiny_model_dir), "data": data, "eval": eval_})
        out = tmp_path / dtype
        return evaluate(params, False, pmdata_records, out / "p", out / "m.json", out / "plots", echo=print)

    bf16, fp32 = run("bfloat16", 3), run("float32", 3)  # the same rows; the check re-scores the first 2
    answers = {
        dtype: [
            row["answer"]
            for row in read_jsonl(tmp_path / dtype / "p" / "base" / "zs" / "pmdata_fatigue.jsonl")
        ]
        for dtype in ("bfloat16", "float32")
    }
    same = sum(a == b for a, b in zip(answers["bfloat16"][:2], answers["float32"][:2], strict=True))
    assert bf16["zs"]["pmdata_fatigue"]["fp32_agreement"] == {"rows": 2, "agree": same, "rate": same / 2}
    assert bf16["efficiency"]["zs"]["numerics"]["dtype"] == "bfloat16"
    assert (
        bf16["efficiency"]["zs"]["examples"] == fp32["efficiency"]["zs"]["examples"]
    )  # the check is not timed
    lines = numerics_section(bf16, None)
    assert any(line.startswith("zs: bfloat16 answers agree with float32 on") for line in lines)


def test_batched_scoring_gives_the_rows_of_one_at_a_time(tmp_path, pmdata_records, tiny_model_dir):
    """eval.score_batch_size 4 (a GPU's setting; no few-shot cache) against 1 on the same few-shot rows:
    the same answers, scores within float rounding, every row once, in order. The tiny model (SmolLM2's
    tokenizer and template, 2 layers) exercises the same layout, masks and positions in seconds."""
    from healthslm.evaluate import evaluate

    rows = {}
    for size in (1, 4):
        eval_ = {"mode": "fs-3", "limit": 5, "score_batch_size": size}
        data = {"datasets": ["pmdata"]}
        params = Params.model_validate({"model": str(tiny_model_dir), "data": data, "eval": eval_})
        out = tmp_path / str(size)
        evaluate(params, False, pmdata_records, out / "p", out / "m.json", out / "plots", echo=lambda _: None)
        rows[size] = read_jsonl(out / "p" / "base" / "fs-3" / "pmdata_stress.jsonl")
    assert len(rows[4]) == 5 and [r["id"] for r in rows[4]] == [r["id"] for r in rows[1]]
    for one, batched in zip(rows[1], rows[4], strict=True):
        assert batched["answer"] == one["answer"] and batched["prompt_sha256"] == one["prompt_sha256"]
        assert batched["scores"] == pytest.approx(one["scores"], abs=2e-3)
