"""Resolve params.yaml's `model:` to a preset: a name from presets/, a local directory, or an HF id."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from healthslm.errors import HealthSLMError


class GgufSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    package: str  # a Python package that ships the file
    file: str


class ModelPreset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    hf_id: str | None = None  # Hub id (or, for ad-hoc presets, the id the user gave)
    local_path: str | None = None
    gguf: GgufSource | None = None
    chat_template: Literal["tokenizer", "none"] = "tokenizer"
    lora_target_modules: list[str] | Literal["all-linear"] = "all-linear"
    paper_name: str | None = None

    @property
    def source(self) -> Literal["gguf", "local", "hub"]:
        return "gguf" if self.gguf else "local" if self.local_path else "hub"


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
    if path.is_dir():
        return ModelPreset(name=path.resolve().name, local_path=str(path.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return ModelPreset(name=spec.replace("/", "--"), hf_id=spec)
    raise HealthSLMError(
        f"params.yaml: model: {spec!r} is not a preset ({', '.join(preset_names())}), "
        "an existing local directory, or a Hub id like 'org/name'"
    )
