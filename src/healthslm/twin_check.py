"""A twin's round trip (models/twin.py): its transformers weights and tokenizer against the GGUF that
llama.cpp's converter makes of them. Random weights make this a sharp check of the converter for each
architecture: a tensor laid out wrong (rotary permutation, fused projections, tied heads) changes every
answer, not a few.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from healthslm.export import convert
from healthslm.ondevice import gguf_worker
from healthslm.params import Params
from healthslm.prepare import available_tasks, read_records
from healthslm.prompts import answer_continuation, build_context, trainer_prompt
from healthslm.resources import physical_cores
from healthslm.scoring import LabelScorer

LOGLIK_TOLERANCE = 0.05  # nats per answer: f16 weights and llama.cpp's kernels; measured up to 0.013


def hf_label_scores(model, scoring) -> list[list[float]]:
    """Each continuation's summed log-likelihood after its context, one plain forward per continuation."""
    import torch

    scores = []
    with torch.inference_mode():
        for context, continuations in scoring:
            row = []
            for continuation in continuations:
                logits = model(input_ids=torch.tensor([context + continuation])).logits[0].float()
                logp = torch.log_softmax(logits, dim=-1)
                row.append(sum(logp[len(context) - 1 + j, t].item() for j, t in enumerate(continuation)))
            scores.append(row)
    return scores


def llama_cpp_tokens(gguf: Path, texts: list[str]) -> list[list[int]]:
    """llama.cpp's own tokenization of each text with the GGUF's vocabulary: special tokens parsed, BOS
    where the GGUF says to add one (what prompts.encode_prompt does with transformers' tokenizer)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return [llm.tokenize(text.encode(), add_bos=True, special=True) for text in texts]


def prompts(params: Params, records_dir: Path, tokenizer, chat: bool, prompt_format: str, rows: int):
    """(context text, context ids, [label continuation ids]) of the first eval rows of every closed task, as
    the label scorer tokenizes them."""
    scorer, out = LabelScorer(None, tokenizer), []
    for spec in [s for s in available_tasks(params.data.datasets, records_dir) if s.closed]:
        for record in read_records(records_dir, spec.dataset, spec.name, "eval")[:rows]:
            context = build_context(record, spec, tokenizer, chat, prompt_format)
            continuations = [answer_continuation(a, context) for a in spec.spoken_answers]
            out.append((context, *scorer.tokenize(context, continuations, not chat)))
    return out


def check_twin(
    folder: Path, records_dir: Path, params: Params, chat: bool, prompt_format: str, rows: int = 3
):
    """Convert the twin to f16 GGUF and compare on `rows` eval rows of every closed task: llama.cpp's tokens
    of each prompt against transformers', and both engines' label log-likelihoods and answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    items = prompts(params, records_dir, tokenizer, chat, prompt_format, rows)
    scoring = [(context, continuations) for _, context, continuations in items]
    with tempfile.TemporaryDirectory(prefix="healthslm-twin-") as tmp:
        gguf = convert(folder, Path(tmp) / "model-f16.gguf")
        tokens = llama_cpp_tokens(gguf, [trainer_prompt(text, tokenizer, chat) for text, _, _ in items])
        n_ctx = max(len(context) + max(map(len, conts)) for context, conts in scoring) + 8
        gguf_scores = gguf_worker(str(gguf), [], scoring, 0, physical_cores(), n_ctx)["scores"]
    hf_scores = hf_label_scores(model, scoring)
    pairs = list(zip(hf_scores, gguf_scores, strict=True))
    differences = [abs(a - b) for hf, gg in pairs for a, b in zip(hf, gg, strict=True)]
    return {
        "rows": len(scoring),
        "same_tokens": sum(t == context for t, (context, _) in zip(tokens, scoring, strict=True)),
        "same_answer": sum(int(np.argmax(hf) == np.argmax(gg)) for hf, gg in pairs),
        "max_loglik_difference": round(max(differences), 4),
    }
