"""Training for real: LoRA and QLoRA (bitsandbytes NF4 on CPU) through the CLI on real records, DVCLive
curves and W&B offline runs without secrets, padding-free batches equal to separate forwards, a SIGKILLed
run that resumes from its checkpoint, and recipe values that fail in one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from healthslm.data.registry import all_tasks
from healthslm.models.capacity import GB, Architecture, activation_bytes, plan_training
from healthslm.models.registry import effective_recipe, load_preset, resolve_model
from healthslm.params import Params, parse_params
from healthslm.prepare import read_records
from healthslm.prompts import answer_continuation
from healthslm.train import answer_only_loss, rewind_live

SECRETS = {
    "OPENAI_API_KEY": "sk-test-0penai-s3cret-value-0123456789",
    "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
    "HF_TOKEN": "hf_testS3cretTokenValue0123456789abcdef",
}


def _workdir(tmp_path: Path, records: Path, train: dict, model: str, **blocks) -> Path:
    """A project folder with prepared records and a params.yaml for `healthslm train`."""
    work = tmp_path / "work"
    (work / "artifacts").mkdir(parents=True)
    (work / "artifacts" / "records").symlink_to(records)
    params = {"model": model, "data": {"datasets": ["pmdata"]}, "train": train, **blocks}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env | extra


def _steps(tsv: Path) -> list[int]:
    with tsv.open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh, delimiter="\t")]


def wandb_run_config(run_dir: Path) -> dict:
    """The config an offline W&B run recorded, read from its .wandb file (a LevelDB-style record log)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    pos, block, chunks, config = 7, 32768, b"", {}  # after the 7-byte ":W&B" header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            kind_name = record.WhichOneof("record_type")
            if kind_name in ("config", "run"):
                update = record.config.update if kind_name == "config" else record.run.config.update
                config |= {item.key: json.loads(item.value_json) for item in update}
    return config


def test_recipe_overrides_and_bad_values():
    preset = resolve_model("smollm2-135m")
    params = parse_params({"train": {"lora": {"r": 4}, "learning_rate": 1e-3}})
    recipe = effective_recipe(preset, params.train.recipe_overrides())
    assert (recipe.lora.r, recipe.lora.alpha, recipe.learning_rate) == (4, 32, 1e-3)
    assert recipe.lora.target_modules == preset.recipe.lora.target_modules
    full = parse_params({"train": {"method": "full", "learning_rate": 3e-5}})
    assert effective_recipe(preset, full.train.recipe_overrides()).full_learning_rate == 3e-5


def test_bad_recipe_value_fails_in_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"lora": {"r": 0}}}))
    result = subprocess.run(
        ["healthslm", "check-params", "--params", str(params)], capture_output=True, text=True, env=_env()
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params.yaml: train.lora.r: Input should be greater than 0 (got 0)"
    params.write_text(yaml.safe_dump({"train": {"method": "dora"}}))
    result = subprocess.run(
        ["healthslm", "check-params", "--params", str(params)], capture_output=True, text=True, env=_env()
    )
    assert "train.method: Input should be 'lora', 'qlora' or 'full' (got 'dora')" in result.stderr


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "raw"])
@pytest.mark.parametrize("prompt_format", ["seed", "compact"])
def test_the_trainer_learns_the_token_ids_the_scorer_ranks(
    all_records, embedded, tmp_path, prompt_format, chat
):
    """For every closed task: the ids TRL puts the loss on (its own tokenization of the trainer's dataset)
    are the ids the label scorer ranks for the gold answer, tokenized as the scorer does it. Before issue 30
    the IMHI answers at the start of the chat template's assistant turn had a leading space
    (" yes."), which the model would never write there. (tests/test_twins.py: the presets' tokenizers.)"""
    model, tokenizer = embedded
    trainer_and_scorer_ids_agree(model, tokenizer, all_records, tmp_path, prompt_format, chat)


def trainer_and_scorer_ids_agree(model, tokenizer, all_records, tmp_path, prompt_format, chat) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from healthslm.prompts import build_context, trainer_prompt
    from healthslm.scoring import LabelScorer
    from healthslm.train import training_examples

    datasets = ["pmdata", "aw_fb", "pubmedqa", "dr", "dreaddit"]
    params = parse_params(
        {"data": {"datasets": datasets}, "train": {"examples_per_task": 2, "prompt_format": prompt_format}}
    )
    examples, _ = training_examples(params, tokenizer, chat, 4096, all_records)
    config = SFTConfig(str(tmp_path), use_cpu=True, bf16=False, completion_only_loss=True, max_length=None)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer)  # fmt: skip
    closed = [spec for spec in all_tasks().values() if spec.closed and spec.dataset in datasets]
    known: dict[
        str, list
    ] = {}  # the trainer's prompt of every closed task's train record -> its task, record, context
    for spec in closed:
        for record in read_records(all_records, spec.dataset, spec.name, "train"):
            context = build_context(record, spec, tokenizer, chat, prompt_format)
            known.setdefault(trainer_prompt(context, tokenizer, chat), []).append((spec, record, context))
    scorer, eos, checked = LabelScorer(None, tokenizer), tokenizer.eos_token_id, 0
    for example, row in zip(examples, trainer.train_dataset, strict=True):
        if len(known.get(example["prompt"], [])) != 1:  # open-ended, or AW_FB's repeated readings
            continue
        ((spec, record, context),) = known[example["prompt"]]
        learned = [i for i in row["labels"] if i != -100]  # TRL's labels: -100 off the completion
        gold = spec.spoken_answers[spec.label_space.index(str(record["label"]))]
        continuation = answer_continuation(gold, context)
        prompt_ids, (ranked,) = scorer.tokenize(context, [continuation], not chat)
        # The prompt the model learns after is the one it is scored after: one BOS (Llama 3, Phi-3), not two.
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids, (
            spec.key,
            row["input_ids"][:4],
            prompt_ids[:4],
        )
        assert learned[: len(ranked)] == ranked and learned[len(ranked) :] in ([], [eos]), (
            spec.key,
            tokenizer.decode(learned),
            continuation,
        )
        if chat and spec.input_first:  # the answer opens the assistant turn: "yes.", not " yes."
            assert not tokenizer.decode(learned).startswith(" "), (spec.key, tokenizer.decode(learned))
        checked += 1
    assert checked >= 2 * len(closed) - 1  # two records of every closed task (bar a repeated prompt)


def _responses(augmented: Path, records: Path, task: str, every: int = 1) -> dict[str, str]:
    """Kept responses for every `every`-th PMData train record of a task, as the augment stage writes them."""
    why = "nights of short sleep, a high resting heart rate, few steps and low mood"
    rows = [
        {"record_id": r["id"], "output": f"{r['label']}. Reasoning: {i} {why}."}
        for i, r in enumerate(read_records(records, "pmdata", task, "train"))
        if i % every == 0
    ]
    (augmented / "pmdata").mkdir(parents=True, exist_ok=True)
    (augmented / "pmdata" / f"{task}.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {row["record_id"]: row["output"] for row in rows}


def test_targets_take_the_augmented_explanation_or_fall_back(tmp_path, pmdata_records, embedded):
    from healthslm.train import training_examples

    _, tokenizer = embedded
    responses = _responses(tmp_path / "augmented", pmdata_records, "fatigue", every=2)
    fatigue = len(read_records(pmdata_records, "pmdata", "fatigue", "train"))

    def examples(**train):
        params = Params.model_validate({"data": {"datasets": ["pmdata"]}, "train": train})
        return training_examples(params, tokenizer, True, 2048, pmdata_records, tmp_path / "augmented")

    label, _ = examples(examples_per_task=None)
    assert not any("Reasoning" in e["completion"] for e in label)
    kept, counts = examples(examples_per_task=None, targets="augmented")
    assert counts["pmdata_fatigue"]["with_response"] == len(responses)
    assert counts["pmdata_readiness"] == dict.fromkeys(counts["pmdata_readiness"], 0) | {
        "examples": len(read_records(pmdata_records, "pmdata", "readiness", "train"))
    }  # no responses for readiness: every record falls back to its label
    explained = [e["completion"] for e in kept if "Reasoning" in e["completion"]]
    assert len(explained) == len(responses) and all(c.startswith(" ") for c in explained)
    assert explained[0].split(" Reasoning: ")[0] in {f" {n}." for n in range(6)}  # the label, as scored

    dropped, counts = examples(examples_per_task=None, targets="augmented", without_response="drop")
    assert counts["pmdata_fatigue"]["left_out_without_response"] == fatigue - len(responses)
    assert sum(c["examples"] for c in counts.values()) == len(responses)
    both, counts = examples(examples_per_task=None, targets="both")
    assert len(both) == len(label) + len(responses)


def test_a_train_subset_is_a_seeded_label_stratified_draw(pmdata_records):
    from collections import Counter

    from healthslm.data.registry import all_tasks
    from healthslm.prepare import training_order

    spec = all_tasks()["pmdata_fatigue"]
    records = read_records(pmdata_records, "pmdata", "fatigue", "train")
    shares = Counter(r["label"] for r in records)

    def drawn(seed: int, per_task: int | None = 60) -> list[dict]:
        params = Params.model_validate({"base": {"seed": seed}, "train": {"examples_per_task": per_task}})
        return training_order(records, spec, params)

    first = drawn(42)
    assert sorted(r["id"] for r in first) == sorted(r["id"] for r in records)  # every record, reordered
    counts = Counter(r["label"] for r in first[:60])
    # Each label keeps its share of the 60 to within one record (a first-60 cut of the file would not).
    assert all(abs(counts[label] - 60 * n / len(records)) <= 1 for label, n in shares.items()), counts
    assert [r["id"] for r in drawn(42)] == [r["id"] for r in first]  # seeded
    assert [r["id"] for r in drawn(7)][:60] != [r["id"] for r in first][:60]
    assert len(drawn(42, None)) == len(records)


def test_augmented_targets_reach_the_trainer_and_ft_still_answers_every_row(
    tmp_path, pmdata_records, tiny_model_dir
):
    from healthslm.evaluate import evaluate
    from healthslm.train import train

    responses = _responses(tmp_path / "augmented", pmdata_records, "fatigue")
    params = Params.model_validate(
        {
            "model": str(tiny_model_dir),
            "data": {"datasets": ["pmdata"]},
            "train": {
                "examples_per_task": 1, "targets": "augmented", "max_steps": 1, "batch_size": 4,
                "grad_accum": 1, "max_length": 512, "merge": False, "wandb": {"enabled": False},
            },
            "eval": {"mode": ["ft"], "limit": 3, "finetuned": str(tmp_path / "model")},
        }
    )  # fmt: skip
    info = train(
        params, pmdata_records, tmp_path / "model", tmp_path / "ckpt", tmp_path / "live", print,
        tmp_path / "augmented",
    )  # fmt: skip
    assert info["targets"] == "augmented" and info["tasks"]["pmdata_fatigue"]["with_response"] == 1
    # One step over the 4 tasks' records: fatigue's answer is its label and explanation, the others' their
    # label alone (" 3." and the end of turn, <= 3 tokens each: 12 with label targets).
    explanation = len(AutoTokenizer.from_pretrained(tmp_path / "model" / "adapter")(
        next(iter(responses.values())).split(". ", 1)[1]).input_ids)  # fmt: skip
    assert explanation > 12 and info["steps"] == 1 and info["answer_tokens"] >= explanation + 4
    results = evaluate(params, True, pmdata_records, tmp_path / "p", tmp_path / "m.json", tmp_path / "pl")
    for task in ("pmdata_fatigue", "pmdata_readiness", "pmdata_sleep_quality", "pmdata_stress"):
        assert results["ft"][task]["n"] == 3 and results["ft"][task]["invalid_rate"] == 0, task


def test_padding_free_batch_equals_separate_forwards(tiny_model_dir):
    """Sequences concatenated with restarting position ids attend only within themselves (sdpa, CPU).

    transformers detects the packing from the position ids only without a KV cache, which is how TRL
    calls the model in training (use_cache=False)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    sequences = [list(range(5, 5 + n)) for n in (7, 3, 11)]
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batch = collator([{"input_ids": ids} for ids in sequences])
    assert batch["input_ids"].shape == (1, 21) and "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        separate = torch.cat([model(input_ids=torch.tensor([ids])).logits[0] for ids in sequences])
    assert torch.allclose(packed.logits[0], separate, atol=1e-5)


def test_answer_only_loss_equals_the_full_loss_and_projects_only_answer_tokens(embedded):
    """The real 135M on a padding-free batch of two sequences: the same loss as the model's own over the
    full logits, while the LM head receives one hidden state per answer token."""
    model, _ = embedded
    ids = torch.arange(100, 160).unsqueeze(0)
    positions = torch.cat([torch.arange(40), torch.arange(20)]).unsqueeze(0)
    labels = torch.full_like(ids, -100)
    labels[0, 35:40], labels[0, 57:60] = ids[0, 35:40], ids[0, 57:60]  # answers end each sequence
    batch = {"input_ids": ids, "position_ids": positions, "labels": labels}
    seen = []
    hook = model.lm_head.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    try:
        with torch.no_grad():
            ours = answer_only_loss(model, batch)
            seen_by_ours = seen.pop()
            full = model(input_ids=ids, position_ids=positions, labels=labels, use_cache=False).loss
    finally:
        hook.remove()
    assert seen_by_ours[-2] == 8 and seen.pop()[-2] == 60  # answer positions vs every position
    assert torch.allclose(ours, full, atol=1e-5)
    assert torch.allclose(answer_only_loss(model, batch, num_items_in_batch=16) * 16, ours * 8, atol=1e-4)


def test_presets_carry_the_architecture_of_their_weights(embedded):
    model, _ = embedded
    assert Architecture.of(model.config) == load_preset("smollm2-135m").architecture
    tinyllama = load_preset("tinyllama").architecture
    assert round(tinyllama.parameters / 1e6) == 1100  # TinyLlama-1.1B's published size


def test_the_memory_plan_keeps_the_largest_batch_within_the_budget():
    """TinyLlama's recipe (4 x 2048 tokens, accumulation 4): the plan runs the same effective batch, the
    cheapest way that fits; the estimate of its largest batch never exceeds the budget."""
    arch, answers = load_preset("tinyllama").architecture, [40, 30, 8, 8]
    roomy = plan_training(arch, 4, 4, 2048, answers, 200, None)
    assert (roomy.checkpointing, roomy.batch_size, roomy.grad_accum) == (False, 4, 4)
    one_each = plan_training(arch, 4, 4, 2048, answers, 200, None, packed=False)
    assert (one_each.batch_size, one_each.grad_accum) == (1, 16)
    plans = [plan_training(arch, 4, 4, 2048, answers, budget, None) for budget in (40, 12, 3, 1)]
    assert [(p.checkpointing, p.batch_size) for p in plans] == [(False, 2), (False, 1), (True, 2), (True, 1)]
    for plan, budget in zip(plans, (40, 12, 3, 1), strict=True):
        assert plan.batch_size * plan.grad_accum == 16
        tokens = plan.max_batch_tokens
        assert (
            activation_bytes(arch, tokens, sum(answers[: plan.batch_size]), plan.checkpointing) <= budget * GB
        )
    assert plan_training(arch, 4, 4, 2048, answers, 0.1, None) is None
    forced = plan_training(arch, 4, 4, 2048, answers, 200, True)
    assert forced.checkpointing and forced.batch_size == 4


def test_a_budget_too_small_for_one_example_fails_in_one_line(tmp_path, pmdata_records, tiny_model_dir):
    train = {"examples_per_task": 2, "activation_budget_gb": 0.0001, "wandb": {"enabled": False}}
    work = _workdir(tmp_path, pmdata_records, train, str(tiny_model_dir))
    result = subprocess.run(["healthslm", "train"], cwd=work, capture_output=True, text=True, env=_env())
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr
    assert "train.activation_budget_gb: 0.0001 GB cannot hold one example of 1024 tokens" in result.stderr


def test_rewind_live_drops_steps_after_the_checkpoint(tmp_path):
    tsv = tmp_path / "plots" / "metrics" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tloss\n1\t2.0\n2\t1.9\n3\t1.8\n")
    rewind_live(tmp_path, 2)
    assert _steps(tsv) == [1, 2]


@pytest.mark.slow
def test_lora_and_qlora_train_log_and_keep_secrets_out(tmp_path, pmdata_records, tiny_model_dir):
    train = {"examples_per_task": 2, "max_steps": 4, "save_steps": 2, "batch_size": 2}
    work = _workdir(tmp_path, pmdata_records, train, str(tiny_model_dir))
    result = subprocess.run(
        ["healthslm", "train"], cwd=work, capture_output=True, text=True, env=_env(**SECRETS)
    )
    assert result.returncode == 0, result.stderr[-3000:]

    model_dir = work / "artifacts" / "model"
    assert (model_dir / "adapter" / "adapter_config.json").exists()
    assert (model_dir / "merged" / "config.json").exists()
    training = json.loads((model_dir / "training.json").read_text())
    assert (
        training["steps"] == 4
        and training["examples"] == 8
        and training["tasks"]["pmdata_fatigue"]["examples"] == 2
    )
    assert json.loads((work / "reports" / "train" / "training.json").read_text()) == training
    metrics = json.loads((work / "reports" / "train" / "metrics.json").read_text())
    assert metrics["final/steps"] == 4 and metrics["final/tokens_per_s"] > 0
    loss_tsv = work / "reports" / "train" / "plots" / "metrics" / "loss.tsv"
    assert _steps(loss_tsv) == [1, 2, 3, 4]
    # train_loss is the mean over all 4 steps; before issue 30 it divided the 2 resumed steps' sum by 4
    with loss_tsv.open(newline="") as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh, delimiter="\t")]
    assert training["train_loss"] == pytest.approx(sum(losses) / 4, abs=2e-4)
    kept = list((work / "artifacts" / "checkpoints").iterdir())  # the finished run only, for a re-run
    assert [run.name for run in kept] == [training["run"]] and not list(kept[0].glob("checkpoint-*"))

    runs = list((work / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "W&B logged one offline run under ./wandb/"
    config = wandb_run_config(runs[0])
    assert config["train"]["examples_per_task"] == 2 and config["recipe"]["lora"]["r"] == 16
    assert config["model"] == str(tiny_model_dir) and config["peft_config"]
    leaked = [
        str(path)
        for path in work.rglob("*")
        if path.is_file() and any(v.encode() in path.read_bytes() for v in SECRETS.values())
    ]
    assert not leaked, f"secret values written to {leaked}"

    # QLoRA: a 4-bit NF4 base (bitsandbytes on CPU), the adapter merged into the fp32 weights.
    qlora = {**train, "method": "qlora", "max_steps": 2, "wandb": {"enabled": False}}
    (work / "params.yaml").write_text(
        yaml.safe_dump({"model": str(tiny_model_dir), "data": {"datasets": ["pmdata"]}, "train": qlora})
    )
    result = subprocess.run(["healthslm", "train"], cwd=work, capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    training = json.loads((model_dir / "training.json").read_text())
    assert training["method"] == "qlora" and training["base_weights"] == "nf4" and training["steps"] == 2
    assert (model_dir / "merged" / "model.safetensors").exists()


@pytest.mark.slow
def test_fine_tuned_mode_evaluates_the_trained_model(tmp_path, pmdata_records, tiny_model_dir):
    from healthslm.evaluate import evaluate
    from healthslm.train import train

    params = Params.model_validate(
        {
            "model": str(tiny_model_dir),
            "data": {"datasets": ["pmdata"]},
            "train": {"examples_per_task": 2, "max_steps": 2, "merge": False, "wandb": {"enabled": False}},
            "eval": {"mode": ["ft"], "limit": 3, "finetuned": str(tmp_path / "model")},
        }
    )
    info = train(params, pmdata_records, tmp_path / "model", tmp_path / "ckpt", tmp_path / "live", echo=print)
    assert not (tmp_path / "model" / "merged").exists()  # adapter only: ft mode merges it on load
    # The same run again (as after an eval.mode change that keeps ft): copied from the kept run, not trained.
    lines: list[str] = []
    again = train(
        params, pmdata_records, tmp_path / "model", tmp_path / "ckpt", tmp_path / "live", echo=lines.append
    )
    assert (
        again == info
        and lines[0].startswith("memory plan: largest batch 1024 tokens")
        and lines[1:]
        == [
            f"run {info['run']} was trained already ({tmp_path / 'ckpt' / info['run']}/final): "
            "copying it, not training again"
        ]
    )
    # train.merge switched on: the same run (merging trains nothing), now published with merged/; and off
    # again without it. It was published without merged/ either way, which export then lacked.
    merged = params.model_copy(update={"train": params.train.model_copy(update={"merge": True})})
    lines.clear()
    assert (
        train(merged, pmdata_records, tmp_path / "model", tmp_path / "ckpt", tmp_path / "live", lines.append)
        == info
    )
    assert "trained already" in lines[-1] and (tmp_path / "model" / "merged" / "config.json").is_file()
    train(params, pmdata_records, tmp_path / "model", tmp_path / "ckpt", tmp_path / "live", echo=lines.append)
    assert "trained already" in lines[-1] and not (tmp_path / "model" / "merged").exists()

    out = tmp_path / "eval"
    results = evaluate(params, True, pmdata_records, out / "pred", out / "m.json", out / "plots", echo=print)
    assert info["prompt_format"] == "compact"
    assert results["ft"]["pmdata_fatigue"]["n"] == 3 and results["ft"]["pmdata_fatigue"]["invalid_rate"] == 0
    prompt = json.loads(
        (out / "pred" / "finetuned" / "ft" / "pmdata_fatigue.jsonl").read_text().splitlines()[0]
    )
    assert prompt["answer"] in range(6)
    assert results["efficiency"]["ft"]["peak_rss_scope"] == "work"

    # Without ft in eval.mode nothing is trained, and the pretrained modes' stage never needs a model folder.
    zero_shot = params.model_copy(
        update={"eval": params.eval.model_copy(update={"mode": ["zs"], "finetuned": str(tmp_path / "none")})}
    )
    skipped = train(
        zero_shot, pmdata_records, tmp_path / "none", tmp_path / "ckpt", tmp_path / "live0", echo=print
    )
    assert skipped == {"model": str(tiny_model_dir), "trained": False, "reason": "eval.mode has no ft"}
    assert json.loads((tmp_path / "live0" / "metrics.json").read_text()) == {}
    assert evaluate(zero_shot, True, pmdata_records, out / "p2", out / "m2.json", out / "plots2") == {
        "efficiency": {}
    }


@pytest.mark.slow
def test_sigkilled_training_resumes_from_its_last_checkpoint(tmp_path, pmdata_records):
    """The embedded model, killed mid-run: the re-run continues from the checkpoint, not from step 0."""
    train = {
        "examples_per_task": 2,
        "batch_size": 2,
        "save_steps": 2,
        "merge": False,
        "wandb": {"enabled": False},
    }
    work = _workdir(tmp_path, pmdata_records, train, "smollm2-135m")
    first = subprocess.Popen(
        ["healthslm", "train"], cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not list((work / "artifacts" / "checkpoints").glob("*/checkpoint-*/trainer_state.json")):
        assert first.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (work / "artifacts" / "model").exists(), "a killed run leaves no model behind"

    second = subprocess.run(["healthslm", "train"], cwd=work, capture_output=True, text=True, env=_env())
    assert second.returncode == 0, second.stderr[-3000:]
    training = json.loads((work / "artifacts" / "model" / "training.json").read_text())
    assert training["steps"] == 4 and training["resumed_from_step"] == 2
    assert f"from checkpoint-{training['resumed_from_step']}" in second.stdout
    loss_tsv = work / "reports" / "train" / "plots" / "metrics" / "loss.tsv"
    assert _steps(loss_tsv) == [1, 2, 3, 4]
    # train_loss is the mean over all 4 steps; before issue 30 it divided the 2 resumed steps' sum by 4
    with loss_tsv.open(newline="") as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh, delimiter="\t")]
    assert training["train_loss"] == pytest.approx(sum(losses) / 4, abs=2e-4)


@pytest.mark.slow
def test_training_runs_unchanged_under_accelerate_launch(tmp_path, pmdata_records, tiny_model_dir):
    """The shipped DDP config with two processes on the CPU (gloo): each process trains on half the data."""
    train = {"examples_per_task": 2, "batch_size": 2, "max_steps": 2, "wandb": {"enabled": False}}
    work = _workdir(tmp_path, pmdata_records, train, str(tiny_model_dir))
    config = Path(__file__).resolve().parents[1] / "src" / "healthslm" / "accelerate" / "ddp.yaml"
    launch = ["accelerate", "launch", "--config_file", str(config), "--num_processes", "2"]
    launch += ["--mixed_precision", "no", "-m", "healthslm", "train"]
    result = subprocess.run(launch, cwd=work, capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    training = json.loads((work / "artifacts" / "model" / "training.json").read_text())
    assert training["processes"] == 2 and training["steps"] == 2
    metrics = json.loads((work / "reports" / "train" / "metrics.json").read_text())
    assert metrics["epoch"] == 1.0  # 8 examples = 2 steps x batch 2 x 2 processes
    assert (work / "artifacts" / "model" / "merged" / "config.json").exists()


def test_qlora_runs_of_another_compute_dtype_get_another_key():
    """The run key records the 4-bit base as the loader builds it (the compute dtype included). Before issue
    30 removed `auto`, the key held the resolved dtype while the loader read the raw param."""
    from healthslm.train import base_quantization, run_key

    params = Params.model_validate({"train": {"method": "qlora"}})
    recipe = effective_recipe(resolve_model(params.model), params.train.recipe_overrides())
    plan = SimpleNamespace(checkpointing=False, batch_size=1, grad_accum=1)
    keys = {bf16: run_key(params, recipe, bf16, [], plan) for bf16 in (False, True)}
    assert keys[False] != keys[True]
    assert base_quantization("qlora", True)["bnb_4bit_compute_dtype"] == "bfloat16"
    assert base_quantization("lora", True) is None
