"""Likelihood scoring with the real embedded model: the cached fast path equals a brute-force pass."""

import json
import re

import pytest
import torch

from healthslm.data.registry import all_tasks
from healthslm.io import read_jsonl
from healthslm.prompts import answer_continuation, build_context, seed_question
from healthslm.scoring import LabelScorer, _common_prefix

TASKS = all_tasks()


def _brute_force(model, tokenizer, context, continuations, special):
    ctx = tokenizer(context, add_special_tokens=special).input_ids
    scores = []
    for cont in continuations:
        full = tokenizer(context + cont, add_special_tokens=special).input_ids
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        scores.append(sum(logp[j - 1, full[j]].item() for j in range(len(ctx), len(full))))
    return scores


@pytest.mark.parametrize("chat", [True, False])
def test_fast_scores_equal_brute_force(embedded, pmdata_records, chat):
    model, tokenizer = embedded
    spec = TASKS["pmdata_readiness"]  # 0..10: "10" has one token more than the others
    record = read_jsonl(pmdata_records / "pmdata" / "readiness.eval.jsonl")[0]
    context = build_context(record, spec, tokenizer, chat)
    continuations = [answer_continuation(label, context) for label in spec.label_space]
    fast = LabelScorer(model, tokenizer).score(context, continuations, special_tokens=not chat)
    # All 11 answers scored together, beside a whole forward pass for each of three of them (the first, the
    # two-token "10" and one between): 11 passes of a ~1,000-token prompt took 12-25 s.
    checked = [0, 5, spec.label_space.index("10")]
    slow = _brute_force(model, tokenizer, context, [continuations[i] for i in checked], not chat)
    assert [fast[i] for i in checked] == pytest.approx(slow, abs=2e-3)
    assert len(set(round(s, 3) for s in fast)) > 5  # the scores really differ between labels


def _seed_prompt(entry: dict, template: str, pool: list[dict] | None = None) -> str:
    """HealthSLM-Bench's inference prompt (a1789591/HealthSLM-Bench@c6bf88b, inference.py), restated: the
    few-shot header over its pool file's entries, then "<instruction> <question>" with every number quoted,
    then " " + the answer template, whose trailing space ends the prompt."""
    head = ""
    if pool:
        head = (
            f"You are a health assistant. Your mission is to read the following {len(pool)} examples and "
            "return your prediction based on the health query.\n"
        )
        for number, example in enumerate(pool, start=1):
            head += (
                f"\nExample {number}\n{example['instruction']} {example['question']} {example['answer']}\n"
            )
        head += "\nFinally, please answer to the below question:\n"
    quoted = re.sub(r"(\d+(\.\d+)?)", r'"\1"', entry["question"])
    return f"{head}{entry['instruction']} {quoted} {template}"


def test_seed_prompt_is_byte_for_byte(embedded, pmdata_records, raw_data):
    _, tokenizer = embedded
    entry = json.loads((raw_data / "pmdata" / "pmdata_fatigue_eval.json").read_text())[0]
    record = read_jsonl(pmdata_records / "pmdata" / "fatigue.eval.jsonl")[0]
    context = build_context(record, TASKS["pmdata_fatigue"], tokenizer, use_chat_template=False)
    assert context == _seed_prompt(entry, "The predicted fatigue level is ")
    assert context.endswith(
        'out of "5"; What would be the predicted fatigue? The predicted fatigue level is '
    )
    assert answer_continuation("3", context) == "3."  # after the seed's space, the answer itself
    assert seed_question(record) in context


@pytest.mark.parametrize("k", [3, 10])
def test_seed_few_shot_prompt_reads_the_seeds_pool(embedded, pmdata_records, raw_data, k):
    _, tokenizer = embedded
    pool = json.loads((raw_data / "pmdata" / f"pmdata_readiness_train_{k}.json").read_text())
    entry = json.loads((raw_data / "pmdata" / "pmdata_readiness_eval.json").read_text())[5]
    record = read_jsonl(pmdata_records / "pmdata" / "readiness.eval.jsonl")[5]
    train = {r["id"]: r for r in read_jsonl(pmdata_records / "pmdata" / "readiness.train.jsonl")}
    ids = json.loads((pmdata_records / "pmdata" / "readiness.fewshot.json").read_text())[str(k)]
    examples = [train[i] for i in ids]
    context = build_context(record, TASKS["pmdata_readiness"], tokenizer, False, "seed", examples)
    assert context == _seed_prompt(entry, "The predicted readiness level is ", pool)


def test_compact_and_other_datasets_end_without_the_space(embedded, all_records):
    _, tokenizer = embedded
    record = read_jsonl(all_records / "pmdata" / "fatigue.eval.jsonl")[0]
    compact = build_context(record, TASKS["pmdata_fatigue"], tokenizer, True, "compact")
    pubmedqa = build_context(
        read_jsonl(all_records / "pubmedqa" / "answer.eval.jsonl")[0],
        TASKS["pubmedqa_answer"],
        tokenizer,
        True,
    )
    assert compact.endswith("The predicted fatigue level is") and pubmedqa.endswith("The answer is")
    assert answer_continuation("yes", pubmedqa) == " yes."


def test_common_prefix_keeps_one_token_for_every_candidate():
    assert _common_prefix([[1, 2, 3], [1, 2, 4]]) == [1, 2]
    assert _common_prefix([[1, 2], [1, 2, 3]]) == [1]
    assert _common_prefix([[5], [6]]) == []


def test_shared_prefix_cache_gives_the_same_scores(embedded, pmdata_records):
    from healthslm.prompts import shared_prefix

    model, tokenizer = embedded
    spec = TASKS["pmdata_stress"]
    train = read_jsonl(pmdata_records / "pmdata" / "stress.train.jsonl")
    record = read_jsonl(pmdata_records / "pmdata" / "stress.eval.jsonl")[3]
    context = build_context(record, spec, tokenizer, True, "compact", examples=train[:2])
    continuations = [answer_continuation(label, context) for label in spec.label_space]
    scorer = LabelScorer(model, tokenizer)
    plain = scorer.score(context, continuations, special_tokens=False)
    prefix = shared_prefix(context, record, spec, "compact")
    assert "Example 2" in prefix and prefix.endswith("question:\n")
    scorer.set_shared_prefix(prefix, special_tokens=False)
    assert scorer.score(context, continuations, special_tokens=False) == pytest.approx(plain, abs=2e-3)
    # The cache is extended in place and cut back after each example: another example in between
    # leaves no trace, and the cache holds exactly the prefix again.
    other = build_context(
        read_jsonl(pmdata_records / "pmdata" / "stress.eval.jsonl")[7],
        spec,
        tokenizer,
        True,
        "compact",
        examples=train[:2],
    )
    scorer.score(other, continuations, special_tokens=False)
    assert scorer.score(context, continuations, special_tokens=False) == pytest.approx(plain, abs=2e-3)
    prefix_ids, cache = scorer._prefix
    assert all(layer.get_seq_length() == len(prefix_ids) for layer in cache.layers)


def test_bf16_scoring_takes_the_logits_in_fp32(embedded):
    """Under bf16 autocast the output projection is recomputed in fp32: logits rounded to bf16 (steps of
    0.125 near 20) would tie or swap close answers."""
    from healthslm.models.dtype import autocast, fp32_head

    model, tokenizer = embedded
    ids = torch.tensor([tokenizer("Is a resting heart rate of 58 bpm normal? Answer:").input_ids])
    with torch.inference_mode():
        exact = model(ids).logits
        with autocast("bfloat16"):
            rounded = model(ids).logits
            with fp32_head(model, "bfloat16"):
                kept = model(ids).logits
        again = model(ids).logits  # the hook is gone afterwards
    assert rounded.dtype == torch.bfloat16 and kept.dtype == torch.float32
    assert (kept != kept.bfloat16().float()).float().mean() > 0.9  # not bf16 values in fp32 clothing
    assert (kept - exact).abs().max() < (rounded.float() - exact).abs().max()
    assert torch.equal(again, exact)


@pytest.mark.parametrize("chat", [True, False])
def test_batched_scores_equal_one_at_a_time(embedded, pmdata_records, chat):
    """eval.score_batch_size > 1 (a GPU's setting): examples of different lengths, left-padded into one
    pass, score as they do alone, row for row."""
    model, tokenizer = embedded
    items = []
    for task, index in [("readiness", 0), ("stress", 3), ("fatigue", 1)]:
        spec = TASKS[f"pmdata_{task}"]
        record = read_jsonl(pmdata_records / "pmdata" / f"{task}.eval.jsonl")[index]
        context = build_context(record, spec, tokenizer, chat, "compact" if index else "seed")
        items.append((context, [answer_continuation(label, context) for label in spec.label_space]))
    assert len({len(tokenizer(c).input_ids) for c, _ in items}) == 3  # padding really happens
    scorer = LabelScorer(model, tokenizer)
    alone = [scorer.score(context, options, special_tokens=not chat) for context, options in items]
    batched = scorer.score_batch(items, special_tokens=not chat)
    for one, many in zip(alone, batched, strict=True):
        assert many == pytest.approx(one, abs=2e-3)
