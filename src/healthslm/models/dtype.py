"""The numerics a stage computes in: set by params (`train.dtype`, `eval.dtype`), never by this machine.

float32 (the default) gives the same numbers on every x86-64 CPU of one vendor, to about the 7th digit
between AMD and Intel (MKL honours only its SSE2 branch on AMD): healthslm/__init__.py pins torch's CPU
kernels to one code path (ATen's AVX2 kernels, MKL's reproducible AVX2 branch in strict mode) whatever the
CPU offers and however many cores run them. bfloat16 autocast is the explicit faster choice where the CPU or
GPU has it; its numbers may differ by machine, and evaluate reports how often its answers agree with fp32's.
`numerics()` is what the metrics, the report and training.json record of a run.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def autocast(dtype: str):
    """The context a forward runs in for `dtype` (weights stay fp32; bf16 is autocast)."""
    if dtype == "bfloat16":
        return torch.autocast(_device_type(), dtype=torch.bfloat16)
    return nullcontext()


def _device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def fp32_head(model, dtype: str):
    """Under bf16 autocast, the output projection recomputed in fp32 on the kept rows: logits rounded to
    bf16 (8 bits of mantissa, steps of 0.125 at 20) would tie or swap close answers."""
    if dtype != "bfloat16":
        yield
        return

    def exact(module, inputs, _output):
        with torch.autocast(_device_type(), enabled=False):
            return torch.nn.functional.linear(inputs[0].float(), module.weight.float(), module.bias)

    handle = model.get_output_embeddings().register_forward_hook(exact)
    try:
        yield
    finally:
        handle.remove()


def weights_sha256(paths: list[Path]) -> str:
    """Content hash of a model's weight files (a GGUF, or a folder's safetensors), in name order."""
    digest = hashlib.sha256()
    files = []
    for path in paths:
        path = Path(path)
        files += (
            sorted(f for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES) if path.is_dir() else [path]
        )
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def cpu_kernels() -> str:
    """The CPU code path torch's kernels take in this process (pinned by healthslm/__init__.py on x86-64)."""
    aten = torch.backends.cpu.get_cpu_capability()
    mkl = os.environ.get("MKL_CBWR", "AUTO") if torch.backends.mkl.is_available() else "no MKL"
    return f"ATen {aten}, MKL {mkl}"


def numerics(dtype: str, weights: list[Path]) -> dict:
    """What decides a run's numbers: dtype, torch, kernels, threads and the model's weights."""
    return {
        "dtype": dtype,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cpu_kernels": cpu_kernels() if not torch.cuda.is_available() else "cuda",
        "threads": torch.get_num_threads(),
        "weights_sha256": weights_sha256(weights),
    }
