"""The model a stage runs, chosen and loaded one way for every stage.

- `pretrained(params)`: params.yaml's `model` (zero- and few-shot evaluation, token counts).
- `finetuned(params)`: `eval.finetuned`, the train stage's output (merged/ or adapter/ + training.json), a
  merged model folder, or a PEFT adapter for `model`; it carries the prompt format and chat-template choice
  it was trained with.
- `deployed(params)`: what export and on-device benchmark: the fine-tuned model, or the pretrained one when
  the train stage did not train (no `ft` in eval.mode).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from healthslm.errors import HealthSLMError
from healthslm.models.loader import gguf_path, load_model_and_tokenizer, model_location
from healthslm.models.registry import ModelPreset, resolve_model
from healthslm.params import Params
from healthslm.paths import TRAINING_FILE


@dataclass(frozen=True)
class ModelChoice:
    preset: ModelPreset
    adapter: str | None = None  # a PEFT adapter folder merged into the preset's weights on load
    prompt_format: str | None = None  # the format it was trained with (None: not fine-tuned by us)
    chat_template: bool | None = None  # whether it was trained inside its chat template

    @property
    def location(self) -> str:
        return model_location(self.preset)


def weight_files(choice: ModelChoice) -> list[Path]:
    """What the model's weights come from: the preset's GGUF (not its dequantized cache) or its folder, and
    the adapter. Their content hash is part of a run's numerics."""
    preset = choice.preset
    if preset.source == "gguf":
        base = gguf_path(preset.gguf)
    elif preset.source == "hub":  # loaded already, so in the local Hub cache
        from huggingface_hub import snapshot_download

        base = Path(snapshot_download(preset.hf_id, local_files_only=True))
    else:
        base = Path(choice.location)
    return [base, *([Path(choice.adapter)] if choice.adapter else [])]


def load_training_info(model_dir: Path) -> dict | None:
    path = Path(model_dir) / TRAINING_FILE
    return json.loads(path.read_text()) if path.exists() else None


def pretrained(params: Params) -> ModelChoice:
    return ModelChoice(resolve_model(params.model))


def finetuned(params: Params) -> ModelChoice:
    base = resolve_model(params.model)
    location = Path(params.eval.finetuned)
    info = load_training_info(location) or {}
    if info.get("trained") is False:
        raise HealthSLMError(
            f"eval.finetuned: {location}/ holds no trained model ({info.get('reason', 'training skipped')})"
        )
    trained = {"prompt_format": info.get("prompt_format"), "chat_template": info.get("chat_template")}
    for folder in (location / "merged", location):
        if (folder / "config.json").exists():
            return ModelChoice(base.model_copy(update={"local_path": str(folder), "gguf": None}), **trained)
    for folder in (location / "adapter", location):
        if (folder / "adapter_config.json").exists():
            return ModelChoice(base, str(folder), **trained)
    raise HealthSLMError(
        f"eval.finetuned: no model in {location}/ (run the train stage, or give a model or adapter folder)"
    )


def deployed(params: Params) -> ModelChoice:
    info = load_training_info(Path(params.eval.finetuned)) or {}
    return pretrained(params) if info.get("trained") is False else finetuned(params)


def use_chat_template(choice: ModelChoice, tokenizer, requested: bool = True) -> bool:
    """A fine-tuned model is prompted as it was trained; otherwise the chat template wraps the prompt when
    asked for (eval.chat_template), the preset allows it and the tokenizer has one."""
    if choice.chat_template is not None:
        return choice.chat_template
    return requested and choice.preset.chat_template == "tokenizer" and bool(tokenizer.chat_template)


def load(choice: ModelChoice, dtype=None, **model_kwargs):
    """(model, tokenizer) in eval mode, the adapter (if any) merged into the weights."""
    model, tokenizer = load_model_and_tokenizer(choice.preset, dtype=dtype, **model_kwargs)
    if choice.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, choice.adapter).merge_and_unload().eval()
    return model, tokenizer


def save_merged(choice: ModelChoice, out_dir: Path) -> Path:
    """The model as one plain Hugging Face folder: its own folder, or the adapter merged into `out_dir`."""
    if choice.adapter is None:
        return Path(choice.location)
    import torch

    model, tokenizer = load(choice, dtype=torch.float32)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    keep_sentencepiece(choice.preset, Path(out_dir))
    return Path(out_dir)


SENTENCEPIECE_FILE = "tokenizer.model"


def keep_sentencepiece(preset: ModelPreset, out_dir: Path) -> None:
    """transformers' fast tokenizer saves tokenizer.json only, and llama.cpp's converter reads the Llama 2 and
    Phi-3 vocabularies from the SentencePiece file: a saved model keeps its base model's copy."""
    location = model_location(preset)
    if Path(location).is_dir():
        source = Path(location) / SENTENCEPIECE_FILE
    else:  # a Hub id: the file where the Hub's cache holds it
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(location, SENTENCEPIECE_FILE)
        source = Path(cached) if isinstance(cached, str) else None
    if source is not None and source.is_file() and not (out_dir / SENTENCEPIECE_FILE).exists():
        shutil.copy2(source, out_dir / SENTENCEPIECE_FILE)
