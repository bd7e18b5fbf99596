"""The typed schema of params.yaml. Every stage reads its block through `load_params`.

A wrong type, unknown key or bad value fails with one line naming the key and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlparse, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from healthslm.errors import HealthSLMError

PARAMS_FILE = Path("params.yaml")


def _no_auto(value: object) -> object:
    if value == "auto":
        raise ValueError(
            "'auto' (a speed probe on this machine) is gone: numerics come from params, so use float32 "
            "(the same numbers on any CPU) or bfloat16 (faster where supported, machine-dependent)"
        )
    return value


# float32: the same numbers on every x86-64 CPU (models/dtype.py); bfloat16: autocast, the faster choice.
Dtype = Annotated[Literal["float32", "bfloat16"], BeforeValidator(_no_auto)]

_CREDENTIAL_QUERY = re.compile(r"(key|token|secret|sig|password|auth)", re.I)


def public_url(url: str) -> str:
    """A URL as reports show it: scheme, host, port and path; no user, password, query or fragment."""
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def public_params(params: Params) -> dict:
    """The params as reports show them: every endpoint's base_url through `public_url`."""
    shown = params.model_dump(by_alias=True)
    for block in ("augment", "judge"):
        if url := shown[block]["endpoint"]["base_url"]:
            shown[block]["endpoint"]["base_url"] = public_url(url)
    return shown


def is_loopback(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ALL_DATASETS = ["pmdata", "aw_fb", "globem", "pubmedqa", "medquad", "dr", "dreaddit"]


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Block):
    seed: int = 42


class DataParams(Block):
    datasets: list[str] = Field(default=ALL_DATASETS, min_length=1)
    plugins: list[str] = []  # modules that register extra datasets (see healthslm.data.registry)
    # seed: the published train/eval files; grouped: re-split so no person (group of overlapping windows)
    # has records on both sides (data/people.py)
    split: Literal["seed", "grouped"] = "seed"


class PrepareParams(Block):
    few_shot_k: list[int] = Field(default=[1, 3, 5, 10], min_length=1)


# The physical range of each quantity a wearable reading measures (data/readings.py maps readings to
# quantities); the sources of the bounds are in params.yaml.
PHYSICAL_RANGES = {
    "steps": (0, 100_000),
    "calories": (0, 15_000),
    "heart_rate": (0, 250),
    "minutes_per_day": (0, 1440),
    "mood": (1, 5),
    "met": (0, 23),
    "percent": (0, 100),
}


class ValidateParams(Block):
    min_input_chars: int = Field(default=5, ge=0)
    max_prompt_chars: int = Field(default=20_000, gt=0)
    max_output_chars: int = Field(default=40_000, gt=0)
    near_duplicate_similarity: float = Field(default=0.95, gt=0, le=1)
    # Share of eval inputs found in train (exact or near) above which the gate fails. PMData measures
    # 0.137: its 14-day windows overlap, so neighbouring windows land on both sides of the split.
    max_leakage: float = Field(default=0.2, ge=0, le=1)
    # Share of a split's rows that repeat another row's input and output, above which the gate fails.
    max_duplicate_share: float = Field(default=0.05, ge=0, le=1)
    physical_ranges: dict[str, tuple[float, float]] = PHYSICAL_RANGES

    @field_validator("physical_ranges", mode="before")
    @classmethod
    def _ranges(cls, ranges: dict) -> dict:
        """Named ranges replace the defaults; unnamed ones keep them."""
        unknown = sorted(set(ranges or {}) - set(PHYSICAL_RANGES))
        if unknown:
            raise ValueError(f"unknown quantity {', '.join(unknown)}; known: {', '.join(PHYSICAL_RANGES)}")
        for name, bounds in (ranges or {}).items():
            if isinstance(bounds, list | tuple) and len(bounds) == 2 and not bounds[0] <= bounds[1]:
                raise ValueError(f"{name}: {list(bounds)} is not a range (low above high)")
        return {**PHYSICAL_RANGES, **(ranges or {})}


class LoraOverrides(Block):
    r: int | None = None
    alpha: int | None = None
    dropout: float | None = None
    target_modules: list[str] | Literal["all-linear"] | None = None


class WandbParams(Block):
    enabled: bool = True
    online: bool = False  # also needs WANDB_API_KEY in the environment; otherwise runs stay offline
    project: str = "healthslm"


class TrainParams(Block):
    method: Literal["lora", "qlora", "full"] = "lora"
    datasets: list[str] | None = None  # null = every dataset of data.datasets
    prompt_format: Literal["seed", "compact"] = "compact"
    examples_per_task: int | None = Field(default=16, gt=0)  # null = every train record
    # What the model learns to answer: the gold label alone, the kept augmented response (label first, then
    # its explanation), or both (each record twice). A record without a kept response falls back to its label
    # or is left out (without_response).
    targets: Literal["label", "augmented", "both"] = "label"
    without_response: Literal["label", "drop"] = "label"
    # Overrides of the model's recipe (models/presets/<model>.yaml); null keeps the recipe's value.
    lora: LoraOverrides = LoraOverrides()
    learning_rate: float | None = None
    epochs: float | None = None
    max_steps: int | None = None
    max_length: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    dtype: Dtype = "float32"
    # Activation memory of the largest batch (every example at max_length), estimated before training; null =
    # 10 % of this machine's RAM. Gradient checkpointing (null = only if needed) and smaller batches with more
    # accumulation keep it within.
    activation_budget_gb: float | None = Field(default=None, gt=0)
    gradient_checkpointing: bool | None = None
    save_steps: int = Field(default=10, gt=0)  # checkpoint interval; an interrupted run resumes from the last
    merge: bool = True  # also write the adapter merged into the base model (needed by export)
    wandb: WandbParams = WandbParams()

    def recipe_overrides(self) -> dict:
        fields = ["lora", "learning_rate", "epochs", "max_steps", "max_length", "batch_size", "grad_accum"]
        overrides = self.model_dump(include=set(fields), exclude_none=True)
        if self.method == "full" and self.learning_rate is not None:
            overrides["full_learning_rate"] = overrides.pop("learning_rate")
        return overrides


Mode = Literal["zs", "fs-1", "fs-3", "fs-5", "fs-10", "ft"]


class EvalParams(Block):
    mode: list[Mode] = Field(default=["zs", "ft"], min_length=1)  # `-S eval.mode=fs-5` also works
    finetuned: str = "artifacts/model"  # the `ft` mode's model: the train stage's output or any local path
    strategy: Literal["score", "generate"] = "score"
    prompt_format: Literal["seed", "compact"] = "seed"
    limit: int | None = Field(default=25, gt=0)
    text_limit: int | None = Field(default=5, gt=0)  # open-ended examples per task (generation is slow)
    max_new_tokens: int = Field(default=20, gt=0)  # the seed's, for `generate`
    text_max_new_tokens: int = Field(default=48, gt=0)
    text_batch_size: int = Field(default=8, gt=0)  # open-ended prompts generated together, bucketed by length
    score_batch_size: int = Field(default=1, gt=0)  # closed rows per forward pass: 1 reuses the few-shot
    # prefix's cache (fastest on a CPU); 16-64 fills a GPU. Scores agree within float rounding.
    max_resamples: int = Field(default=0, ge=0)  # `generate`: resample an invalid answer (the seed's option)
    chat_template: bool = True
    dtype: Dtype = "float32"
    fp32_check_rows: int = Field(default=5, ge=0)  # bfloat16: rows per task also scored in fp32 (agreement)
    bootstrap_samples: int = Field(default=1000, ge=100)

    @field_validator("mode", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value


def _has_credentials(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.username or parts.password) or any(
        _CREDENTIAL_QUERY.search(name) for name, _ in parse_qsl(parts.query, keep_blank_values=True)
    )


class Endpoint(Block):
    """An OpenAI-compatible endpoint. base_url null = a llama.cpp server this stage starts on 127.0.0.1
    with the embedded GGUF. Records are health data: a non-loopback base_url also needs allow_remote."""

    base_url: str | None = None
    model: str | None = None  # the served model's name (null: the local server's embedded model)
    api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")  # never the key itself
    allow_remote: bool = False
    concurrency: int = Field(default=2, gt=0)
    timeout_s: float = Field(default=600, gt=0)  # a CPU server can be slow; a retry would queue a duplicate
    max_retries: int = Field(default=3, ge=0)  # the openai client's own retries (timeouts, 429, 5xx)
    price_per_1m_input: float = Field(default=0.0, ge=0)  # USD, for the cost estimate
    price_per_1m_output: float = Field(default=0.0, ge=0)
    n_ctx: int = Field(default=4096, ge=512)  # local server only
    n_threads: int | None = Field(default=None, gt=0)  # local server only; null = one per physical core

    @model_validator(mode="after")
    def _usable(self):
        if self.base_url and urlparse(self.base_url).scheme not in ("http", "https"):
            raise ValueError(
                f"endpoint.base_url must be an http(s) URL (got scheme {urlparse(self.base_url).scheme!r})"
            )
        if self.base_url and _has_credentials(self.base_url):
            raise ValueError(
                "endpoint.base_url carries credentials (user:password@ or a key in the query), which would "
                "land in params.yaml, dvc.lock and reports; put the key in the variable api_key_env names"
            )
        if self.base_url and not self.model:
            raise ValueError("endpoint.model is required with a base_url")
        if self.base_url and not is_loopback(self.base_url) and not self.allow_remote:
            raise ValueError(
                "endpoint.base_url is not on this machine and the records are health data; "
                "set endpoint.allow_remote: true to send them there"
            )
        return self


class GenerationParams(Block):
    """Sampling settings of a stage that asks an OpenAI-compatible endpoint."""

    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=160, gt=0)
    seed: int = 42

    def generation(self) -> dict:
        """The request's sampling arguments (also part of each response's cache key)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}


class AugmentParams(GenerationParams):
    tasks: list[str] = ["dreaddit_stress", "pubmedqa_answer", "pmdata_fatigue"]  # task keys (dataset_task)
    per_task: int | None = Field(default=4, gt=0)  # train records per task (null = all)
    import_existing: bool = True  # DR/Dreaddit: the datasets' gpt-3.5-turbo explanations, as augmented
    min_chars: int = Field(default=40, ge=1)  # a response outside these bounds is rejected
    max_chars: int = Field(default=2000, gt=0)
    endpoint: Endpoint = Endpoint()

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")
        return self


class JudgeParams(GenerationParams):
    # Whose open-ended answers are judged: modes of eval.mode without shots (zs, ft); null = zs if evaluated
    modes: list[Mode] | None = None
    max_tokens: int = Field(default=200, gt=0)
    endpoint: Endpoint = Endpoint()


Quantization = Literal["q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0"]


class ExportParams(Block):
    quantizations: list[Quantization] = Field(default=["q8_0", "q4_0"], min_length=1)
    n_threads: int | None = Field(default=None, gt=0)  # llama.cpp threads (null = one per physical core)
    bench_prompts: int = Field(default=4, gt=0)  # task prompts timed per engine
    bench_new_tokens: int = Field(default=32, gt=1)  # decoded per prompt (EOS ignored)
    # ft eval rows per closed task each GGUF re-scores: a seeded, label-stratified subset (null = all)
    accuracy_rows: int | None = Field(default=5, gt=0)


class Params(Block):
    model: str = Field(default="smollm2-135m", min_length=1)
    base: BaseParams = BaseParams()
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    augment: AugmentParams = AugmentParams()
    train: TrainParams = TrainParams()
    eval: EvalParams = EvalParams()
    judge: JudgeParams = JudgeParams()
    export: ExportParams = ExportParams()

    @property
    def judged_modes(self) -> list[str]:
        """The modes whose open-ended answers the judge scores."""
        if self.judge.modes is not None:
            return list(self.judge.modes)
        return [m for m in self.eval.mode if m == "zs"]

    @model_validator(mode="after")
    def _runnable(self):
        """Combinations of blocks that cannot run, refused before any stage starts."""
        pools = self.prepare.few_shot_k
        for mode in self.eval.mode:
            if mode.startswith("fs-") and int(mode[3:]) not in pools:
                has = ", ".join(map(str, pools))
                raise ValueError(f"eval.mode {mode} needs {mode[3:]} in prepare.few_shot_k (has {has})")
        if missing := [m for m in self.judge.modes or [] if m not in self.eval.mode]:
            raise ValueError(
                f"judge.modes {', '.join(missing)} not in eval.mode ({', '.join(self.eval.mode)}): "
                "the judge scores the answers evaluate writes"
            )
        if shots := [m for m in self.judge.modes or [] if m.startswith("fs-")]:
            raise ValueError(
                f"judge.modes {', '.join(shots)}: few-shot modes write no open-ended answers (zs, ft do)"
            )
        if extra := [d for d in self.train.datasets or [] if d not in self.data.datasets]:
            raise ValueError(f"train.datasets {', '.join(extra)} not in data.datasets")
        return self


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if error["type"] == "value_error":  # our validators' messages name the keys themselves
        message = error["msg"].removeprefix("Value error, ")
        return f"{key}: {message}" if key and not message.startswith(key.rsplit(".", 1)[0]) else message
    got = error.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return f"{key}: {error['msg']}{shown}"


def parse_params(raw: object, source: str = str(PARAMS_FILE), datasets: bool = True) -> Params:
    """The validated params; `datasets` also checks data.datasets, importing the plug-ins of data.plugins."""
    try:
        params = Params.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False))
        raise HealthSLMError(f"{source}: {problems}") from None
    if datasets:
        _check_datasets(params, source)
    return params


def _check_datasets(params: Params, source: str) -> None:
    from healthslm.data.registry import DATASETS, load_plugins

    load_plugins(params.data.plugins)
    unknown = [name for name in params.data.datasets if name not in DATASETS]
    if unknown:
        raise HealthSLMError(
            f"{source}: data.datasets: unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}"
        )


def load_params(path: Path = PARAMS_FILE, datasets: bool = True) -> Params:
    path = Path(path)
    if not path.exists():
        raise HealthSLMError(f"{path}: not found; run from the project root (where dvc.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise HealthSLMError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_params(raw, str(path), datasets)
