"""GGUF export with llama.cpp's own converter and quantizer, checked on llama.cpp (llama-cpp-python)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from healthslm.errors import HealthSLMError
from healthslm.export import convert, gguf_facts, quantize
from healthslm.models import llama_sdist
from healthslm.models.loader import model_location
from healthslm.models.registry import resolve_model
from healthslm.prompts import answer_continuation, build_context
from healthslm.resources import physical_cores
from healthslm.scoring import LabelScorer
from healthslm.tasks import BUILTIN_TASKS
from tests.conftest import ROOT

NEW_TOKENS = 24


def _prompt_ids(tokenizer, pmdata_records) -> list[int]:
    spec = next(t for t in BUILTIN_TASKS if t.key == "pmdata_fatigue")
    record = json.loads((pmdata_records / "pmdata" / "fatigue.eval.jsonl").open().readline())
    context = build_context(record, spec, tokenizer, True, "compact")
    return tokenizer(context, add_special_tokens=False).input_ids


@torch.inference_mode()
def _hf_greedy(model, ids: list[int]) -> list[int]:
    """Plain argmax, EOS included (generate's min_new_tokens would forbid EOS and change the output)."""
    tokens, cache, step = [], None, ids
    for _ in range(NEW_TOKENS):
        out = model(input_ids=torch.tensor([step]), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        tokens.append(int(out.logits[0, -1].argmax()))
        step = [tokens[-1]]
    return tokens


def _llama_greedy(path, ids: list[int]) -> list[int]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=physical_cores(), verbose=False)
    tokens = []
    step = ids
    for _ in range(NEW_TOKENS):
        llm.eval(step)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        tokens.append(int(np.argmax(logits)))
        step = [tokens[-1]]
    return tokens


def test_f16_gguf_reproduces_the_hf_greedy_output_and_quantizes(embedded, pmdata_records, tmp_path):
    model, tokenizer = embedded
    folder = model_location(resolve_model("smollm2-135m"))
    f16 = convert(folder, tmp_path / "model-f16.gguf")
    facts = gguf_facts(f16)
    assert facts["params_m"] == pytest.approx(134.5, abs=0.5) and 15.9 < facts["bits_per_weight"] < 16.5

    ids = _prompt_ids(tokenizer, pmdata_records)
    expected = _hf_greedy(model, ids)
    assert _llama_greedy(f16, ids) == expected, tokenizer.decode(expected)

    q4 = gguf_facts(quantize(f16, tmp_path / "model-q4_0.gguf", "q4_0", 2))
    assert q4["size_mb"] < facts["size_mb"] / 2.5 and q4["bits_per_weight"] < 6
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_an_architecture_the_converter_lacks_is_named(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["FooBarForCausalLM"], "model_type": "foo"})
    )
    with pytest.raises(HealthSLMError, match="does not support the architecture FooBarForCausalLM"):
        convert(folder, tmp_path / "odd.gguf")
    assert not (tmp_path / "odd.gguf").exists()


def test_gguf_scoring_reuses_a_shared_prefix_and_scores_as_from_an_empty_cache(embedded, pmdata_records):
    """Consecutive prompts of a task keep the KV cache of their common instructions; their label scores must
    equal those of each prompt scored alone (a stale cache past the shared part would change them)."""
    from healthslm.llm import local_gguf
    from healthslm.ondevice import gguf_worker

    _, tokenizer = embedded
    spec = next(t for t in BUILTIN_TASKS if t.key == "pmdata_fatigue")
    lines = (pmdata_records / "pmdata" / "fatigue.eval.jsonl").read_text().splitlines()[:3]
    scorer = LabelScorer(None, tokenizer)
    items = []
    for record in map(json.loads, lines):
        context = build_context(record, spec, tokenizer, True, "compact")
        answers = [answer_continuation(a, context) for a in spec.spoken_answers]
        items.append(scorer.tokenize(context, answers, False))  # as the ondevice stage tokenizes them
    assert max(map(len, items[0][1])) >= 2  # continuations past their first token are scored too

    together = gguf_worker(str(local_gguf()), [], items, 2, physical_cores(), 1024)
    alone = [
        gguf_worker(str(local_gguf()), [], [item], 2, physical_cores(), 1024)["scores"][0] for item in items
    ]
    np.testing.assert_allclose(together["scores"], alone, atol=2e-3)
    assert "AMX_INT8 = 1" not in together["build"] and "CPU :" in together["build"]


def _task_items(spec_key: str, tokenizer, records: Path, rows: int) -> list:
    spec = next(t for t in BUILTIN_TASKS if t.key == spec_key)
    lines = (records / spec.dataset / f"{spec.name}.eval.jsonl").read_text().splitlines()[:rows]
    scorer, items = LabelScorer(None, tokenizer), []
    for record in map(json.loads, lines):
        context = build_context(record, spec, tokenizer, True, "compact")
        answers = [answer_continuation(a, context) for a in spec.spoken_answers]
        items.append(scorer.tokenize(context, answers, False))  # as the ondevice stage tokenizes them
    return items


def test_gguf_worker_times_raw_llama_cpp_on_the_same_tokens_and_scores_answers_in_one_pass(
    embedded, pmdata_records
):
    """Raw llama.cpp's rates sit beside the harness's, with their ratio; the C-API decoder scores answers as
    llama.cpp's own Python API does, reading the prompt, then the answer token by token."""
    import llama_cpp

    from healthslm.llm import local_gguf
    from healthslm.ondevice import gguf_worker

    _, tokenizer = embedded
    items = _task_items("pmdata_readiness", tokenizer, pmdata_records, 2)  # answers 1..10: "10." is 3 tokens
    assert max(map(len, items[0][1])) >= 3
    found = gguf_worker(str(local_gguf()), [items[0][0], items[1][0]], items, 6, physical_cores(), 1024)
    raw = found["raw_llama_cpp"]
    for kind in ("prefill", "decode"):
        harness, alone = found[f"{kind}_tokens_per_s"], raw[f"{kind}_tokens_per_s"]
        assert alone > 0 and found[f"{kind}_ratio_to_raw"] == pytest.approx(harness / alone, abs=2e-3)

    # The reference: llama.cpp's own Python API (flash attention, as the worker), the prompt in one batch,
    # then an answer token by token.
    path = str(local_gguf())
    llm = llama_cpp.Llama(
        model_path=path, n_ctx=1024, n_threads=physical_cores(), flash_attn=True, verbose=False
    )

    def log_probs() -> np.ndarray:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())

    for (context, continuations), scores in zip(items, found["scores"], strict=True):
        expected = []
        for continuation in continuations:
            llm.reset()
            llm.eval(context)
            total = 0.0
            for token in continuation:
                total += float(log_probs()[token])
                llm.eval([token])
            expected.append(total)
        np.testing.assert_allclose(scores, expected, atol=2e-3)  # a wrong position moves them by ~0.1+


def test_on_device_accuracy_rescores_a_declared_label_stratified_subset(embedded, pmdata_records, tmp_path):
    """export.accuracy_rows of the ft rows per task, drawn as evaluate draws its rows; HF's on the same."""
    from healthslm.ondevice import closed_task_items
    from healthslm.params import Params
    from healthslm.prepare import available_tasks, eval_sample, read_records

    _, tokenizer = embedded
    params = Params.model_validate({"data": {"datasets": ["pmdata"]}, "export": {"accuracy_rows": 3}})
    ft_dir = tmp_path / "ft"
    for spec in available_tasks(["pmdata"], pmdata_records):
        records = read_records(pmdata_records, spec.dataset, spec.name, "eval")[:8]
        rows = [{"id": r["id"], "answer": r["label"], "gold": r["label"]} for r in records]
        ft_dir.mkdir(exist_ok=True)
        (ft_dir / f"{spec.key}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    tasks = closed_task_items(params, pmdata_records, ft_dir, tokenizer, True, "compact")
    assert [spec.key for spec, _, _ in tasks] == [s.key for s in available_tasks(["pmdata"], pmdata_records)]
    for spec, rows, items in tasks:
        records = read_records(pmdata_records, spec.dataset, spec.name, "eval")[:8]
        drawn = [r["id"] for r in eval_sample(records, spec, 3, params.base.seed)]
        assert [row["id"] for row in rows] == drawn and len(items) == 3


NO_NETWORK = Path(__file__).parent / "no_network"  # its sitecustomize.py refuses all but loopback


def test_export_needs_no_network_after_setup(tmp_path, tiny_model_dir):
    """The converter comes from the sdist setup pinned and kept in the venv: export in a fresh cache, with
    every non-loopback connection and name look-up refused, converts."""
    env = {**os.environ, "PYTHONPATH": str(NO_NETWORK), "HEALTHSLM_CACHE": str(tmp_path / "cache")}
    refused = subprocess.run(
        [sys.executable, "-c", "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/')"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode and "network refused by tests/no_network" in refused.stderr  # the guard holds
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"model": str(tiny_model_dir)}))
    (tmp_path / "artifacts" / "model").mkdir(parents=True)
    (tmp_path / "artifacts" / "model" / "training.json").write_text(json.dumps({"trained": False}))
    healthslm = Path(sys.executable).with_name("healthslm")
    result = subprocess.run([healthslm, "export"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert gguf_facts(tmp_path / "artifacts" / "gguf" / "model-f16.gguf")["params_m"] > 0


def test_the_sdist_is_checked_against_its_pin(tmp_path, monkeypatch):
    """A file at the sdist's place that is not the pinned one is refused, naming both hashes."""
    fake = tmp_path / "share" / "healthslm" / f"llama_cpp_python-{llama_sdist.version()}.tar.gz"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the sdist")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    llama_sdist.sdist.cache_clear()
    try:
        with pytest.raises(HealthSLMError, match=f"is not the pinned {llama_sdist.pin()[1]}"):
            llama_sdist.sdist()
    finally:
        llama_sdist.sdist.cache_clear()


def test_the_pinned_sdist_is_the_version_constraints_install():
    constraints = (ROOT / "constraints.txt").read_text()
    assert f"llama_cpp_python=={llama_sdist.version()}\n" in constraints
