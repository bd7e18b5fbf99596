"""Each preset's twin round trip: a one-layer twin (models/twin.py) with its real tokenizer, converted to f16
GGUF by llama.cpp's converter and compared with its transformers model on the first eval rows of every
closed task (healthslm/twin_check.py), with and without the chat template.

    python benchmarks/twins.py [--presets tinyllama,...] [--rows 2] [--out reports/benchmarks/twins.json]

Needs prepared records (artifacts/records, `dvc repro prepare`). `healthslm models` shows the result.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from healthslm.io import write_json
from healthslm.models.registry import load_preset, preset_names
from healthslm.models.twin import build_twin
from healthslm.params import parse_params
from healthslm.resources import cpu_name
from healthslm.twin_check import LOGLIK_TOLERANCE, check_twin

DATASETS = ["pmdata", "pubmedqa", "dreaddit"]  # numeric, yes/no/maybe and binary answers


def check(preset: str, rows: int, records: Path) -> dict:
    params = parse_params({"data": {"datasets": DATASETS}})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="healthslm-twin-") as tmp:
        folder = build_twin(preset, Path(tmp) / preset, layers=1)
        found = {
            name: check_twin(folder, records, params, chat, "compact", rows)
            for name, chat in (("chat", True), ("raw", False))
        }
    passed = all(
        r["same_answer"] == r["rows"] and r["max_loglik_difference"] < LOGLIK_TOLERANCE
        for r in found.values()
    )
    answers = sum(r["same_answer"] for r in found.values())
    tokens = {name: f"{r['same_tokens']}/{r['rows']}" for name, r in found.items()}
    summary = (
        f"f16 GGUF: {answers}/{sum(r['rows'] for r in found.values())} same answers, log-likelihoods within "
        f"{max(r['max_loglik_difference'] for r in found.values())} nats; llama.cpp's prompt tokens equal "
        f"chat {tokens['chat']}, raw {tokens['raw']}"
    )
    return {"passed": passed, "summary": summary, "seconds": round(time.perf_counter() - started, 1), **found}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    runnable = [n for n in preset_names() if (s := load_preset(n).twin) and not s.unavailable]
    parser.add_argument("--presets", default=",".join(runnable))
    parser.add_argument("--rows", type=int, default=2, help="eval rows per closed task")
    parser.add_argument("--records", default="artifacts/records")
    parser.add_argument("--out", default="reports/benchmarks/twins.json")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    results = {}
    for preset in args.presets.split(","):
        results[preset] = check(preset, args.rows, Path(args.records))
        print(
            f"{preset:14} {'passed' if results[preset]['passed'] else 'FAILED'}: {results[preset]['summary']}"
        )
    out = {
        "commit": commit.strip(),
        "cpu": cpu_name(),
        "command": "python benchmarks/twins.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "tolerance_nats": LOGLIK_TOLERANCE,
        "presets": results,
    }
    write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
