"""Twins: a preset's architecture with seeded random weights and its family's real tokenizer, built offline.

The hub serves the presets' weights and tokenizers, and these machines cannot reach it. llama.cpp's own
vocabulary files (in the llama-cpp-python sdist, pinned by sha256: models/llama_sdist.py) are the real
tokenizers of the Llama 2, Llama 3, Phi-3 and Qwen2 families, so a twin exercises every code path that
depends on the tokenizer, the chat template, the module names (LoRA targets) and the architecture (the GGUF
converter), and measures memory and speed at full depth. Its answers mean nothing: random weights.
`-S model=DIR` runs the pipeline on one (models/registry.py resolves a twin folder to its preset's recipe).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from healthslm.errors import HealthSLMError
from healthslm.io import atomic_dir
from healthslm.models import llama_sdist
from healthslm.models.capacity import Architecture
from healthslm.models.loader import gguf_path
from healthslm.models.registry import TWIN_FILE, ModelPreset, TwinSpec, load_preset


def vocabulary_file(spec: TwinSpec, preset: ModelPreset) -> Path:
    """The GGUF that carries the preset family's tokenizer: llama.cpp's vocabulary file, or the embedded
    model's own GGUF."""
    if spec.tokenizer == "embedded":
        return gguf_path(preset.gguf)
    return llama_sdist.pinned_file(f"models/ggml-vocab-{spec.tokenizer}.gguf")


def chat_template(spec: TwinSpec) -> str | None:
    """The template the preset names: None keeps the vocabulary file's own."""
    kind, _, name = (spec.chat_template or "vocab").partition(":")
    if kind == "sdist":
        return llama_sdist.pinned_file(name).read_text(encoding="utf-8")
    if kind == "preset":
        return resources.files("healthslm.models").joinpath("presets", "templates", name).read_text("utf-8")
    return None


def load_tokenizer(preset: ModelPreset):
    """The preset family's real tokenizer, with the model's chat template and BOS rule."""
    from transformers import AutoTokenizer

    spec = _spec(preset)
    vocab = vocabulary_file(spec, preset)
    tokenizer = AutoTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name)
    if (template := chat_template(spec)) is not None:
        tokenizer.chat_template = template
    if spec.add_bos is not None:  # the vocabulary file's flag differs from the model's tokenizer_config
        tokenizer.add_bos_token = spec.add_bos
    if not tokenizer.chat_template and preset.chat_template == "tokenizer":
        raise HealthSLMError(
            f"model preset {preset.name}: twin.chat_template: the vocabulary has none; name one"
        )
    return tokenizer


def _spec(preset: ModelPreset) -> TwinSpec:
    if preset.twin is None or preset.twin.unavailable:
        reason = preset.twin.unavailable if preset.twin else "the preset names no tokenizer for a twin"
        raise HealthSLMError(f"model preset {preset.name} has no twin: {reason}")
    return preset.twin


def sentencepiece_model(vocab: Path) -> bytes | None:
    """A SentencePiece model (tokenizer.model) rebuilt from a GGUF's SPM vocabulary (pieces, scores, types),
    as the real Llama 2 and Phi-3 folders ship one (llama.cpp's converter reads it); None for BPE."""
    import llama_cpp
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as spm

    # llama.cpp reads the vocabulary's kind at once; GGUFReader parses every piece in Python (~10 s at 128k).
    llm = llama_cpp.Llama(model_path=str(vocab), vocab_only=True, verbose=False)
    kind = llama_cpp.llama_vocab_type(llama_cpp.llama_model_get_vocab(llm.model))
    llm.close()
    if kind != llama_cpp.LLAMA_VOCAB_TYPE_SPM:
        return None
    fields = GGUFReader(vocab).fields

    def value(key: str):
        field = fields[key]
        return (
            [field.contents(i) for i in range(len(field.data))] if len(field.data) > 1 else field.contents()
        )

    model = spm.ModelProto()
    model.trainer_spec.model_type = spm.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_id = value("tokenizer.ggml.unknown_token_id")
    model.trainer_spec.bos_id = value("tokenizer.ggml.bos_token_id")
    model.trainer_spec.eos_id = value("tokenizer.ggml.eos_token_id")
    model.trainer_spec.pad_id = -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    unknown = value("tokenizer.ggml.unknown_token_id")
    pieces = zip(
        value("tokenizer.ggml.tokens"),
        value("tokenizer.ggml.scores"),
        value("tokenizer.ggml.token_type"),
        strict=True,
    )
    for index, (piece, score, kind) in enumerate(pieces):
        # GGUF token types number as SentencePiece's, but SentencePiece allows one unknown piece: phi-3's
        # file marks its padding pieces unknown too (they are unused) and its <unk> a control token.
        kind = spm.ModelProto.SentencePiece.UNKNOWN if index == unknown else kind
        if kind == spm.ModelProto.SentencePiece.UNKNOWN and index != unknown:
            kind = spm.ModelProto.SentencePiece.UNUSED
        model.pieces.add(piece=piece, score=score, type=kind)
    return model.SerializeToString()


def narrowed(arch: Architecture, heads: int) -> Architecture:
    """The architecture with `heads` attention heads of the same width, for the tests' twins: key-value heads
    cut in proportion (at least one), hidden and MLP widths with them. Tokenizer, module names, head width and
    the GGUF converter's path stay the preset's; the vocabulary's rows cost a fraction. (A narrowed twin's
    preset still plans training memory at the full width: an overestimate.)"""
    kv_heads = max(1, arch.num_key_value_heads * heads // arch.num_attention_heads)
    if not 1 <= heads <= arch.num_attention_heads or heads % kv_heads:
        raise HealthSLMError(
            f"heads={heads}: needs 1 to {arch.num_attention_heads} heads, a multiple of {kv_heads} "
            "key-value heads"
        )
    hidden = arch.hidden_size * heads // arch.num_attention_heads  # = heads x head width unless set apart
    update = {"num_attention_heads": heads, "num_key_value_heads": kv_heads, "hidden_size": hidden}
    # A multiple of 32: GGUF's quantization blocks must tile every row (else llama.cpp falls back).
    update["intermediate_size"] = 32 * max(1, round(arch.intermediate_size * hidden / arch.hidden_size / 32))
    return arch.model_copy(update=update)


def build_twin(
    name: str, out: Path, layers: int | None = None, seed: int = 0, heads: int | None = None
) -> Path:
    """Write a transformers model folder: the preset's architecture (`layers` decoder layers, default all;
    `heads` attention heads, default all: see `narrowed`), weights drawn with `seed`, the family's real
    tokenizer and chat template, and twin.json."""
    import torch
    from transformers import AutoModelForCausalLM

    preset = load_preset(name)
    spec = _spec(preset)
    if preset.architecture is None:
        raise HealthSLMError(f"model preset {name}: no architecture to build a twin of")
    tokenizer = load_tokenizer(preset)
    arch = preset.architecture
    if layers is not None:
        if not 1 <= layers <= arch.num_hidden_layers:
            raise HealthSLMError(f"--layers {layers}: {name} has 1 to {arch.num_hidden_layers} layers")
        arch = arch.model_copy(update={"num_hidden_layers": layers})
    if heads is not None:
        arch = narrowed(arch, heads)
    config = arch.config()
    # A vocabulary file may carry a token past the model's embedding (llama-bpe's extra <|endoftext|>).
    config.vocab_size = max(arch.vocab_size, len(tokenizer))
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    vocab = vocabulary_file(spec, preset)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if spm_model := sentencepiece_model(vocab):
            (tmp / "tokenizer.model").write_bytes(spm_model)
        facts = {
            "preset": name,
            "layers": arch.num_hidden_layers,
            "heads": arch.num_attention_heads,
            "hidden_size": arch.hidden_size,
            "seed": seed,
            "tokenizer": spec.tokenizer,
            "vocabulary_file": vocab.name,
            "chat_template": spec.chat_template or "vocab",
            "template_source": spec.template_source,
        }
        (tmp / TWIN_FILE).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return out
