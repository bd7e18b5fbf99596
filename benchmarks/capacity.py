"""Memory and speed of each preset's shape on this machine: a LoRA train step and scoring, random weights.

    python benchmarks/capacity.py [--presets smollm2-135m,tinyllama] [--out reports/benchmarks/capacity.json]

A model of the preset's exact architecture (models/presets/<name>.yaml `architecture:`) with random weights
stands in for the real one, so no download is needed. Each measurement runs in its own process (its peak RSS
is its own):
- train, today's configuration (before the memory plan): one padding-free batch of 4 x 768 tokens through
  TRL's CPU head (every position projected onto the vocabulary, plus entropy), no checkpointing;
- train, healthslm's: the same tokens with the answer-only LM head and the plan for that batch;
- train, healthslm's at the preset's defaults: its largest batch (batch_size x max_length) under the plan;
- scoring: a 640-token prefill in float32 and in bfloat16 autocast.
Each sequence ends in 8 answer tokens (the closed tasks' answers are shorter). tokens/s: the largest
micro-batch's forward and backward, after a short warm-up micro-batch and optimizer step; peak RSS: the
process's, which holds the weights, Adam's state and that micro-batch. Ratios compare runs of this one
invocation, on the CPU it names.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ISSUE_BATCH = (4, 768)  # the configuration the issue measured: 4 x 768 tokens, padding-free
ANSWER_TOKENS = 8
SCORE_TOKENS = 640


def _batch(vocab: int, sequences: int, length: int, seed: int):
    """A padding-free batch: `sequences` random sequences concatenated, positions restarting at each."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (1, sequences * length), generator=generator)
    positions = torch.arange(length).repeat(sequences).unsqueeze(0)
    labels = torch.full_like(ids, -100)
    for end in range(length, sequences * length + 1, length):
        labels[0, end - ANSWER_TOKENS : end] = ids[0, end - ANSWER_TOKENS : end]
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def train_step(preset_name: str, variant: str, budget_gb: float | None) -> dict:
    import torch
    from peft import get_peft_model

    from healthslm.models.capacity import default_budget_gb, plan_training, twin
    from healthslm.models.registry import load_preset
    from healthslm.resources import peak_rss_mb
    from healthslm.train import answer_only_loss, lora_config

    preset = load_preset(preset_name)
    arch, recipe = preset.architecture, preset.recipe
    model = twin(arch)
    today = variant == "today"
    sequences, length = (
        ISSUE_BATCH if variant in ("today", "ours") else (recipe.batch_size, recipe.max_length)
    )
    budget = budget_gb or default_budget_gb()
    if today:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        plan = None
        per_batch, accum = sequences, 1
    else:
        plan = plan_training(
            arch, sequences, 1, length, [ANSWER_TOKENS] * sequences, budget, None, packed=False
        )
        if plan is None:
            return {"preset": preset_name, "variant": variant, "error": f"one example exceeds {budget} GB"}
        per_batch, accum = plan.batch_size, plan.grad_accum
        if plan.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, lora_config(recipe))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def micro_batch(batch: dict, items: int) -> None:
        if today:
            out = model(**batch, fused_lm_head=True, use_cache=False)
            loss = -out.log_probs.sum() / out.label_mask.sum()
        else:
            loss = answer_only_loss(model, batch, items)
        loss.backward()

    # Warm-up: a short micro-batch and an optimizer step (kernels, allocator, Adam's state).
    micro_batch(_batch(arch.vocab_size, 1, 128, 0), ANSWER_TOKENS)
    optimizer.step()
    optimizer.zero_grad()
    # Timed: the largest micro-batch (a step repeats it `accum` times; LoRA's optimizer step is negligible).
    started = time.perf_counter()
    micro_batch(_batch(arch.vocab_size, per_batch, length, 1), per_batch * ANSWER_TOKENS)
    seconds = time.perf_counter() - started
    return {
        "preset": preset_name,
        "variant": variant,
        "tokens": sequences * length,
        "batch": f"{per_batch} x {length} tokens x accum {accum}",
        "checkpointing": bool(plan and plan.checkpointing),
        "estimated_activations_gb": plan.estimated_gb if plan else None,
        "budget_gb": budget if plan else None,
        "train_tokens_per_s": round(per_batch * length / seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def scoring(preset_name: str) -> dict:
    import torch

    from healthslm.models.capacity import twin
    from healthslm.models.registry import load_preset
    from healthslm.resources import peak_rss_mb

    arch = load_preset(preset_name).architecture
    model = twin(arch)
    ids = torch.randint(3, arch.vocab_size, (1, SCORE_TOKENS), generator=torch.Generator().manual_seed(0))
    speeds = {}
    for dtype in ("float32", "bfloat16"):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
        with torch.inference_mode(), autocast:
            model(ids[:, :64])  # warm-up
            started = time.perf_counter()
            model(ids)
            speeds[dtype] = round(SCORE_TOKENS / (time.perf_counter() - started), 1)
    return {
        "preset": preset_name,
        "score_tokens_per_s": speeds,
        "score_peak_rss_mb": peak_rss_mb(),
        "parameters_m": round(arch.parameters / 1e6, 1),
    }


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="smollm2-135m,tinyllama")
    parser.add_argument(
        "--budget-gb", type=float, default=None, help="activation budget (default: 10 %% of RAM)"
    )
    parser.add_argument("--out", default="reports/benchmarks/capacity.json")
    parser.add_argument("--run", nargs=2, help=argparse.SUPPRESS)  # internal: preset, variant
    args = parser.parse_args()
    if args.run:
        preset, variant = args.run
        result = scoring(preset) if variant == "score" else train_step(preset, variant, args.budget_gb)
        print(json.dumps(result))
        return

    from healthslm.models.capacity import default_budget_gb
    from healthslm.resources import cpu_name

    budget = ["--budget-gb", str(args.budget_gb)] if args.budget_gb else []
    rows = {}
    for preset in args.presets.split(","):
        row = rows[preset] = {}
        for variant in ("today", "ours", "ours-default", "score"):
            row[variant] = _child("--run", preset, variant, *budget)
            print(f"{preset:14} {variant:13} {json.dumps(row[variant])}", flush=True)
        today, ours = row["today"], row["ours"]
        if "error" not in today and "error" not in ours:
            row["ratio_to_today"] = {
                "train_tokens_per_s": round(ours["train_tokens_per_s"] / today["train_tokens_per_s"], 2),
                "peak_rss": round(ours["peak_rss_mb"] / today["peak_rss_mb"], 2),
            }
            print(f"{preset:14} ours / today: {row['ratio_to_today']}", flush=True)
    result = {
        "cpu": cpu_name(),
        "cores": len(__import__("os").sched_getaffinity(0)),
        "budget_gb": args.budget_gb or default_budget_gb(),
        "command": "python benchmarks/capacity.py " + " ".join(sys.argv[1:]),
        "presets": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
