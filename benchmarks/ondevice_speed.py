"""On-device speed: each GGUF on llama.cpp against the HF model, same prompts, one run.

    python benchmarks/ondevice_speed.py [--prompts 8] [--new-tokens 64] [--threads 2]

Run from the project root after `dvc repro` (it reads artifacts/gguf/, the ft predictions and the records).
Runs the ondevice stage's measurement (each engine in its own process, the memory bandwidth measured in the
same run) with more prompts and tokens, writes nothing under reports/, and prints per engine: decode
tokens/s and its ratio to the HF model, TTFT ratio, peak-RSS ratio, and the fraction of the bandwidth bound.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from healthslm.ondevice import ondevice
from healthslm.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    params = load_params()
    export = params.export.model_copy(
        update={"bench_prompts": args.prompts, "bench_new_tokens": args.new_tokens, "n_threads": args.threads}
    )
    params = params.model_copy(update={"export": export})
    with tempfile.TemporaryDirectory() as tmp:
        result = ondevice(params, out_file=Path(tmp) / "ondevice.json", figure_file=Path(tmp) / "fig.png")
    hf = result["hf"]
    run = f"{result['n_threads']} threads, {result['prompts']} prompts"
    print(f"\nmemory bandwidth {result['bandwidth_gbs']} GB/s, {run}")
    header = ("engine", "MB", "tok/s", "vs HF", "bound", "of bound", "TTFT s", "vs HF", "RSS MB", "vs HF")
    print(f"{header[0]:8}" + "".join(f"{h:>9}" for h in header[1:]))
    for name, row in result.items():
        if not isinstance(row, dict):
            continue
        cells = (
            f"{row['size_mb']:.1f}",
            f"{row['decode_tokens_per_s']:.1f}",
            f"{row['decode_tokens_per_s'] / hf['decode_tokens_per_s']:.2f}x",
            f"{row['bound_tokens_per_s']:.1f}",
            f"{row['fraction_of_bound']:.1%}",
            f"{row['ttft_s']:.3f}",
            f"{hf['ttft_s'] / row['ttft_s']:.2f}x",
            f"{row['peak_rss_mb']:.0f}",
            f"{row['peak_rss_mb'] / hf['peak_rss_mb']:.2f}x",
        )
        print(f"{name:8}" + "".join(f"{c:>9}" for c in cells))


if __name__ == "__main__":
    main()
