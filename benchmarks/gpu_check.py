"""One CUDA GPU, checked in minutes: the TinyLlama twin at full depth (models/twin.py; random weights, the
real Llama 2 tokenizer) through LoRA training (and QLoRA where bitsandbytes is present) and label
scoring, with the GPU's answers compared with the CPU's on the same rows.
Timings and peak VRAM go to a JSON file.

    python benchmarks/gpu_check.py [--rows 8] [--steps 4] [--out reports/benchmarks/gpu_check.json]

Written for a GPU machine that reaches no package index: it needs torch (CUDA), transformers, peft,
accelerate and scikit-learn, plus small wheels carried along (trl, toon-format, pydantic, ...); nothing here
imports dvc, Great Expectations, W&B or llama.cpp. Records: artifacts/records/pmdata (`dvc repro prepare`);
the vocabulary file: the healthslm cache (HEALTHSLM_CACHE), as models/llama_sdist.py pins it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch

from healthslm.io import write_json
from healthslm.models.registry import effective_recipe, resolve_model
from healthslm.models.twin import build_twin
from healthslm.params import parse_params
from healthslm.prepare import available_tasks, read_records
from healthslm.prompts import answer_continuation, build_context
from healthslm.scoring import LabelScorer
from healthslm.train import (
    answer_only_trainer,
    load_for_training,
    lora_config,
    memory_plan,
    sft_config,
    training_examples,
)


def train_run(folder: Path, method: str, steps: int, records: Path, work: Path) -> dict:
    from datasets import Dataset

    params = parse_params(
        {"model": str(folder), "data": {"datasets": ["pmdata"]},
         "train": {"method": method, "examples_per_task": 8, "max_steps": steps, "wandb": {"enabled": False}}}
    )  # fmt: skip
    preset = resolve_model(str(folder))
    recipe = effective_recipe(preset, params.train.recipe_overrides())
    model, tokenizer = load_for_training(preset, method, bf16=False)
    examples, _ = training_examples(params, tokenizer, True, recipe.max_length, records)
    plan = memory_plan(params, recipe, model, tokenizer, examples)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, plan.checkpointing)
    torch.cuda.reset_peak_memory_stats()
    trainer = answer_only_trainer(
        model=model,
        args=sft_config(params, recipe, plan, False, work / method),
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=lora_config(recipe),
    )
    started = time.perf_counter()
    result = trainer.train()
    return {
        "method": method,
        "steps": trainer.state.global_step,
        "seconds": round(time.perf_counter() - started, 1),
        "train_loss": round(result.training_loss, 4),
        "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "device": str(next(trainer.model.parameters()).device),
    }


def scores_on(
    device: str, folder: Path, items: list[tuple[str, list[str]]], batch: int
) -> tuple[list[list[float]], float]:
    """Every item's scores, `batch` items per forward pass (eval.score_batch_size), and the seconds taken."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    scorer = LabelScorer(model, tokenizer)
    started = time.perf_counter()
    scores = []
    for start in range(0, len(items), batch):
        scores += scorer.score_batch(items[start : start + batch], special_tokens=False)
    return scores, round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=8, help="eval rows per PMData task scored on both devices"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--gpu-batch", type=int, default=16, help="rows per forward pass on the GPU")
    parser.add_argument("--records", default="artifacts/records")
    parser.add_argument("--out", default="reports/benchmarks/gpu_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here")
    records, result = Path(args.records), {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="healthslm-gpu-") as tmp:
        started = time.perf_counter()
        folder = build_twin("tinyllama", Path(tmp) / "tinyllama")  # full depth: 22 layers, 1.1B
        result["twin_s"] = round(time.perf_counter() - started, 1)
        methods = ["lora"] + (["qlora"] if importlib.util.find_spec("bitsandbytes") else [])
        result["train"] = [train_run(folder, m, args.steps, records, Path(tmp)) for m in methods]
        tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(folder)
        params = parse_params({"data": {"datasets": ["pmdata"]}})
        items = []
        for spec in available_tasks(["pmdata"], records):
            for record in read_records(records, spec.dataset, spec.name, "eval")[: args.rows]:
                context = build_context(record, spec, tokenizer, True, params.eval.prompt_format)
                items.append((context, [answer_continuation(a, context) for a in spec.spoken_answers]))
        torch.cuda.reset_peak_memory_stats()
        gpu, gpu_s = scores_on("cuda", folder, items, args.gpu_batch)
        result["score_peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        cpu, cpu_s = scores_on("cpu", folder, items, 1)
    same = sum(max(range(len(g)), key=g.__getitem__) == max(range(len(c)), key=c.__getitem__)
               for g, c in zip(gpu, cpu, strict=True))  # fmt: skip
    gaps = [abs(a - b) for g, c in zip(gpu, cpu, strict=True) for a, b in zip(g, c, strict=True)]
    result["scoring"] = {
        "rows": len(items),
        "gpu_batch": args.gpu_batch,
        "gpu_s": gpu_s,
        "cpu_s": cpu_s,
        "cpu_over_gpu": round(cpu_s / gpu_s, 1),
        "same_answer": same,
        "max_loglik_difference": round(max(gaps), 5),
    }
    write_json(Path(args.out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
