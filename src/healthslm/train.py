"""`healthslm train`: fine-tune the model on the instruction sets with TRL: LoRA, QLoRA (NF4) or full.

The training set is one mixture of every available task (or `train.datasets`), each record rendered exactly
as the evaluator renders it (`train.prompt_format`, the model's chat template), with the loss on the answer
tokens only. The model's recipe (models/presets/<model>.yaml) sets rank, learning rate, length, batch...;
params.yaml `train:` overrides any field.

Checkpoints go to artifacts/checkpoints/<run>/ every `train.save_steps` steps. That folder is not a DVC
output, so it survives a killed stage, and re-running the stage resumes from its last complete checkpoint;
a finished run stays there (the latest only), so a re-run with the same run key copies it instead of training.
Without `ft` in eval.mode nothing is trained: artifacts/model/training.json says so, and the stages after it
use the pretrained model.
Writes artifacts/model/ (adapter/, merged/, training.json) and reports/train/ (DVCLive metrics and plots),
and logs the run to W&B: offline under ./wandb/ unless `train.wandb.online` is set and WANDB_API_KEY exists.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from healthslm.augmented import explanation, kept_responses
from healthslm.errors import HealthSLMError
from healthslm.io import atomic_dir, write_json
from healthslm.models import finetuned as models
from healthslm.models.capacity import Architecture, TrainPlan, default_budget_gb, plan_training
from healthslm.models.dtype import numerics
from healthslm.models.loader import load_model_and_tokenizer
from healthslm.models.registry import ModelPreset, Recipe, effective_recipe, resolve_model
from healthslm.params import Params, TrainParams
from healthslm.paths import (
    AUGMENTED_DIR,
    CHECKPOINTS_DIR,
    MODEL_DIR,
    RECORDS_DIR,
    TRAIN_CURVES_DIR,
    TRAIN_REPORTS,
    TRAINING_FILE,
    WANDB_ROOT,
)
from healthslm.prepare import available_tasks, read_records, training_order
from healthslm.prompts import answer_continuation, build_context, starts_a_word, trainer_prompt
from healthslm.resources import cpu_name, peak_rss_mb
from healthslm.tasks import TaskSpec

# Per task in training.json: records trained on, dropped (prompt too long), cut (answer too long); with
# augmented targets also those with a kept response and those left out for lack of one.
LENGTH_COUNTS = ("examples", "dropped_long_prompt", "cut_long_answer")
RESPONSE_COUNTS = ("with_response", "left_out_without_response")
TARGET_COUNTS = LENGTH_COUNTS + RESPONSE_COUNTS


def completion(record: dict, spec: TaskSpec, explained: str | None = None) -> str:
    """The target after the prompt. A class label alone (" 3.", " yes.": the continuation the scorer ranks)
    or followed by an explanation (" yes. Reasoning: ..."); a number as the reference states it; an
    open-ended task's reference answer, or the response given in its place."""
    if spec.closed:
        spoken = spec.spoken_answers[spec.label_space.index(str(record["label"]))]
        return answer_continuation(spoken, "") + (f" {explained}" if explained else "")
    output = explained or record["output"]
    if spec.answer_prefix and not spec.input_first and output.startswith(spec.answer_prefix):
        return output[len(spec.answer_prefix) :]  # " 16.46." — the number the decoder is scored on
    return f" {output}" if spec.input_first else output


def record_targets(record: dict, spec: TaskSpec, response: str | None, train: TrainParams) -> list[str]:
    """The completions one record trains on (train.targets); none when it has no kept response and
    train.without_response is drop."""
    label = completion(record, spec)
    if train.targets == "label":
        return [label]
    if response is None:
        return [label] if train.without_response == "label" else []
    augmented = completion(record, spec, explanation(spec, response))
    return [augmented] if train.targets == "augmented" else [label, augmented]


def _answer_room(prompt: str, tokenizer, max_length: int) -> int | None:
    """Tokens left for an answer after the prompt within `max_length`; None if fewer than 8."""
    room = max_length - 1 - len(tokenizer(prompt).input_ids)  # as TRL tokenizes it: with special tokens
    return room if room >= 8 else None


def _within_length(prompt: str, answer: str, tokenizer, room: int) -> tuple[str, bool]:
    """(the answer, whether it was cut) within `room` tokens after its prompt."""
    if starts_a_word(prompt):  # as answer_continuation gives the scorer
        answer = answer.lstrip(" ")
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    return (tokenizer.decode(answer_ids[:room]), True) if len(answer_ids) > room else (answer, False)


def training_examples(
    params: Params,
    tokenizer,
    use_chat: bool,
    max_length: int,
    records_dir: Path = RECORDS_DIR,
    augmented_dir: Path = AUGMENTED_DIR,
) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Prompt/completion pairs of `examples_per_task` records per task (train.targets: one or two per
    record), each within `max_length` tokens. A prompt too long to leave room for an answer drops its
    record; a long answer is cut to fit."""
    train = params.train
    datasets = train.datasets or params.data.datasets
    if unknown := sorted(set(datasets) - set(params.data.datasets)):
        raise HealthSLMError(f"params.yaml: train.datasets: {', '.join(unknown)} not in data.datasets")
    examples, counts = [], {}
    for spec in available_tasks(datasets, records_dir):
        records = training_order(read_records(records_dir, spec.dataset, spec.name, "train"), spec, params)
        responses = kept_responses(spec, augmented_dir) if train.targets != "label" else {}
        count = dict.fromkeys(TARGET_COUNTS, 0)
        for record in records:
            if train.examples_per_task and count["examples"] >= train.examples_per_task:
                break
            response = responses.get(record["id"])
            if not (targets := record_targets(record, spec, response, train)):
                count["left_out_without_response"] += 1
                continue
            context = build_context(record, spec, tokenizer, use_chat, train.prompt_format)
            prompt = trainer_prompt(context, tokenizer, use_chat)
            if (room := _answer_room(prompt, tokenizer, max_length)) is None:
                count["dropped_long_prompt"] += 1
                continue
            fitted = [_within_length(prompt, target, tokenizer, room) for target in targets]
            examples += [{"prompt": prompt, "completion": answer} for answer, _ in fitted]
            count["examples"] += 1
            count["cut_long_answer"] += any(cut for _, cut in fitted)
            count["with_response"] += response is not None
        shown = TARGET_COUNTS if train.targets != "label" else LENGTH_COUNTS
        counts[spec.key] = {name: count[name] for name in shown}
    if not examples:
        raise HealthSLMError(f"no training records under {records_dir}/ for {', '.join(datasets)}")
    random.Random(params.base.seed).shuffle(examples)
    return examples, counts


def memory_plan(params: Params, recipe: Recipe, model, tokenizer, examples: list[dict]) -> TrainPlan:
    """Batches and checkpointing whose largest batch fits `train.activation_budget_gb` (module capacity).

    Off GPU a micro-batch holds one example: packing several makes the attention mask explicit, and CPU
    attention then keeps a (tokens x tokens) score matrix per head and layer."""
    budget = params.train.activation_budget_gb or default_budget_gb()
    answers = [len(tokenizer(e["completion"], add_special_tokens=False).input_ids) for e in examples]
    plan = plan_training(
        Architecture.of(model.config),
        recipe.batch_size,
        recipe.grad_accum,
        recipe.max_length,
        answers,
        budget,
        params.train.gradient_checkpointing,
        packed=torch.cuda.is_available(),
    )
    if plan is None:
        raise HealthSLMError(
            f"params.yaml: train.activation_budget_gb: {budget:g} GB cannot hold one example of "
            f"{recipe.max_length} tokens (train.max_length) even with gradient checkpointing: raise the "
            "budget or lower max_length"
        )
    return plan


def run_key(params: Params, recipe: Recipe, bf16: bool, examples: list[dict], plan: TrainPlan) -> str:
    """Identifies a training run: a checkpoint is resumed only by a run with the same key. `train.merge` is
    not part of it: merging changes no weight trained, so a finished run is published with or without the
    merged folder (_publish)."""
    spec = {
        "model": params.model,
        "method": params.train.method,
        "recipe": recipe.model_dump(),
        "bf16": bf16,
        "base_quantization": base_quantization(params.train.method, bf16),
        "seed": params.base.seed,
        "gradient_checkpointing": plan.checkpointing,
        "micro_batch": [plan.batch_size, plan.grad_accum],
        "loss": "answer-only head",
        "examples": hashlib.sha256(json.dumps(examples).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last)."""
    candidates = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for checkpoint in candidates:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return checkpoint
    return None


def rewind_live(live_dir: Path, step: int) -> None:
    """Drop DVCLive rows logged after `step`: the resumed run logs those steps again."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with tsv.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        kept = [row for row in rows if int(row["step"]) <= step]
        with tsv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["step"], delimiter="\t")
            writer.writeheader()
            writer.writerows(kept)


def stage_live(live_dir: Path, resume: bool):
    """DVCLive (public API) writing metrics and plots only: the stage declares them in dvc.yaml itself, so
    no dvc.yaml of its own, no experiment refs, no report."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(dir=str(live_dir), resume=resume, dvcyaml=None, save_dvc_exp=False, report=None)
    except SCMError as exc:  # DVCLive reads the git revision: a repository without commits has none
        raise HealthSLMError(
            f"DVCLive cannot log here ({exc}): commit once (git commit), run again"
        ) from None


class LiveCallback(TrainerCallback):
    """The Trainer's logs into DVCLive, keyed by the optimizer step (a resumed run continues its curves),
    plus training tokens/s. Params are not logged here: DVC records params.yaml itself."""

    def __init__(self, live) -> None:
        self.live = live
        self.tokens = 0  # non-padding tokens trained in this process (TRL's `num_tokens` restarts on resume)
        self.answer_tokens = 0  # of them, the answer tokens the loss is on
        self.seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._began = self._last = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if not logs:
            return
        if "num_tokens" in logs:
            now = time.perf_counter()
            logs["tokens_per_s"] = round((logs["num_tokens"] - self.tokens) / (now - self._last), 2)
            self.tokens, self.seconds, self._last = int(logs["num_tokens"]), now - self._began, now
            self.answer_tokens = int(logs.get("answer_tokens", self.answer_tokens))
        if not state.is_world_process_zero:
            return
        from dvclive.utils import standardize_metric_name  # here: training itself needs no DVC

        self.live.step = state.global_step
        curve = "train_runtime" not in logs  # the end-of-run summary: metrics, not curves
        for key, value in logs.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.live.log_metric(standardize_metric_name(key, "dvclive.huggingface"), value, plot=curve)
        if curve:
            self.live.next_step()

    def on_train_end(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero:
            self.live.end()


def wandb_callback(params: Params, run_name: str, config: dict) -> TrainerCallback | None:
    """A W&B run, offline unless the user enabled online mode *and* WANDB_API_KEY is set."""
    settings = params.train.wandb
    if not settings.enabled:
        return None
    online = settings.online and bool(os.environ.get("WANDB_API_KEY"))
    root = WANDB_ROOT.resolve()
    # The env var, not wandb.init's kwarg: the kwarg alone still phones home.
    os.environ["WANDB_MODE"] = "online" if online else "offline"
    os.environ.setdefault("WANDB_DIR", str(root.parent))  # runs land in ./wandb/ (git-ignored)
    os.environ.setdefault("WANDB_CACHE_DIR", str(root / ".cache"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(root / ".config"))
    os.environ.setdefault("WANDB_SILENT", "true")
    root.mkdir(parents=True, exist_ok=True)
    import wandb
    from transformers.integrations import WandbCallback

    wandb.init(project=settings.project, name=run_name, config=config)
    return WandbCallback()


def answer_only_loss(model, inputs: dict, num_items_in_batch=None, stats: dict | None = None) -> torch.Tensor:
    """The SFT loss (cross-entropy on the answer tokens, summed over `num_items_in_batch`), with the LM head
    applied only to the hidden states that predict an answer token. The full-sequence logits (tokens x
    vocabulary, most of a small model's activation memory) are never built: TRL's own head projects every
    position off GPU. `stats` receives the answer tokens' count and how many were the top-1 prediction."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != -100  # position t predicts token t + 1
    forward = {name: value for name, value in inputs.items() if name != "labels"}
    logits = model(**forward, use_cache=False, logits_to_keep=keep).logits
    logits = logits.reshape(-1, logits.size(-1)).float()
    answers = targets[targets != -100]
    loss = torch.nn.functional.cross_entropy(logits, answers, reduction="sum")
    if stats is not None:
        stats["answers"] = answers.numel()
        stats["correct"] = int((logits.detach().argmax(-1) == answers).sum())
    return loss / (num_items_in_batch if num_items_in_batch is not None else max(answers.numel(), 1))


def answer_only_trainer(**kwargs):
    """TRL's SFTTrainer with `answer_only_loss` for training steps (evaluation keeps TRL's). Its per-step
    logs stay TRL's: tokens seen (num_tokens) and the answer tokens' top-1 accuracy (mean_token_accuracy);
    the entropy over the whole vocabulary, which needs every logit, is not computed."""
    from trl import SFTTrainer

    class AnswerOnlySFTTrainer(SFTTrainer):
        answer_tokens = 0  # trained on by this process: the tokens the loss is on

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not model.training or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            stats: dict = {}
            loss = answer_only_loss(model, inputs, num_items_in_batch, stats)
            mask = inputs.get("attention_mask")  # padding-free batches have none: every position counts
            self._total_train_tokens += int(mask.sum() if mask is not None else inputs["input_ids"].numel())
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            self.answer_tokens += stats["answers"]
            self._metrics["train"]["answer_tokens"] = [self.answer_tokens]
            if stats["answers"]:
                self._metrics["train"]["mean_token_accuracy"].append(stats["correct"] / stats["answers"])
            return loss

    return AnswerOnlySFTTrainer(**kwargs)


def base_quantization(method: str, bf16: bool) -> dict | None:
    """QLoRA's 4-bit base, as BitsAndBytesConfig arguments (the compute dtype by name): one source for the
    loader and the run key, so runs of different numerics never share a key."""
    if method != "qlora":
        return None
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16" if bf16 else "float32",
    }


def load_for_training(preset: ModelPreset, method: str, bf16: bool):
    kwargs = {}
    if quantization := base_quantization(method, bf16):
        from transformers import BitsAndBytesConfig

        dtype = getattr(torch, quantization["bnb_4bit_compute_dtype"])
        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization | {"bnb_4bit_compute_dtype": dtype})
    model, tokenizer = load_model_and_tokenizer(preset, dtype=torch.float32, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    lora = recipe.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def sft_config(params: Params, recipe: Recipe, plan: TrainPlan, bf16: bool, run_dir: Path):
    from trl import SFTConfig

    full = params.train.method == "full"
    return SFTConfig(
        output_dir=str(run_dir),
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        gradient_checkpointing=plan.checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        per_device_train_batch_size=plan.batch_size,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=recipe.full_learning_rate if full else recipe.learning_rate,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        # Padding-free batches: the sequences of a batch are concatenated, and transformers' attention masks
        # keep them apart by their position ids (exact; tests/test_train.py checks it). Lengths are already
        # capped by training_examples, so TRL's truncation is off.
        padding_free=True,
        max_length=None,
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="steps",
        save_steps=params.train.save_steps,
        save_total_limit=2,  # the last two: one is complete even if a kill lands mid-save
        report_to="none",  # loggers are the explicit callbacks below
        seed=params.base.seed,
        data_seed=params.base.seed,
        disable_tqdm=False,
    )


def train(
    params: Params,
    records_dir: Path = RECORDS_DIR,
    model_dir: Path = MODEL_DIR,
    checkpoints_dir: Path = CHECKPOINTS_DIR,
    live_dir: Path = TRAIN_REPORTS,
    echo=print,
    augmented_dir: Path = AUGMENTED_DIR,
) -> dict:
    if "ft" not in params.eval.mode:
        return _not_trained(params, model_dir, live_dir, echo)
    preset = resolve_model(params.model)
    recipe = effective_recipe(preset, params.train.recipe_overrides())
    torch.manual_seed(params.base.seed)
    model, tokenizer = load_for_training(preset, params.train.method, params.train.dtype == "bfloat16")
    bf16 = params.train.dtype == "bfloat16"  # autocast; fp32 gives the same numbers on any CPU
    use_chat = models.use_chat_template(models.ModelChoice(preset), tokenizer)
    examples, counts = training_examples(
        params, tokenizer, use_chat, recipe.max_length, records_dir, augmented_dir
    )
    plan = memory_plan(params, recipe, model, tokenizer, examples)
    echo(plan.line(recipe.batch_size, recipe.grad_accum))

    key = run_key(params, recipe, bf16, examples, plan)
    run_dir = checkpoints_dir / key
    if (run_dir / "final" / TRAINING_FILE).exists():
        echo(f"run {key} was trained already ({run_dir}/final): copying it, not training again")
        return _publish(params, preset, run_dir, model_dir, live_dir)
    training = _fit(
        params, preset, (recipe, plan), bf16, (model, tokenizer, use_chat), (examples, counts), run_dir, echo
    )
    if not training:  # not rank 0
        return {}
    for other in checkpoints_dir.iterdir():  # the finished run stays (for a re-run); older runs go
        if other != run_dir:
            shutil.rmtree(other, ignore_errors=True)
    return _publish(params, preset, run_dir, model_dir, live_dir)


def _not_trained(params: Params, model_dir: Path, live_dir: Path, echo) -> dict:
    """No ft mode: record that nothing was trained (export and on-device then use the pretrained model)."""
    info = {"model": params.model, "trained": False, "reason": "eval.mode has no ft"}
    with atomic_dir(model_dir) as tmp:
        write_json(tmp / TRAINING_FILE, info)
    with atomic_dir(live_dir) as tmp:
        write_json(tmp / TRAINING_FILE, info)
        write_json(tmp / "metrics.json", {})
        (tmp / TRAIN_CURVES_DIR.relative_to(TRAIN_REPORTS)).mkdir(parents=True)
    echo("train: eval.mode has no ft, nothing to train")
    return info


def _publish(params: Params, preset: ModelPreset, run_dir: Path, model_dir: Path, live_dir: Path) -> dict:
    """Copy a finished run into the stage's outputs (the run stays for a re-run with the same key), with the
    merged model exactly when train.merge asks for it: merged now if the run was trained without it."""
    final = run_dir / "final"
    merged = final / "merged"
    if params.train.method != "full" and params.train.merge and not merged.is_dir():
        with atomic_dir(merged) as tmp:
            models.save_merged(models.ModelChoice(preset, str(final / "adapter")), tmp)
    unmerged = params.train.method != "full" and not params.train.merge
    with atomic_dir(model_dir) as tmp:
        shutil.copytree(final, tmp, dirs_exist_ok=True)
        if unmerged:  # a run trained with merge on, published with it off
            shutil.rmtree(tmp / "merged", ignore_errors=True)
    training = json.loads((final / TRAINING_FILE).read_text())
    with atomic_dir(live_dir) as tmp:
        shutil.copytree(run_dir / "dvclive", tmp, dirs_exist_ok=True)
        write_json(tmp / TRAINING_FILE, training)
    return training


def _fit(
    params: Params,
    preset: ModelPreset,
    recipes: tuple[Recipe, TrainPlan],
    bf16: bool,
    loaded: tuple,
    data: tuple,
    run_dir: Path,
    echo,
) -> dict:
    """Train (resuming from the run's last complete checkpoint) into run_dir/final/ and run_dir/dvclive/."""
    from datasets import Dataset

    (model, tokenizer, use_chat), (examples, counts), key = loaded, data, run_dir.name
    recipe, plan = recipes

    resume = last_complete_checkpoint(run_dir) if run_dir.exists() else None
    resumed_step = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
    if resume:
        echo(f"resuming run {key} from {resume.name} (step {resumed_step})")
        rewind_live(run_dir / "dvclive", resumed_step)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)

    if params.train.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, plan.checkpointing)
    config = {
        "model": params.model,
        "train": params.train.model_dump(),
        "recipe": recipe.model_dump(),
        "datasets": params.train.datasets or params.data.datasets,
        "run": key,
    }
    is_main = int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun only rank 0 logs and writes
    callbacks: list[TrainerCallback] = []
    if is_main:
        live = stage_live(run_dir / "dvclive", resume=bool(resume))
        live_callback = LiveCallback(live)
        callbacks.append(live_callback)
        if wandb := wandb_callback(params, f"train-{key}", config):
            callbacks.append(wandb)
    trainer = answer_only_trainer(
        model=model,
        args=sft_config(params, recipe, plan, bf16, run_dir),
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=None if params.train.method == "full" else lora_config(recipe),
        callbacks=callbacks,
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    runtime = time.perf_counter() - started

    final = run_dir / "final"
    weights = final / ("merged" if params.train.method == "full" else "adapter")
    trainer.save_model(str(weights))  # every rank: FSDP/ZeRO gather the weights here
    if not is_main:
        return {}
    tokenizer.save_pretrained(weights)
    if params.train.method == "full":
        models.keep_sentencepiece(preset, weights)
    summary = {
        "method": params.train.method,
        "targets": params.train.targets,
        "steps": trainer.state.global_step,
        "resumed_from_step": resumed_step,
        "examples": len(examples),
        "train_loss": round(mean_step_loss(result.training_loss, trainer.state, resumed_step), 4),
        "tokens_per_s": round(live_callback.tokens / max(live_callback.seconds, 1e-9), 1),
        "answer_tokens": live_callback.answer_tokens,  # trained on in this process (since any resume)
        "runtime_s": round(runtime, 1),
        "peak_rss_mb": peak_rss_mb(),
        "cpu": cpu_name(),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "bf16": bf16,
        "numerics": numerics(params.train.dtype, models.weight_files(models.ModelChoice(preset))),
        "base_weights": "nf4" if params.train.method == "qlora" else "float32",
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "memory_plan": {
            "activation_budget_gb": plan.budget_gb,
            "estimated_activations_gb": plan.estimated_gb,
            "gradient_checkpointing": plan.checkpointing,
            "micro_batch": plan.batch_size,
            "grad_accum": plan.grad_accum,
        },
    }
    shown = {name: value for name, value in summary.items() if name not in ("method", "numerics")}
    live.summary.update({f"final/{name}": value for name, value in shown.items()})  # numerics: training.json
    live.make_summary()
    if run := _finish_wandb(summary, params.train.wandb.project):
        summary["wandb"] = run

    if params.train.method != "full" and params.train.merge:
        models.save_merged(models.ModelChoice(preset, str(weights)), final / "merged")
    training = {
        "model": params.model,
        "prompt_format": params.train.prompt_format,
        "chat_template": use_chat,
        "recipe": recipe.model_dump(),
        "tasks": counts,
        "run": key,
        **summary,
    }
    for checkpoint in run_dir.glob("checkpoint-*"):  # done: nothing left to resume
        shutil.rmtree(checkpoint, ignore_errors=True)
    write_json(final / TRAINING_FILE, training)  # last: its presence marks the run finished
    return training


def mean_step_loss(training_loss: float, state, resumed_step: int) -> float:
    """The mean loss over every step of the run. After a resume the Trainer's `training_loss` covers only the
    steps since the resume (older transformers divided their sum by all steps); the log history it restored
    from the checkpoint holds every step's loss (logged each step), so a resumed run's mean is taken there."""
    if not resumed_step:
        return training_loss
    losses = {entry["step"]: entry["loss"] for entry in state.log_history if "loss" in entry}
    return sum(losses.values()) / len(losses)


def _finish_wandb(summary: dict, project: str) -> dict | None:
    """Close the W&B run; return its id (and URL when online) for the report and comparisons."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return None
    run = wandb.run
    info = {"id": run.id, "project": project, "url": None if run.offline else run.url}
    run.summary.update(summary)
    wandb.finish()
    return info
