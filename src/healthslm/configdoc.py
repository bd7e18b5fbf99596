"""docs/configuration.md, generated so it cannot drift: every params key from the schema (params.py) with
its type, default and the comment params.yaml gives it, and every environment variable healthslm, its stages
and setup.sh read. `healthslm config-docs` writes the page; tests/test_docs.py fails when the committed page
differs or when the code reads a variable this table does not name."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel

from healthslm.params import PARAMS_FILE, Params

CONFIG_DOC = Path("docs/configuration.md")

# Every environment variable the project reads, with what it does. Set by the user unless said otherwise.
ENVIRONMENT = {
    "HEALTHSLM_DATA_MIRROR": "`healthslm fetch` reads the pinned files under this base instead of GitHub: an "
    "http(s) URL laid out as GitHub serves them, or a folder (`healthslm mirror DIR` writes one)",
    "HEALTHSLM_CACHE": "folder for healthslm's model cache (the embedded model converted for "
    "transformers) and llama.cpp's unpacked GGUF converter; default `~/.cache/healthslm`. setup.sh's "
    "llama-cpp-python wheels stay under `$XDG_CACHE_HOME/healthslm/wheels`, Hugging Face's downloads under "
    "`HF_HOME`",
    "XDG_CACHE_HOME": "setup.sh keeps llama-cpp-python wheels under `$XDG_CACHE_HOME/healthslm/wheels` "
    "(default `~/.cache`), keyed by the build flags",
    "HEALTHSLM_TORCH_CUDA": "setup.sh: the PyTorch CUDA index to install torch from on a GPU machine "
    "(default `cu128`)",
    "HEALTHSLM_TORCH_INDEX": "setup.sh: install torch from this index instead of PyTorch's CPU or CUDA one",
    "HEALTHSLM_LLAMA_CMAKE_ARGS": "setup.sh: extra CMake flags for the llama-cpp-python build "
    "(e.g. `-DGGML_CUDA=ON`); a new flag set builds a new wheel",
    "HEALTHSLM_CPUINFO": "setup.sh: read the CPU's flags from this file instead of `/proc/cpuinfo` (tests)",
    "HEALTHSLM_TRACE_READS": "a folder: each stage writes the files it opened there (tests check them "
    "against its deps in dvc.yaml)",
    "HEALTHSLM_PROFILE": "a folder: each stage runs under cProfile and writes where its time went there",
    "HF_ENDPOINT": "the Hugging Face Hub's address (a mirror); Hub presets download from it",
    "HF_HOME": "Hugging Face's cache: a folder that already holds a Hub model lets it run offline",
    "HF_TOKEN": "a Hugging Face token, for gated models (Llama 3.2, Gemma 2)",
    "OPENAI_API_KEY": "the key of a remote LLM endpoint (augment, judge); its name is "
    "`<block>.endpoint.api_key_env`, read from the environment only",
    "WANDB_API_KEY": "with `train.wandb.online: true`, W&B logs online; without it runs stay offline",
    "WANDB_MODE": "set by training (`offline` unless online is asked for and a key is set)",
    "RANK": "set by `accelerate launch`: only rank 0 logs and writes",
    "WORLD_SIZE": "set by `accelerate launch`: the number of training processes, recorded in training.json",
    "DVC_NO_ANALYTICS": "set to 1 by healthslm for the DVC commands it runs",
    "MKL_CBWR": "set by healthslm at import, with `ATEN_CPU_CAPABILITY` and `ONEDNN_MAX_CPU_ISA`: torch's "
    "CPU kernels take one code path on every x86-64 CPU; recorded with each run's numerics",
}


def _type_name(annotation: object) -> str:
    """A schema type as a reader writes it: `int | null`, `list[str]`, `lora | qlora | full`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _comments(text: str) -> dict[str, str]:
    """params.yaml's comment for each dotted key: the comment lines right above it and the one after it; for a
    block, the comment lines right below its header (its first key's, when that key has none of its own). A
    comment line indented past its key's own comment column continues that comment. A flow mapping's keys
    (`lora: {r: null, ...}`) share its comment."""
    found: dict[str, str] = {}
    path: list[str] = []
    above: list[str] = []
    column, header = 0, None  # where the last key's inline comment starts; a block header just read
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if path and column and line.index("#") >= column:
                found[".".join(path)] += " " + comment
            elif header is not None:
                found[header] = " ".join(filter(None, (found[header], comment)))
            else:
                above.append(comment)
            continue
        match = re.match(r"^( *)([A-Za-z_]\w*):(.*)$", line)
        if not match:
            above, column, header = [], 0, None
            continue
        indent, key, rest = match.groups()
        path = [*path[: len(indent) // 2], key]
        value, _, inline = rest.partition("#")
        dotted = ".".join(path)
        found[dotted] = " ".join([*above, inline.strip()]).strip()
        if header is not None and header == ".".join(path[:-1]) and not found[dotted]:
            found[dotted], found[header] = found[header], ""  # the comment under a header is its first key's
        if value.strip().startswith("{"):
            found[f"{dotted}.*"] = found[dotted]
        above, column = [], line.index("#") if inline else 0
        header = dotted if not value.strip() else None
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _rows(model: type[BaseModel], values: BaseModel, prefix: str, comments: dict[str, str]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        value = getattr(values, name)
        if isinstance(value, BaseModel):
            rows += _rows(type(value), value, f"{key}.", comments)
            continue
        default = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...")
        kind = _type_name(field.annotation)
        comment = comments.get(key) or comments.get(f"{prefix}*", "")
        rows.append(f"| `{key}` | {_cell(kind)} | `{_cell(default.strip())}` | {_cell(comment)} |")
    return rows


def configuration_page(params_text: str) -> str:
    """The page, from the schema and params.yaml's comments: a table per block of params.yaml."""
    comments, defaults = _comments(params_text), Params()
    lines = [
        "# Configuration",
        "",
        "Every params key and environment variable: generated by `healthslm config-docs` from the schema "
        "(`src/healthslm/params.py`) and params.yaml's comments, so do not edit it by hand.",
        "",
        "## params.yaml",
        "",
        "Change a key with `dvc exp run -S key=value` (or edit params.yaml and run `dvc repro`); "
        "`healthslm check-params` checks the file without running anything. A stage reads only the keys "
        "dvc.yaml declares for it. The defaults are the schema's; params.yaml repeats them.",
    ]
    for name, field in Params.model_fields.items():
        block, value = field.alias or name, getattr(defaults, name)
        lines += ["", f"### `{block}`", ""]
        if comments.get(block):
            lines += [comments[block], ""]
        lines += ["| key | type | default | what it does |", "|---|---|---|---|"]
        if isinstance(value, BaseModel):
            lines += _rows(type(value), value, f"{block}.", comments)
        else:
            lines += _rows(Params, defaults, "", comments)[:1]
    lines += ["", "## Environment variables", "", "| variable | what it does |", "|---|---|"]
    lines += [f"| `{name}` | {purpose} |" for name, purpose in ENVIRONMENT.items()]
    return "\n".join([*lines, ""])


def write_configuration_page(params_file: Path = PARAMS_FILE, out: Path = CONFIG_DOC) -> bool:
    """Write the page; False when it was already up to date."""
    page = configuration_page(params_file.read_text(encoding="utf-8"))
    if out.exists() and out.read_text(encoding="utf-8") == page:
        return False
    out.write_text(page, encoding="utf-8")
    return True
