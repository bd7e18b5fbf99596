"""The typed schema of params.yaml. Every stage reads its block through `load_params`.

A wrong type, unknown key or bad value fails with one line naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthslm.errors import HealthSLMError

PARAMS_FILE = Path("params.yaml")


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Block):
    seed: int = 42


class DataParams(Block):
    datasets: list[Literal["pmdata"]] = Field(default=["pmdata"], min_length=1)


class PrepareParams(Block):
    prompt_format: Literal["seed"] = "seed"


class ValidateParams(Block):
    max_prompt_chars: int = Field(default=20_000, gt=0)


class EvalParams(Block):
    mode: Literal["zs"] = "zs"
    strategy: Literal["score"] = "score"
    limit: int | None = Field(default=40, gt=0)
    chat_template: bool = True
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    bootstrap_samples: int = Field(default=1000, ge=100)


class Params(Block):
    model: str = Field(default="smollm2-135m", min_length=1)
    base: BaseParams = BaseParams()
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    eval: EvalParams = EvalParams()


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    got = error.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return f"{key}: {error['msg']}{shown}"


def parse_params(raw: object, source: str = str(PARAMS_FILE)) -> Params:
    try:
        return Params.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False))
        raise HealthSLMError(f"{source}: {problems}") from None


def load_params(path: Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.exists():
        raise HealthSLMError(f"{path}: not found; run from the project root (where dvc.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise HealthSLMError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_params(raw, str(path))
