"""The reproducibility canary: numbers the embedded model must give on any machine the suite runs on.

- Label log-likelihoods (fp32) of the `score` strategy on a few eval rows of several tasks, zero- and
  few-shot, as `evaluate` computes them (chat template, seed prompts, shared few-shot prefix).
- The per-step losses of a short LoRA run on PMData records.

`python -m tests.canary` (repository root, after `dvc repro prepare`) writes both into tests/canary/ from
this machine's run: do it only when a change is meant to move the numbers, and say so in the commit.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_DIR = ROOT / "tests" / "canary"
LABELS_FILE = EXPECTED_DIR / "label_logliks.json"
LOSSES_FILE = EXPECTED_DIR / "train_losses.json"
TASKS = ("pmdata_fatigue", "aw_fb_activity", "pubmedqa_answer", "dreaddit_stress")
ROWS = 2  # eval rows per task: a seeded label-stratified sample, as eval.limit draws
MODES = {"zs": 0, "fs-3": 3}
# Stated tolerances. Pinned kernels give the same bits for any thread count on one CPU (measured: AMD EPYC,
# 1 and 2 threads); across CPU vendors MKL may take another branch (on AMD it honours only its SSE2
# branch), where label log-likelihoods moved by up to 5e-5. A change to the model, prompts or scoring moves
# them by far more (the bf16 autocast the probe used to pick: up to 0.36).
LOGLIK_TOLERANCE = 2e-4
LOSS_TOLERANCE = 2e-3  # relative, per step: three optimizer steps compound the differences above
TRAIN = {
    "examples_per_task": 2,
    "max_steps": 3,
    "batch_size": 1,
    "grad_accum": 1,
    "save_steps": 100,
    "merge": False,
    "wandb": {"enabled": False},
}


def label_logliks(records_dir: Path, model, tokenizer) -> dict[str, dict[str, float]]:
    """{mode/task/record id: {spoken answer: log-likelihood}} at float32."""
    from healthslm.evaluate import _fewshot_examples
    from healthslm.models import finetuned as models
    from healthslm.models.registry import resolve_model
    from healthslm.params import ALL_DATASETS, Params
    from healthslm.prepare import available_tasks, eval_sample, read_records
    from healthslm.prompts import answer_continuation, build_context, shared_prefix
    from healthslm.scoring import LabelScorer

    seed = Params().base.seed
    use_chat = models.use_chat_template(models.ModelChoice(resolve_model("smollm2-135m")), tokenizer)
    scorer = LabelScorer(model, tokenizer, "float32")
    found: dict[str, dict[str, float]] = {}
    for spec in available_tasks(ALL_DATASETS, records_dir):
        if spec.key not in TASKS:
            continue
        train = read_records(records_dir, spec.dataset, spec.name, "train")
        rows = eval_sample(read_records(records_dir, spec.dataset, spec.name, "eval"), spec, ROWS, seed)
        for mode, shots in MODES.items():
            examples, _ = _fewshot_examples(spec, shots, records_dir, train)
            contexts = [build_context(r, spec, tokenizer, use_chat, "seed", examples) for r in rows]
            scorer.set_shared_prefix(shared_prefix(contexts[0], rows[0], spec, "seed"), not use_chat)
            for record, context in zip(rows, contexts, strict=True):
                answers = [answer_continuation(a, context) for a in spec.spoken_answers]
                values = scorer.score(context, answers, not use_chat)
                found[f"{mode}/{spec.key}/{record['id']}"] = dict(
                    zip(spec.spoken_answers, values, strict=True)
                )
            scorer.set_shared_prefix(None)
    return found


def train_losses(work: Path, records_dir: Path, threads: int | None) -> list[float]:
    """Per-step losses of `healthslm train` on PMData records, in a fresh process with `threads` threads."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "artifacts").mkdir(exist_ok=True)
    if not (work / "artifacts" / "records").exists():
        (work / "artifacts" / "records").symlink_to(records_dir.resolve())
    params = {"model": "smollm2-135m", "data": {"datasets": ["pmdata"]}, "train": TRAIN}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "healthslm", "train"]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    with (work / "reports" / "train" / "plots" / "metrics" / "loss.tsv").open(newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh, delimiter="\t")]


def machine() -> str:
    from healthslm.resources import cpu_name

    return f"{cpu_name()} ({platform.machine()}, {os.cpu_count()} CPUs)"


def main() -> None:
    import torch

    from healthslm.models.dtype import cpu_kernels
    from healthslm.models.loader import load_model_and_tokenizer
    from healthslm.models.registry import resolve_model

    records = ROOT / "artifacts" / "records"
    model, tokenizer = load_model_and_tokenizer(resolve_model("smollm2-135m"))
    made = {"machine": machine(), "torch": torch.__version__, "cpu_kernels": cpu_kernels()}
    EXPECTED_DIR.mkdir(exist_ok=True)
    scores = label_logliks(records, model, tokenizer)
    LABELS_FILE.write_text(json.dumps({"made_on": made, "rows": scores}, indent=1) + "\n")
    losses = train_losses(ROOT / "artifacts" / "canary-train", records, threads=None)
    LOSSES_FILE.write_text(json.dumps({"made_on": made, "train": TRAIN, "losses": losses}, indent=1) + "\n")
    print(f"{len(scores)} rows, {len(losses)} losses written to {EXPECTED_DIR.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
