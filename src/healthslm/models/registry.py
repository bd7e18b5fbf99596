"""Resolve params.yaml's `model:` to a preset: a name from presets/, a local directory, or an HF id."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthslm.errors import HealthSLMError
from healthslm.models.capacity import Architecture

TWIN_FILE = "twin.json"  # in a twin's folder (models/twin.py): the preset it twins, its depth and seed


class GgufSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    package: str  # a Python package that ships the file
    file: str


class LoraRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    r: int = Field(gt=0)
    alpha: int = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class Recipe(BaseModel):
    """How to fine-tune one model: the preset's defaults, each field overridable in params.yaml `train:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lora: LoraRecipe = LoraRecipe(r=16, alpha=32, dropout=0.05)
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)  # LoRA / QLoRA
    full_learning_rate: float = Field(default=2e-5, gt=0, lt=1)  # full fine-tuning
    epochs: float = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0)  # when set, wins over epochs
    max_length: int = Field(default=1024, ge=32)
    batch_size: int = Field(default=4, gt=0)
    grad_accum: int = Field(default=1, gt=0)


class TwinSpec(BaseModel):
    """How to build the preset's twin offline (models/twin.py): its family's real tokenizer and template."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # A llama.cpp vocabulary file (ggml-vocab-<name>.gguf in the llama-cpp-python sdist), or "embedded": the
    # preset's own GGUF.
    tokenizer: Literal["llama-spm", "llama-bpe", "phi-3", "qwen2", "embedded"] | None = None
    # "vocab": the vocabulary file's own; "sdist:<path>": llama.cpp's copy of the model's template;
    # "preset:<file>": presets/templates/<file>, whose source template_source names.
    chat_template: str = "vocab"
    template_source: str | None = None
    add_bos: bool | None = None  # where the model's tokenizer_config differs from the vocabulary file
    unavailable: str | None = None  # why no twin can be built offline


class ModelPreset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    hf_id: str | None = None  # Hub id (or, for ad-hoc presets, the id the user gave)
    local_path: str | None = None
    gguf: GgufSource | None = None
    chat_template: Literal["tokenizer", "none"] = "tokenizer"
    architecture: Architecture | None = None  # config.json facts: sizes training before any download
    recipe: Recipe = Recipe()
    paper_name: str | None = None
    twin: TwinSpec | None = None
    twin_of: str | None = None  # set on a twin's folder: the preset whose shape and tokenizer it has

    @property
    def source(self) -> Literal["gguf", "local", "hub"]:
        return "gguf" if self.gguf else "local" if self.local_path else "hub"

    @property
    def provenance(self) -> str:
        """What the weights are, said beside every number they produce."""
        if self.gguf:
            quant = self.gguf.file.rsplit(".", 2)[-2]  # SmolLM2-135M-Instruct.Q4_1.gguf -> Q4_1
            name = (self.hf_id or self.name).rsplit("/", 1)[-1]
            return f"{name}: {quant} GGUF from PyPI `{self.gguf.package}`, dequantized to fp32"
        if self.twin_of:
            return f"random-weight twin of {self.twin_of} at {self.local_path} (its answers mean nothing)"
        if self.local_path:
            return f"local weights at {self.local_path}"
        return f"{self.hf_id} (Hugging Face Hub weights)"

    @property
    def prequantized(self) -> str | None:
        """The quantization the weights already went through (a GGUF source), else None."""
        return self.gguf.file.rsplit(".", 2)[-2] if self.gguf else None


def _preset_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("healthslm.models").joinpath("presets")
    return {f.name.removesuffix(".yaml"): f for f in folder.iterdir() if f.name.endswith(".yaml")}


def preset_names() -> list[str]:
    return sorted(_preset_files())


def load_preset(name: str) -> ModelPreset:
    file = _preset_files()[name]
    try:
        return ModelPreset.model_validate(yaml.safe_load(file.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise HealthSLMError(f"model preset {file.name}: {exc.errors()[0]['msg']}") from None


def resolve_model(spec: str) -> ModelPreset:
    """A preset name, else an existing local directory, else a Hub id like 'org/name'."""
    if spec in _preset_files():
        return load_preset(spec)
    path = Path(spec).expanduser()
    if (path / TWIN_FILE).is_file():
        return _twin_preset(path.resolve())
    if path.is_dir():
        return ModelPreset(name=path.resolve().name, local_path=str(path.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return ModelPreset(name=spec.replace("/", "--"), hf_id=spec)
    raise HealthSLMError(
        f"params.yaml: model: {spec!r} is not a preset ({', '.join(preset_names())}), "
        "an existing local directory, or a Hub id like 'org/name'"
    )


def _twin_preset(folder: Path) -> ModelPreset:
    """A twin's folder runs with its preset's recipe and template rule, at the twin's depth."""
    facts = json.loads((folder / TWIN_FILE).read_text(encoding="utf-8"))
    preset = load_preset(facts["preset"])
    architecture = preset.architecture.model_copy(update={"num_hidden_layers": facts["layers"]})
    return preset.model_copy(
        update={"name": f"{preset.name}-twin", "hf_id": None, "gguf": None, "local_path": str(folder),
                "architecture": architecture, "twin_of": preset.name, "paper_name": None}
    )  # fmt: skip


def _deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _deep_merge(base[key], value) if isinstance(value, dict) else value
    return merged


def effective_recipe(preset: ModelPreset, overrides: dict) -> Recipe:
    """The preset's recipe with params.yaml's `train:` overrides on top; bad values fail in one line."""
    try:
        return Recipe.model_validate(_deep_merge(preset.recipe.model_dump(), overrides))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            key = ".".join(str(part) for part in error["loc"])
            overridden = _has_path(overrides, error["loc"])
            source = "params.yaml: train" if overridden else f"recipe of {preset.name}"
            problems.append(f"{source}.{key}: {error['msg']} (got {error.get('input')!r})")
        raise HealthSLMError("; ".join(problems)) from None


def _has_path(tree: dict, path: tuple) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True
