"""On-device at a size where the weights dominate: a full-depth TinyLlama-shaped twin (1.1B parameters, random
weights, TinyLlama's real tokenizer; models/twin.py) as f16, q8_0 and q4_0 GGUFs on llama.cpp, measured
exactly as the ondevice stage measures the deployed model (ondevice.gguf_worker, each file in its own
process, the memory bandwidth measured in the same run).

    python benchmarks/ondevice_twin.py [--preset tinyllama] [--threads N]
                                       [--out reports/benchmarks/ondevice_twin.json]

The 135M model decodes at 25-40 % of the bandwidth bound because llama.cpp's fixed per-token cost dominates
a model that small; at 1.1B each token reads ~0.6-2.2 GB of weights, so the fraction of the bound says how
close the engine comes to the memory system. Also reports raw llama.cpp's rates on the same file and the
harness's ratio to them. Needs ~5 GB of disk in the temp folder and ~6 GB of RAM; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from healthslm.export import convert, gguf_facts, quantize
from healthslm.io import write_json
from healthslm.models.registry import load_preset
from healthslm.models.twin import build_twin, load_tokenizer
from healthslm.ondevice import gguf_worker, in_own_process, memory_bandwidth_gbs
from healthslm.resources import cpu_name, physical_cores

# Prompts of ~60-200 tokens, as the ondevice stage's compact task prompts are.
PROMPTS = [
    "Predict fatigue (1-5) from the last 7 days of steps, calories, resting heart rate and sleep minutes.",
    "Steps: 6012, 8450, 10233, 3120, 7781, 9022, 5400. Resting heart rate: 61, 60, 63, 64, 60, 59, 62. " * 3,
    "Post: I have not slept properly in weeks and everything at work feels like too much. Stressed?",
    "Question: Does regular physical activity lower the risk of type 2 diabetes in adults? Context: " * 4,
]
NEW_TOKENS = 32
TYPES = ("q8_0", "q4_0")


def measure(gguf: Path, prompts: list[list[int]], threads: int, bandwidth: float) -> dict:
    n_ctx = max(map(len, prompts)) + NEW_TOKENS + 8
    result = in_own_process(gguf_worker, str(gguf), prompts, [], NEW_TOKENS, threads, n_ctx)
    result.pop("scores")
    facts = gguf_facts(gguf)
    bound = bandwidth * 1e9 / (facts["size_mb"] * 1e6)
    return {
        **facts,
        **result,
        "bound_tokens_per_s": round(bound, 2),
        "fraction_of_bound": round(result["decode_tokens_per_s"] / bound, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tinyllama")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="reports/benchmarks/ondevice_twin.json")
    args = parser.parse_args()
    threads = args.threads or physical_cores()
    tokenizer = load_tokenizer(load_preset(args.preset))
    prompts = [tokenizer(text).input_ids for text in PROMPTS]
    rows, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="healthslm-twin-bench-") as tmp:
        started = time.perf_counter()
        folder = build_twin(args.preset, Path(tmp) / "twin")  # every layer
        f16 = convert(folder, Path(tmp) / "twin-f16.gguf")
        seconds["build_and_convert"] = round(time.perf_counter() - started, 1)
        files = {"f16": f16}
        for kind in TYPES:
            started = time.perf_counter()
            files[kind] = quantize(f16, Path(tmp) / f"twin-{kind}.gguf", kind, threads)
            seconds[f"quantize_{kind}"] = round(time.perf_counter() - started, 1)
        bandwidth = in_own_process(memory_bandwidth_gbs, threads)
        for kind, path in files.items():
            rows[kind] = measure(path, prompts, threads, bandwidth)
            rows[kind]["file"] = path.name
            print(
                f"{kind}: {rows[kind]['size_mb']:.0f} MB, decode {rows[kind]['decode_tokens_per_s']} tok/s = "
                f"{rows[kind]['fraction_of_bound']:.0%} of the bound {rows[kind]['bound_tokens_per_s']}; "
                f"harness / raw llama.cpp: decode {rows[kind]['decode_ratio_to_raw']}, "
                f"prefill {rows[kind]['prefill_ratio_to_raw']}"
            )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    result = {
        "commit": commit.strip(),
        "what": f"full-depth {args.preset}-shaped twin (random weights), llama.cpp via the ondevice harness",
        "command": "python benchmarks/ondevice_twin.py",
        "cpu": cpu_name(),
        "n_threads": threads,
        "bandwidth_gbs": bandwidth,
        "prompt_tokens": [len(p) for p in prompts],
        "new_tokens": NEW_TOKENS,
        "seconds": seconds,
        **rows,
    }
    write_json(Path(args.out), result)
    print(f"memory bandwidth {bandwidth} GB/s ({threads} threads); wrote {args.out}")


if __name__ == "__main__":
    main()
