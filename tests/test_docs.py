"""README.md and docs/ stay true: every relative link and anchor resolves; every `healthslm` subcommand and
option, params key, environment variable and dvc stage they name exists; the configuration page is what the
schema generates; and the code reads no environment variable that page leaves out."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml
from pydantic import BaseModel

from healthslm.cli import cli
from healthslm.configdoc import ENVIRONMENT, configuration_page
from healthslm.params import Params
from tests.conftest import ROOT

PAGES = sorted([ROOT / "README.md", ROOT / "stages" / "README.md", ROOT / "plugins" / "README.md",
                *ROOT.glob("docs/*.md")])  # fmt: skip
BLOCKS = ("model", "base", "data", "prepare", "validate", "augment", "train", "eval", "judge", "export")
FILE_SUFFIXES = {"csv", "json", "jsonl", "py", "dvc", "toon", "yaml", "md", "html", "png", "gguf", "tsv",
                 "lock"}  # fmt: skip
# Read by third-party tools, not by this project's code, and named in the docs for that reason.
THIRD_PARTY_ENV = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                   "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GITHUB_STEP_SUMMARY",
                   "PYTEST_ADDOPTS"}  # fmt: skip


def _prose_and_code(text: str) -> tuple[str, list[str]]:
    """The page without its fenced code blocks, and every piece of code on it (blocks and `spans`)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return prose, [*blocks, *re.findall(r"`([^`\n]+)`", prose)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (`_`, `-` kept), spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    prose, _ = _prose_and_code(page.read_text(encoding="utf-8"))
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose, re.M)}


def _broken_links(page: Path) -> list[str]:
    prose, _ = _prose_and_code(page.read_text(encoding="utf-8"))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"(https?|mailto):", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    assert _broken_links(page) == []


def test_the_link_check_catches_a_missing_file_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[a](page.md#a-title) [b](gone.md) [c](#nowhere) [d](https://x.org/#y)\n")
    assert _broken_links(page) == ["gone.md: no such file", "#nowhere: no heading with that anchor"]


def _commands() -> dict[str, click.Command]:
    """Every subcommand by its words after `healthslm` ("study run" for a group's command)."""
    found = {}
    for name, command in cli.commands.items():
        found[name] = command
        for sub, inner in getattr(command, "commands", {}).items():
            found[f"{name} {sub}"] = inner
    return found


def _named_invocations() -> list[tuple[str, str]]:
    """(page, `healthslm ...` command line) for every one written as code on a page."""
    found = []
    for page in PAGES:
        for code in _prose_and_code(page.read_text(encoding="utf-8"))[1]:
            for line in code.splitlines():
                for call in re.findall(r"(?:^|[\s(`;&|])healthslm ((?:[a-z][\w-]*)(?: [^\s`;&|#]+)*)", line):
                    found.append((page.relative_to(ROOT).as_posix(), call))
    return found


def test_every_healthslm_subcommand_and_option_named_exists():
    commands, invocations, unknown = _commands(), _named_invocations(), []
    for page, call in invocations:
        words = call.split()
        name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
        if name not in commands:
            unknown.append(f"{page}: healthslm {name}")
            continue
        options = {opt for param in commands[name].params for opt in getattr(param, "opts", [])}
        unknown += [f"{page}: healthslm {name} {w}" for w in words if w.startswith("--") and w.split("=")[0]
                    not in options | {"--help"}]  # fmt: skip
    assert len(invocations) > 20  # the pages do name commands
    assert unknown == []


def _key_exists(dotted: str) -> bool:
    model: object = Params()
    for part in dotted.split("."):
        if isinstance(model, BaseModel):
            fields = {field.alias or name: name for name, field in type(model).model_fields.items()}
            if part not in fields:
                return False
            model = getattr(model, fields[part])
        elif isinstance(model, dict):
            if part not in model:
                return False
            model = model[part]
        elif isinstance(model, list) and part.isdigit():  # an item, as an error message names it
            model = None
        else:
            return False
    return True


def _named_keys() -> list[tuple[str, str]]:
    pattern = re.compile(rf"(?<![\w/.@-])((?:{'|'.join(BLOCKS)})(?:\.[a-z_0-9]+)+)")
    found = []
    for page in PAGES:
        for code in _prose_and_code(page.read_text(encoding="utf-8"))[1]:
            for key in pattern.findall(code):
                if key.rsplit(".", 1)[1] not in FILE_SUFFIXES:
                    found.append((page.relative_to(ROOT).as_posix(), key))
    return found


def test_every_params_key_named_exists():
    named = _named_keys()
    assert len(named) > 50 and ("README.md", "eval.score_batch_size") in named
    assert [f"{page}: {key}" for page, key in named if not _key_exists(key)] == []
    assert not _key_exists("eval.nonexistent") and _key_exists("validate.physical_ranges.steps")


def _named_environment() -> set[str]:
    names = set()
    for page in PAGES:
        for code in _prose_and_code(page.read_text(encoding="utf-8"))[1]:
            names |= set(re.findall(r"(?<![\w-])\$?\{?([A-Z]{2,}[A-Z0-9]*_[A-Z0-9_]+)\b", code))
    return names


def _read_by_the_code() -> set[str]:
    """Environment variables src/, stages/ and setup.sh read (os.environ.get, os.environ[...] as a value,
    *_ENV constants, $NAME in setup.sh)."""
    names = set()
    for source in [*ROOT.glob("src/**/*.py"), *ROOT.glob("stages/*.py")]:
        text = source.read_text(encoding="utf-8")
        names |= set(re.findall(r"environ\.get\(\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"environ\[\"([A-Z][A-Z0-9_]+)\"\](?!\s*=[^=])", text))
        names |= set(re.findall(r"getenv\(\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"^\w+_ENV = \"([A-Z][A-Z0-9_]+)\"", text, re.M))
    names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", (ROOT / "setup.sh").read_text())) - {"HOME"}
    return names


def test_every_environment_variable_named_is_one_the_project_knows():
    named = _named_environment()
    assert {"HEALTHSLM_TORCH_INDEX", "HEALTHSLM_CACHE", "HF_ENDPOINT"} <= named
    assert sorted(named - set(ENVIRONMENT) - THIRD_PARTY_ENV) == []


def test_the_configuration_page_lists_every_variable_the_code_reads():
    read = _read_by_the_code()
    assert {"HEALTHSLM_DATA_MIRROR", "HEALTHSLM_TORCH_CUDA", "WANDB_API_KEY"} <= read
    assert sorted(read - set(ENVIRONMENT)) == []


def test_the_configuration_page_is_what_the_schema_generates():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == configuration_page((ROOT / "params.yaml").read_text(encoding="utf-8")), (
        "docs/configuration.md is out of date: run `healthslm config-docs`"
    )
    for dotted in ("eval.limit", "train.lora.r", "augment.endpoint.allow_remote", "judge.endpoint.n_ctx"):
        assert f"| `{dotted}` |" in page


def _stages() -> tuple[set[str], set[str]]:
    """dvc.yaml's stage names, and those of its foreach stages (run as `<name>@<item>`)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return set(stages), {name for name, entry in stages.items() if "foreach" in entry}


def test_every_dvc_stage_named_exists():
    stages, foreach = _stages()
    named = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        prose, code = _prose_and_code(text)
        named += re.findall(r"`([a-z_]+(?:@[^`\s]+)?)` stage\b(?!s)", prose)
        named += re.findall(r"\bstage `([a-z_]+(?:@[^`\s]+)?)`", prose)
        named += re.findall(r"`([a-z_]+@[^`\s]+)`", prose)  # a foreach stage's run: `prepare@<dataset>`
        for line in "\n".join(code).splitlines():
            for targets in re.findall(r"dvc (?:repro|exp run)((?: [^\s#;&|]+)*)", line.split(" # ")[0]):
                words = targets.split()
                valued = {i + 1 for i, w in enumerate(words) if w in ("-S", "--set-param", "-n", "--name")}
                named += [w for i, w in enumerate(words) if i not in valued and not w.startswith("-")
                          and w != "\\"]  # fmt: skip
    assert "train" in named and len(named) > 5
    unknown = [n for n in named if (n.split("@")[0] not in foreach if "@" in n else n not in stages)]
    assert unknown == []
