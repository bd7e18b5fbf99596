"""Training throughput of healthslm's configuration against TRL's defaults, same model, data and steps.

    python benchmarks/train_speed.py [--steps 8] [--examples 12] [--variants ours,trl-defaults]

Run from the project root after `dvc repro` (it reads artifacts/records/). Each variant trains in its own
process (so peak RSS is its own) for the same optimizer steps on the same prompt/completion pairs, with the
same batch size; tokens/s counts non-padding tokens and skips the first step (one-off warm-up).
Prints one row per variant and the ratio of ours to TRL's defaults.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    # TRL's SFTConfig defaults (gradient checkpointing on, bf16 on, padded batches), CPU made explicit.
    "trl-defaults": {},
    # healthslm's on CPU: no gradient checkpointing, padding-free batches, fp32 (dtype auto).
    "ours": {"gradient_checkpointing": False, "padding_free": True, "max_length": None, "bf16": False},
    "ours-bf16": {"gradient_checkpointing": False, "padding_free": True, "max_length": None},
    "ours-padded": {"gradient_checkpointing": False},
}


def run_variant(name: str, steps: int, examples_per_task: int, batch_size: int) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from healthslm.models.registry import resolve_model
    from healthslm.params import Params
    from healthslm.train import load_for_training, lora_config, training_examples

    params = Params.model_validate({"train": {"examples_per_task": examples_per_task}})
    preset = resolve_model(params.model)
    recipe = preset.recipe
    model, tokenizer = load_for_training(preset, "lora", bf16=False)
    examples, _ = training_examples(params, tokenizer, True, recipe.max_length)

    class Clock(TrainerCallback):
        marks: list[tuple[float, int]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                self.marks.append((time.perf_counter(), int(logs["num_tokens"])))

    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            use_cpu=True,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=recipe.learning_rate,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            **({"max_length": recipe.max_length} | VARIANTS[name]),
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(examples),
            processing_class=tokenizer,
            peft_config=lora_config(recipe),
            callbacks=[Clock()],
        )
        trainer.train()
    (t0, n0), (t1, n1) = Clock.marks[0], Clock.marks[-1]
    return {
        "variant": name,
        "tokens_per_s": round((n1 - n0) / (t1 - t0), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--examples", type=int, default=12, help="training examples per task")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--variants", default="trl-defaults,ours")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one variant in this process
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_variant(args.run, args.steps, args.examples, args.batch_size)))
        return
    rows = []
    for name in args.variants.split(","):
        cmd = [sys.executable, __file__, "--run", name, "--steps", str(args.steps)]
        cmd += ["--examples", str(args.examples), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path.cwd())
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{name:14} {rows[-1]['tokens_per_s']:8.1f} tok/s   peak RSS {rows[-1]['peak_rss_mb']:6} MB")
    by_name = {row["variant"]: row for row in rows}
    if {"ours", "trl-defaults"} <= set(by_name):
        ours, trl = by_name["ours"], by_name["trl-defaults"]
        print(
            f"ours / TRL defaults: {ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x tokens/s, "
            f"{ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x peak RSS "
            f"({args.steps} steps, batch {args.batch_size}, {args.examples} examples per task)"
        )


if __name__ == "__main__":
    main()
