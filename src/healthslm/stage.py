"""Run one dvc.yaml stage from its entry file in stages/ (`python stages/<stage>.py`).

The stage reads params.yaml through a view holding only the params dvc.yaml declares for it: reading any
other param stops the stage with one line naming it, so a stage cannot depend on a param DVC does not track.
With HEALTHSLM_TRACE_READS=<folder> every file the stage opens is listed in <folder>/<stage>.json, for the
test that checks dvc.yaml's deps against what the stages read. With HEALTHSLM_PROFILE=<folder> the stage's
work runs under cProfile and <folder>/<stage>.txt lists where its time went (benchmarks/stage_profile.py).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel

from healthslm.errors import HealthSLMError, exit_interrupted
from healthslm.io import write_json
from healthslm.params import PARAMS_FILE, Params, load_params
from healthslm.paths import STAGE_TIMES_DIR
from healthslm.resources import children_peak_rss_mb, cpu_name, peak_rss_mb, process_seconds

DVC_FILE = Path("dvc.yaml")
TRACE_ENV = "HEALTHSLM_TRACE_READS"
PROFILE_ENV = "HEALTHSLM_PROFILE"
PROFILE_LINES = 40


class Undeclared:
    """Stands for a param the stage did not declare: any use of it fails naming the param."""

    def __init__(self, stage: str, name: str) -> None:
        object.__setattr__(self, "_where", (stage, name))

    def _fail(self, *args, **kwargs):
        stage, name = object.__getattribute__(self, "_where")
        raise HealthSLMError(
            f"stage {stage} reads params.yaml's {name}, which dvc.yaml does not declare for it "
            f"(add `- {name}` to its params)"
        )

    def __repr__(self) -> str:
        return f"<undeclared {object.__getattribute__(self, '_where')[1]}>"

    __getattr__ = __getitem__ = __iter__ = __len__ = __bool__ = __contains__ = __call__ = _fail
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _fail
    __int__ = __float__ = __index__ = __str__ = __format__ = __neg__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
    __hash__ = None  # type: ignore[assignment]


def declared_params(stage: str, dvc_file: Path = DVC_FILE) -> list[str]:
    """The params dvc.yaml lists for a stage (of params.yaml; a foreach stage's `do` block)."""
    stages = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"]
    if stage not in stages:
        raise HealthSLMError(f"{dvc_file}: no stage {stage!r}")
    entry = stages[stage].get("do", stages[stage])
    return [p for p in entry.get("params", []) if isinstance(p, str)]


def restrict(model: BaseModel, declared: list[str], stage: str, prefix: str = "") -> BaseModel:
    """A copy of `model` whose fields outside `declared` (dotted names) are `Undeclared`."""
    values = {}
    for field, info in type(model).model_fields.items():
        name = prefix + (info.alias or field)
        value = getattr(model, field)
        if any(name == d or name.startswith(d + ".") for d in declared):
            values[field] = value
        elif isinstance(value, BaseModel) and any(d.startswith(name + ".") for d in declared):
            values[field] = restrict(value, declared, stage, name + ".")
        else:
            values[field] = Undeclared(stage, name)
    return type(model).model_construct(**values)


def stage_params(stage: str, params_file: Path = PARAMS_FILE, dvc_file: Path = DVC_FILE) -> Params:
    """params.yaml, validated whole (a bad value anywhere fails first), seen through the stage's declaration.
    A stage that does not declare data.plugins reads no dataset, so the plug-ins are not imported."""
    declared = declared_params(stage, dvc_file)
    datasets = any(d in ("data", "data.plugins") for d in declared)
    return restrict(load_params(params_file, datasets), declared, stage)


def _outs(entry: dict) -> list[str]:
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for out in entry.get(kind, []):
            paths.append(out if isinstance(out, str) else next(iter(out)))
    return paths


def producer_of(path: Path, dvc_file: Path = DVC_FILE) -> str | None:
    """The dvc.yaml stage that writes `path` (a foreach stage as name@item), or None."""
    if not dvc_file.exists():
        return None
    wanted = path.as_posix()
    for name, body in yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"].items():
        for out in _outs(body.get("do", body)):
            pattern = re.escape(out).replace(re.escape("${item}"), "(?P<item>[^/]+)")
            if match := re.fullmatch(f"{pattern}(/.*)?", wanted):
                item = match.groupdict().get("item")
                return f"{name}@{item}" if item else name
    return None


def missing_input(exc: FileNotFoundError, dvc_file: Path = DVC_FILE) -> str:
    """One line for a missing input: the file, and the stage that makes it."""
    if not exc.filename:
        return str(exc)
    path = Path(os.path.relpath(exc.filename))
    if (producer := producer_of(path, dvc_file)) is not None:
        return f"{path}: missing; it is made by the {producer} stage: run `dvc repro {producer}` first"
    if path.parts[:1] == ("data",):
        return f"{path}: missing; run `healthslm fetch` (or `dvc pull`) first"
    return f"{path}: missing (no stage of {dvc_file} makes it; run from the project root)"


def _trace_reads(stage: str, folder: str) -> None:
    """List every file this process opens for reading (an audit hook), written at exit."""
    reads: set[str] = set()

    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not isinstance(args[0], str | Path):
            return
        path, mode, flags = args
        if (mode is None and not flags & writing) or (mode is not None and "r" in mode):  # os.open / open
            reads.add(os.path.abspath(path))

    def save() -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{stage}.json").write_text(json.dumps(sorted(reads), indent=1))

    sys.addaudithook(hook)
    atexit.register(save)


def _profiled(name: str, folder: str, work: Callable[[], object]) -> None:
    """Run `work` under cProfile; write the functions that took the most time, inner calls included."""
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile()
    try:
        profile.runcall(work)
    finally:
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text).strip_dirs().sort_stats("cumulative")
        stats.print_stats(PROFILE_LINES)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.txt").write_text(f"stage {name} on {cpu_name()}\n{text.getvalue()}")


def stage_resources(name: str) -> dict:
    """What one stage run cost: wall time from process start (imports included) and peak memory, on the
    CPU that ran it (reports/stages/<stage>.json, a DVC metric of the stage: the report sums them)."""
    return {
        "stage": name,
        "wall_s": process_seconds(),
        "peak_rss_mb": peak_rss_mb(),
        "children_peak_rss_mb": children_peak_rss_mb(),
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
    }


def run(stage: str, work: Callable[..., object], *options: str, timed: bool = True) -> None:
    """Parse the stage's options (e.g. --dataset), then `work(params, **options)`; a HealthSLMError is one
    line on stderr and exit status 1. A timed stage then writes its `stage_resources`."""
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py")
    for option in options:
        parser.add_argument(f"--{option}", required=True)
    args = vars(parser.parse_args())
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    if folder := os.environ.get(TRACE_ENV):
        _trace_reads("@".join([stage, *args.values()]), folder)
    name = "@".join([stage, *args.values()])
    try:
        if folder := os.environ.get(PROFILE_ENV):
            _profiled(name, folder, lambda: work(stage_params(stage), **args))
        else:
            work(stage_params(stage), **args)
        if timed:
            write_json(STAGE_TIMES_DIR / f"{name}.json", stage_resources(name))
    except HealthSLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as exc:
        print(f"error: {missing_input(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        exit_interrupted(f"stage {name}")
