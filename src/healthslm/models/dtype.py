"""`dtype: auto` decided by measurement: the faster of float32 and bfloat16 autocast, per model and CPU.

Which wins depends on both: on one Intel Xeon (AVX-512 BF16, no AMX used) bf16 autocast scored 5.7x slower
than fp32 for SmolLM2-135M and 2.4x faster for a TinyLlama-shaped model. So a short probe times a forward
pass of each at a representative prompt length on the loaded model; the winner is cached per model shape,
CPU and torch version (~/.cache/healthslm/dtype_probe.json), so later runs on the machine skip the probe.
bf16 must win by a clear margin: near-ties (timing noise) keep fp32, the exact one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import nullcontext, suppress
from pathlib import Path

import torch

from healthslm.io import write_json
from healthslm.models.capacity import Architecture
from healthslm.resources import cpu_flags, cpu_name

PROBE_TOKENS = 160  # about a compact-format prompt; long enough for the matmuls to dominate
BF16_MARGIN = 1.2  # bf16 must be this much faster to be chosen


def cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "healthslm" / "dtype_probe.json"


def autocast(dtype: str):
    """The context a forward runs in for `dtype` (weights stay fp32; bf16 is autocast)."""
    if dtype == "bfloat16":
        return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
    return nullcontext()


def probe(model, tokens: int = PROBE_TOKENS) -> dict[str, float]:
    """Prefill tokens/s of each candidate on this model (one warm-up, then the best of two)."""
    ids = torch.randint(
        3, model.config.get_text_config().vocab_size, (1, tokens), generator=torch.Generator()
    )
    ids = ids.to(model.device)
    speeds = {}
    with torch.inference_mode():
        for dtype in ("float32", "bfloat16"):
            with autocast(dtype):
                model(ids[:, :16], use_cache=False)
                best = min(_timed(model, ids) for _ in range(2))
            speeds[dtype] = round(tokens / best, 1)
    return speeds


def _timed(model, ids) -> float:
    started = time.perf_counter()
    model(ids, use_cache=False)
    return time.perf_counter() - started


def _cpu_key() -> str:
    """The CPU as the kernels see it: its name and instruction flags."""
    return f"{cpu_name()} {hashlib.sha256(cpu_flags().encode()).hexdigest()[:8]}"


def resolve_dtype(model, setting: str, echo=print) -> dict:
    """{"dtype": float32|bfloat16, "decided_by": params|probe|cache, "probe_tokens_per_s": ...}."""
    if setting != "auto":
        return {"dtype": setting, "decided_by": "params"}
    if torch.cuda.is_available():
        return {"dtype": "bfloat16" if torch.cuda.is_bf16_supported() else "float32", "decided_by": "gpu"}
    arch = Architecture.of(model.config).model_dump_json()
    key = f"{arch}|{_cpu_key()}|torch {torch.__version__}|{PROBE_TOKENS}"
    file = cache_file()
    try:
        cached = json.loads(file.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return {**cached[key], "decided_by": "cache"}
    speeds = probe(model)
    faster = speeds["bfloat16"] >= BF16_MARGIN * speeds["float32"]
    decision = {"dtype": "bfloat16" if faster else "float32", "probe_tokens_per_s": speeds}
    with suppress(OSError):  # a read-only home: the probe simply runs again next time
        write_json(file, {**cached, key: decision})
    echo(
        f"dtype auto: {decision['dtype']} (prefill of {PROBE_TOKENS} tokens: "
        f"float32 {speeds['float32']} tok/s, bfloat16 autocast {speeds['bfloat16']} tok/s on {cpu_name()})"
    )
    return {**decision, "decided_by": "probe"}
