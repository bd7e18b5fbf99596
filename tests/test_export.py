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

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=2, verbose=False)
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

    together = gguf_worker(str(local_gguf()), [], items, 2, 2, 1024)
    alone = [gguf_worker(str(local_gguf()), [], [item], 2, 2, 1024)["scores"][0] for item in items]
    np.testing.assert_allclose(together["scores"], alone, atol=2e-3)
    assert "AMX_INT8 = 1" not in together["build"] and "CPU :" in together["build"]


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
