"""Evaluation speed: our `score` evaluator vs a HealthSLM-Bench-style loop, same examples, same model.

The seed loop: its raw prompt (no chat template), batch 1, greedy `generate` of 20 new tokens, its regex.
Ours: likelihood scoring over the label set (KV cache shared by all answers; few-shot header encoded once),
in the seed prompt format and in the compact one. Prints examples/s, the ratios and both invalid rates.

    python benchmarks/eval_speed.py [--examples 10] [--task pmdata_fatigue] [--modes zs,fs-3,fs-10]

Needs the records of `dvc repro` (or `healthslm prepare --dataset pmdata`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from healthslm.data.registry import all_tasks
from healthslm.evaluate import _fewshot_examples
from healthslm.generation import generate, parse_answer
from healthslm.models.loader import load_model_and_tokenizer
from healthslm.models.registry import resolve_model
from healthslm.prepare import read_records
from healthslm.prompts import answer_continuation, build_context, shared_prefix
from healthslm.scoring import LabelScorer


def seed_loop(model, tokenizer, spec, records, examples) -> tuple[float, float]:
    invalid, start = 0, time.perf_counter()
    for record in records:
        context = build_context(record, spec, tokenizer, False, "seed", examples)
        out = generate(model, tokenizer, context, 20, special_tokens=True)
        invalid += parse_answer(spec, out.text) is None
    return len(records) / (time.perf_counter() - start), invalid / len(records)


def score_loop(model, tokenizer, spec, records, examples, prompt_format: str) -> tuple[float, float]:
    scorer = LabelScorer(model, tokenizer)
    answers = [answer_continuation(a) for a in spec.spoken_answers]
    start = time.perf_counter()
    first = build_context(records[0], spec, tokenizer, True, prompt_format, examples)
    scorer.set_shared_prefix(shared_prefix(first, records[0], spec, prompt_format), special_tokens=False)
    for record in records:
        scorer.score(build_context(record, spec, tokenizer, True, prompt_format, examples), answers, False)
    return len(records) / (time.perf_counter() - start), 0.0  # an answer from the label set is always valid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--task", default="pmdata_fatigue")
    parser.add_argument("--records", type=Path, default=Path("artifacts/records"))
    parser.add_argument("--modes", default="zs,fs-3,fs-10", help="zs and/or fs-k, comma-separated")
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = all_tasks()[args.task]
    model, tokenizer = load_model_and_tokenizer(resolve_model("smollm2-135m"), dtype=torch.float32)
    records = read_records(args.records, spec.dataset, spec.name, "eval")[: args.examples]
    train = read_records(args.records, spec.dataset, spec.name, "train")
    print(
        f"{spec.key}, {len(records)} examples, SmolLM2-135M-Instruct fp32, {torch.get_num_threads()} threads"
    )
    print(f"{'mode':5} {'evaluator':28} {'examples/s':>10} {'invalid':>8} {'speed-up':>9}")
    for mode in args.modes.split(","):
        shots = int(mode.split("-")[1]) if mode.startswith("fs-") else 0
        examples = _fewshot_examples(spec, shots, args.records, train)
        base_rate, base_invalid = seed_loop(model, tokenizer, spec, records, examples)
        print(f"{mode:5} {'seed loop (generate+regex)':28} {base_rate:10.3f} {base_invalid:8.0%} {1:9.1f}x")
        for prompt_format in ("seed", "compact"):
            rate, invalid = score_loop(model, tokenizer, spec, records, examples, prompt_format)
            label = f"score, {prompt_format} prompt"
            print(f"{mode:5} {label:28} {rate:10.3f} {invalid:8.0%} {rate / base_rate:9.1f}x")


if __name__ == "__main__":
    main()
