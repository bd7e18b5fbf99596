"""Where a stage's time goes: the slow stages of the default run, each under cProfile (stage.py's
HEALTHSLM_PROFILE), in a scratch copy of the project so that nothing DVC tracks is touched.

    python benchmarks/stage_profile.py [--stages evaluate,evaluate_finetuned,train,ondevice]
                                       [--out reports/benchmarks/stage_profiles]

Run from the project root after `dvc repro` (the stages read its outputs). Train runs for real: the copy
holds no finished run to reuse. Writes <out>/<stage>.txt (the functions that took the most time, inner
calls included) and <out>/summary.json (each stage's wall time here and in the committed reports/stages/).
cProfile adds a little to Python-heavy stages; the committed stage times come from a plain `dvc repro`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from healthslm.io import write_json
from healthslm.resources import cpu_name

COPIED = ("artifacts", "data", "reports", "plugins", "stages", "params.yaml", "dvc.yaml")
SKIPPED = ("checkpoints", "llm_cache")  # a finished run would be reused; the response cache is not read


def _copy_project(root: Path, into: Path) -> None:
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, into / name, symlinks=True, ignore=shutil.ignore_patterns(*SKIPPED))
        elif source.exists():
            shutil.copy2(source, into / name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", default="evaluate,evaluate_finetuned,train,ondevice")
    parser.add_argument("--out", default="reports/benchmarks/stage_profiles")
    args = parser.parse_args()
    root, out = Path.cwd(), Path(args.out).resolve()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    command = "python benchmarks/stage_profile.py"
    summary: dict = {"commit": commit.strip(), "cpu": cpu_name(), "command": command, "stages": {}}
    if (out / "summary.json").exists():  # profiles of other stages, from an earlier run on this CPU, stay
        kept = json.loads((out / "summary.json").read_text())
        summary["stages"] = kept["stages"] if kept.get("cpu") == summary["cpu"] else {}
    with tempfile.TemporaryDirectory(prefix="healthslm-profile-") as tmp:
        _copy_project(root, Path(tmp))
        for stage in args.stages.split(","):
            env = {**os.environ, "HEALTHSLM_PROFILE": str(out)}
            started = time.perf_counter()
            subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=tmp, env=env, check=True)
            committed = json.loads((root / "reports" / "stages" / f"{stage}.json").read_text())
            summary["stages"][stage] = {
                "profiled_wall_s": round(time.perf_counter() - started, 1),
                "committed_wall_s": committed["wall_s"],
                "profile": f"{stage}.txt",
            }
            print(f"{stage}: {summary['stages'][stage]}")
    write_json(out / "summary.json", summary)


if __name__ == "__main__":
    main()
