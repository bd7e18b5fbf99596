"""Twins of the presets (models/twin.py), one per tokenizer family, one decoder layer deep: the presets'
real tokenizers and chat templates through training, scoring, GGUF export and llama.cpp, offline.

Families: the embedded SmolLM2 GGUF's, and llama.cpp's vocabulary files llama-spm (TinyLlama), llama-bpe
(Llama 3.2), phi-3 and qwen2 (Qwen2.5), pinned by sha256 in models/llama_sdist.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from healthslm.errors import HealthSLMError
from healthslm.models import llama_sdist
from healthslm.models.registry import load_preset, preset_names, resolve_model
from healthslm.models.twin import build_twin, chat_template, load_tokenizer, narrowed, vocabulary_file
from healthslm.params import parse_params

FAMILIES = {
    "embedded": "smollm2-135m",
    "llama-spm": "tinyllama",
    "llama-bpe": "llama-3.2-1b",
    "phi-3": "phi-3-mini",
    "qwen2": "qwen2.5-1.5b",
}
HEADS = 2  # narrowed (twin.narrowed): the family's tokenizer and modules at a fraction of the cost
_built: dict[str, Path] = {}


@pytest.fixture(scope="session")
def twin_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("twins")


@pytest.fixture(params=list(FAMILIES))
def twin(request, twin_root) -> Path:
    """A one-layer, two-head twin of the family's preset, built once per session."""
    preset = FAMILIES[request.param]
    if preset not in _built:
        _built[preset] = build_twin(preset, twin_root / preset, layers=1, seed=0, heads=HEADS)
    return _built[preset]


def test_every_preset_has_a_twin_or_says_why_not():
    from healthslm.cli import cli

    missing = {name: load_preset(name).twin for name in preset_names()}
    assert {n for n, spec in missing.items() if spec.unavailable} == {"gemma-2-2b", "smollm-1.7b"}
    assert all(spec.tokenizer for spec in missing.values() if not spec.unavailable)
    listing = CliRunner().invoke(cli, ["models"]).output
    lines = listing.splitlines()

    def twin_line(name: str) -> str:  # the line under the preset's own
        return lines[1 + next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))]

    assert "no twin: llama.cpp's vocabulary files hold no Gemma 2 tokenizer" in twin_line("gemma-2-2b")
    assert "twin tokenizer: llama.cpp ggml-vocab-llama-spm.gguf" in twin_line("tinyllama")
    # every preset's default run has an estimate here: measured shapes, or scaled by parameters
    starts = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert all("default run ~" in lines[i + 2] for i in starts), listing
    with pytest.raises(HealthSLMError, match="smollm-1.7b has no twin: its 49,152-token vocabulary"):
        build_twin("smollm-1.7b", Path("unused"))


def test_every_lora_target_exists_in_its_presets_architecture():
    """Each preset's recipe names modules its architecture has (a one-layer model on the meta device)."""
    from transformers import AutoModelForCausalLM

    for name in preset_names():
        preset = load_preset(name)
        arch = preset.architecture.model_copy(update={"num_hidden_layers": 1})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(arch.config())
        leaves = {module.rsplit(".", 1)[-1] for module, _ in model.named_modules()}
        targets = preset.recipe.lora.target_modules
        assert targets == "all-linear" or set(targets) <= leaves, (name, set(targets) - leaves)


def test_a_vocabulary_file_that_is_not_the_pinned_one_is_refused(monkeypatch):
    monkeypatch.setitem(llama_sdist.PINNED, "models/ggml-vocab-phi-3.gguf", "0" * 64)
    with pytest.raises(
        HealthSLMError, match=r"ggml-vocab-phi-3.gguf: sha256 967d7190\w+ is not the pinned 0+ "
    ):
        load_tokenizer(load_preset("phi-3-mini"))


def named_template(preset) -> str:
    import llama_cpp

    if (named := chat_template(preset.twin)) is not None:
        return named
    path = str(vocabulary_file(preset.twin, preset))
    vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    return llama_cpp.llama_model_chat_template(vocab.model, None).decode()


def test_narrowing_keeps_the_head_width_and_the_grouping_and_all_heads_is_the_preset():
    for name in preset_names():
        if (shape := load_preset(name).architecture) is None:
            continue
        assert narrowed(shape, shape.num_attention_heads) == shape, name  # a twin by default: the preset's
        narrow = narrowed(shape, HEADS)
        assert narrow.head_width == shape.head_width and narrow.vocab_size == shape.vocab_size, name
        assert narrow.num_key_value_heads == max(
            1, shape.num_key_value_heads * HEADS // shape.num_attention_heads
        )
        assert narrow.intermediate_size % 32 == 0  # GGUF's quantization blocks tile the MLP's rows
    smollm2 = load_preset("smollm2-135m").architecture  # 9 heads, 3 key-value heads
    for heads in (7, 10):
        with pytest.raises(HealthSLMError, match=rf"heads={heads}: needs 1 to 9 heads, a multiple of \d"):
            narrowed(smollm2, heads)


def test_a_twin_is_its_presets_shape_with_its_real_tokenizer(twin):
    facts = json.loads((twin / "twin.json").read_text())
    preset = resolve_model(str(twin))
    assert preset.twin_of == facts["preset"] and preset.architecture.num_hidden_layers == 1
    assert preset.recipe == load_preset(facts["preset"]).recipe and "random-weight twin" in preset.provenance
    config = json.loads((twin / "config.json").read_text())
    shape = narrowed(load_preset(facts["preset"]).architecture, HEADS)
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (
        shape.hidden_size, shape.intermediate_size, 1
    )  # fmt: skip
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(twin)
    assert len(tokenizer) >= {"llama-spm": 32000, "llama-bpe": 128256, "phi-3": 32064, "qwen2": 151643}.get(
        facts["tokenizer"], 49152
    )
    # The model's template as its preset names it (a file, else the vocabulary's own, read by llama.cpp).
    assert tokenizer.chat_template == named_template(load_preset(facts["preset"]))
    turn = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    assert "Q" in turn and not turn.startswith(2 * (tokenizer.bos_token or "\0"))  # no double BOS


@pytest.mark.slow
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "raw"])
@pytest.mark.parametrize("prompt_format", ["seed", "compact"])
def test_the_twins_trainer_learns_the_token_ids_the_scorer_ranks(
    all_records, twin, tmp_path, prompt_format, chat
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_train import trainer_and_scorer_ids_agree

    tokenizer = AutoTokenizer.from_pretrained(twin)
    model = AutoModelForCausalLM.from_pretrained(twin)
    trainer_and_scorer_ids_agree(model, tokenizer, all_records, tmp_path, prompt_format, chat)


@pytest.mark.slow
def test_the_twins_f16_gguf_scores_like_its_transformers_model(twin, all_records):
    """Every row the same answer on both engines and label log-likelihoods within LOGLIK_TOLERANCE; llama.cpp
    reads each prompt as the same token ids, except TinyLlama's chat turns (below)."""
    from healthslm.twin_check import LOGLIK_TOLERANCE, check_twin

    params = parse_params({"data": {"datasets": ["pmdata", "pubmedqa", "dreaddit"]}})
    family = json.loads((twin / "twin.json").read_text())["tokenizer"]
    found = check_twin(twin, all_records, params, chat=True, prompt_format="compact", rows=1)
    assert found["rows"] == 6 and found["same_answer"] == 6, found
    assert found["max_loglik_difference"] < LOGLIK_TOLERANCE, found
    # llama.cpp's SentencePiece tokenizer puts a "▁" before the text after a special token (</s>\n becomes
    # </s>▁\n); transformers' Llama 2 tokenizer (legacy=False) does not. Only the on-device engine's own
    # text tokenization sees it (the scorers here take ids), and this check keeps it in view.
    assert found["same_tokens"] == (0 if family == "llama-spm" else 6), found


@pytest.mark.slow
def test_the_twin_runs_train_lora_and_qlora_evaluate_export_quantize_ondevice(twin, pmdata_records, tmp_path,
                                                                               monkeypatch):  # fmt: skip
    from healthslm.cli import cli

    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "records").symlink_to(pmdata_records)
    train = {"examples_per_task": 2, "max_steps": 2, "batch_size": 2, "wandb": {"enabled": False}}
    params = {
        "model": str(twin),
        "data": {"datasets": ["pmdata"]},
        "train": train,
        "eval": {"mode": ["ft"], "limit": 2},
        "export": {"quantizations": ["q8_0"], "bench_prompts": 2, "bench_new_tokens": 2},
    }
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for method in ("qlora", "lora"):
        params["train"] = {**train, "method": method}
        Path("params.yaml").write_text(yaml.safe_dump(params))
        result = runner.invoke(cli, ["train"])
        assert result.exit_code == 0, result.output[-2000:]
        assert json.loads(Path("artifacts/model/training.json").read_text())["method"] == method
    for command in (["evaluate"], ["export"], ["quantize", "--type", "q8_0"], ["ondevice"]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 0, (command, result.output[-2000:])
    ft = json.loads(Path("reports/metrics_ft.json").read_text())["ft"]
    assert {key: row["n"] for key, row in ft.items() if key.startswith("pmdata")} == {
        f"pmdata_{task}": 2 for task in ("fatigue", "readiness", "sleep_quality", "stress")
    }
    assert all(row["invalid_rate"] == 0 for key, row in ft.items() if key.startswith("pmdata"))
    ondevice = json.loads(Path("reports/ondevice.json").read_text())
    assert ondevice["q8_0"]["decode_tokens_per_s"] > 0


def test_the_gpu_check_imports_without_dvc_gx_wandb_or_llama_cpp():
    """A GPU machine without a package index has torch, transformers, peft, accelerate and scikit-learn, and
    what travels as small wheels: benchmarks/gpu_check.py must not need the pipeline's tools to import."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    blocked = ["dvc", "dvclive", "great_expectations", "wandb", "llama_cpp"]
    script = f"""
import importlib.util, sys
sys.modules.update(dict.fromkeys({blocked!r}))  # None: absent, for import and for find_spec
spec = importlib.util.spec_from_file_location("gpu_check", {str(ROOT / "benchmarks" / "gpu_check.py")!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print("imported")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "imported", result.stderr[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_the_gpu_scores_as_the_cpu_does(twin, all_records):
    """The label scorer on a CUDA GPU (where evaluate puts the model), rows batched as eval.score_batch_size
    asks there, answers as on the CPU one row at a time, every row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from healthslm.prepare import available_tasks, read_records
    from healthslm.prompts import answer_continuation, build_context
    from healthslm.scoring import LabelScorer

    tokenizer = AutoTokenizer.from_pretrained(twin)
    closed = [s for s in available_tasks(["pmdata", "pubmedqa", "dreaddit"], all_records) if s.closed]
    answers = {}
    for device, batch in (("cpu", 1), ("cuda", 8)):
        model = AutoModelForCausalLM.from_pretrained(twin, dtype=torch.float32).to(device).eval()
        scorer, answers[device] = LabelScorer(model, tokenizer), []
        for spec in closed:
            items = []
            for record in read_records(all_records, spec.dataset, spec.name, "eval")[:4]:
                context = build_context(record, spec, tokenizer, True, "compact")
                items.append((context, [answer_continuation(a, context) for a in spec.spoken_answers]))
            for start in range(0, len(items), batch):
                for scores in scorer.score_batch(items[start : start + batch], special_tokens=False):
                    answers[device].append(scores.index(max(scores)))
    assert answers["cuda"] == answers["cpu"]
