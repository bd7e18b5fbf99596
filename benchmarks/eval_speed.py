"""Evaluation speed: our `score` evaluator vs a HealthSLM-Bench-style loop, same examples, same model.

The seed loop: its raw prompt (no chat template), batch 1, greedy `generate` of 20 new tokens, its regex.
Ours: likelihood scoring over the label set (all answers in the prompt's forward pass; few-shot header
encoded once per task), in the seed prompt format and in the compact one. Prints examples/s, the ratios and
both invalid rates. The header is a one-time cost per task and mode, so the ratio grows with the number of
examples: it runs on `eval.limit` examples (params.yaml, 25), what the default `dvc repro` evaluates, and also
prints the per-example ("steady") ratio that a full-size run (eval.limit: null, 299-500) approaches.

Then open-ended generation (MedQuAD answers, eval.text_max_new_tokens each): batch 1 against batches of
eval.text_batch_size grouped by length, with how many texts came out identical.

Everything printed also goes to reports/benchmarks/eval_speed.json (--out), with the CPU that measured it:
The results page's benchmark table is read from that committed file.

    python benchmarks/eval_speed.py [--examples N] [--task pmdata_fatigue] [--modes zs,fs-3,fs-10]
                                    [--text-examples 16]

Needs the records of `dvc repro` (or `healthslm prepare --dataset pmdata`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from healthslm.data.registry import all_tasks
from healthslm.evaluate import Runner, _fewshot_examples, explain
from healthslm.generation import generate, parse_answer
from healthslm.io import write_json
from healthslm.models.loader import load_model_and_tokenizer
from healthslm.models.registry import resolve_model
from healthslm.params import load_params
from healthslm.paths import EVAL_BENCHMARK
from healthslm.prepare import read_records
from healthslm.prompts import answer_continuation, build_context, shared_prefix
from healthslm.resources import cpu_name
from healthslm.scoring import LabelScorer


def seed_loop(model, tokenizer, spec, records, examples) -> tuple[float, float]:
    invalid, start = 0, time.perf_counter()
    for record in records:
        context = build_context(record, spec, tokenizer, False, "seed", examples)
        out = generate(model, tokenizer, context, 20, special_tokens=True)
        invalid += parse_answer(spec, out.text) is None
    return len(records) / (time.perf_counter() - start), invalid / len(records)


def score_loop(model, tokenizer, spec, records, examples, prompt_format: str) -> tuple[float, float]:
    """(examples/s over the whole run, seconds spent encoding the shared prefix)."""
    scorer = LabelScorer(model, tokenizer)
    start = time.perf_counter()
    first = build_context(records[0], spec, tokenizer, True, prompt_format, examples)
    answers = [answer_continuation(a, first) for a in spec.spoken_answers]
    scorer.set_shared_prefix(shared_prefix(first, records[0], spec, prompt_format), special_tokens=False)
    prefix_s = time.perf_counter() - start
    for record in records:
        scorer.score(build_context(record, spec, tokenizer, True, prompt_format, examples), answers, False)
    return len(records) / (time.perf_counter() - start), prefix_s


def text_generation(model, tokenizer, records_dir: Path, count: int) -> dict:
    """The evaluator's own `explain` (length-bucketed batches) against batch-1 `generate`."""
    params, spec = load_params(), all_tasks()["medquad_answer"]
    settings = params.eval
    records = read_records(records_dir, spec.dataset, spec.name, "eval")[:count]
    contexts = [build_context(record, spec, tokenizer, True) for record in records]
    start = time.perf_counter()
    singles = [generate(model, tokenizer, c, settings.text_max_new_tokens, False).text for c in contexts]
    single_rate = len(contexts) / (time.perf_counter() - start)
    runner = Runner(
        params, model, tokenizer, True, "seed", scorer=None, numbers=None, dtype="float32", numerics={}
    )
    start = time.perf_counter()
    rows, _ = explain(runner, spec, records)
    batch_rate = len(contexts) / (time.perf_counter() - start)
    same = sum(row["answer"] == text for row, text in zip(rows, singles, strict=True))
    print(f"\n{spec.key}, {len(contexts)} prompts, {settings.text_max_new_tokens} new tokens")
    print(f"{'batch 1':28} {single_rate:10.3f} examples/s")
    print(
        f"{f'batches of {settings.text_batch_size} by length':28} {batch_rate:10.3f} examples/s"
        f" {batch_rate / single_rate:6.1f}x, {same}/{len(contexts)} texts identical"
    )
    return {
        "task": spec.key,
        "prompts": len(contexts),
        "batch_size": settings.text_batch_size,
        "batch_1_examples_per_s": round(single_rate, 3),
        "batched_examples_per_s": round(batch_rate, 3),
        "speed_up": round(batch_rate / single_rate, 2),
        "identical_texts": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=load_params().eval.limit)
    parser.add_argument("--task", default="pmdata_fatigue")
    parser.add_argument("--records", type=Path, default=Path("artifacts/records"))
    parser.add_argument("--modes", default="zs,fs-3,fs-10", help="zs and/or fs-k, comma-separated")
    parser.add_argument("--text-examples", type=int, default=16, help="MedQuAD prompts (0: skip)")
    parser.add_argument("--out", type=Path, default=EVAL_BENCHMARK)
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = all_tasks()[args.task]
    model, tokenizer = load_model_and_tokenizer(resolve_model("smollm2-135m"), dtype=torch.float32)
    records = read_records(args.records, spec.dataset, spec.name, "eval")[: args.examples]
    train = read_records(args.records, spec.dataset, spec.name, "train")
    print(
        f"{spec.key}, {len(records)} examples, SmolLM2-135M-Instruct fp32, {torch.get_num_threads()} threads"
    )
    print(
        f"{'mode':5} {'evaluator':28} {'examples/s':>10} {'invalid':>8} {'speed-up':>9}"
        f" {'header s':>9} {'steady speed-up':>16}"
    )
    result = {"task": spec.key, "examples": len(records), "model": "SmolLM2-135M-Instruct fp32"}
    result |= {"threads": torch.get_num_threads(), "cpu": cpu_name(), "modes": {}}
    for mode in args.modes.split(","):
        shots = int(mode.split("-")[1]) if mode.startswith("fs-") else 0
        examples, _ = _fewshot_examples(spec, shots, args.records, train)
        base_rate, base_invalid = seed_loop(model, tokenizer, spec, records, examples)
        print(f"{mode:5} {'seed loop (generate+regex)':28} {base_rate:10.3f} {base_invalid:8.0%} {1:9.1f}x")
        row = result["modes"][mode] = {
            "seed_loop": {"examples_per_s": round(base_rate, 3), "invalid_rate": round(base_invalid, 3)}
        }
        for prompt_format in ("seed", "compact"):
            rate, prefix_s = score_loop(model, tokenizer, spec, records, examples, prompt_format)
            steady = (len(records) / rate - prefix_s) / len(records)  # seconds per example after the header
            label = f"score, {prompt_format} prompt"  # an answer from the label set: never invalid
            print(
                f"{mode:5} {label:28} {rate:10.3f} {0:8.0%} {rate / base_rate:9.1f}x"
                f" {prefix_s:9.2f} {1 / steady / base_rate:15.1f}x"
            )
            row[f"score_{prompt_format}"] = {
                "examples_per_s": round(rate, 3),
                "invalid_rate": 0.0,
                "speed_up": round(rate / base_rate, 1),
                "header_s": round(prefix_s, 2),
                "steady_speed_up": round(1 / steady / base_rate, 1),
            }
    if args.text_examples:
        result["text_generation"] = text_generation(model, tokenizer, args.records, args.text_examples)
    write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
