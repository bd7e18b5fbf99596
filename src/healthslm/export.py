"""`healthslm export` and `healthslm quantize`: the deployed model as GGUF files for llama.cpp.

export: the fine-tuned model (the train stage's merged model, or its adapter merged into the base model here;
the pretrained model when nothing was trained, models/finetuned.py `deployed`) converted to
artifacts/gguf/model-f16.gguf by llama.cpp's own converter (`convert_hf_to_gguf.py` with its `gguf-py`,
taken from the llama-cpp-python sdist that setup pinned by sha256 and kept in the venv, so it needs no
network; its pinned requirements are not installed).
quantize --type T: that f16 file quantized by llama.cpp (through llama-cpp-python) to
artifacts/gguf/model-T.gguf; size and bits per weight in reports/export/T.json.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from filelock import FileLock

from healthslm.errors import HealthSLMError
from healthslm.io import atomic_dir, atomic_path, write_json
from healthslm.models import finetuned as models
from healthslm.models import llama_sdist
from healthslm.models.loader import cache_root
from healthslm.params import Params
from healthslm.paths import EXPORT_REPORTS, GGUF_DIR

FTYPES = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def gguf_file(quantization: str, gguf_dir: Path = GGUF_DIR) -> Path:
    return gguf_dir / f"model-{quantization}.gguf"


def converter_source() -> Path:
    """llama.cpp's converter from the pinned llama-cpp-python sdist, extracted once (keyed by its sha256)."""
    target = cache_root() / f"llama.cpp-converter-{llama_sdist.pin()[1][:16]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "convert_hf_to_gguf.py").exists():
            with atomic_dir(target) as tmp:
                llama_sdist.extract(CONVERTER_PARTS, tmp)
    return target


def architecture(hf_folder: Path) -> str:
    config = json.loads((hf_folder / "config.json").read_text(encoding="utf-8"))
    return (config.get("architectures") or [config.get("model_type", "unknown")])[0]


def convert(hf_folder: Path, out: Path, outtype: str = "f16") -> Path:
    """HF folder -> GGUF with llama.cpp's converter; an architecture it lacks fails naming it."""
    source = converter_source()
    with atomic_path(out) as tmp:
        result = subprocess.run(
            [sys.executable, str(source / "convert_hf_to_gguf.py"), str(hf_folder),
             "--outfile", str(tmp), "--outtype", outtype],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode:
            arch = architecture(hf_folder)
            if "not supported" in result.stderr:
                raise HealthSLMError(
                    f"{hf_folder}: llama.cpp's GGUF converter does not support the architecture {arch}; "
                    "export works for Llama, Qwen2, Phi-3, Gemma-2 and the other families it lists "
                    f"(`python {source / 'convert_hf_to_gguf.py'} --print-supported-models`)"
                )
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise HealthSLMError(f"converting {hf_folder} ({arch}) to GGUF failed: {tail}")
    return out


def quantize(source: Path, out: Path, quantization: str, n_threads: int | None) -> Path:
    import llama_cpp

    settings = llama_cpp.llama_model_quantize_default_params()
    settings.ftype = getattr(llama_cpp, FTYPES[quantization])
    settings.nthread = n_threads or 0  # 0 = every core
    with atomic_path(out) as tmp:
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(tmp).encode(), ctypes.byref(settings)
        )
        if status != 0:
            raise HealthSLMError(f"llama.cpp could not quantize {source} to {quantization} (status {status})")
    return out


def gguf_facts(path: Path) -> dict:
    """Size, parameter count and bits per weight of a GGUF file."""
    import llama_cpp

    # llama.cpp's own count over the loaded (memory-mapped) tensors: gguf's GGUFReader parses every
    # vocabulary string in Python first, 2.5 s for a 49k vocabulary and ~20 s for a 128k one.
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=16, n_threads=1, verbose=False)
    parameters = llama_cpp.llama_model_n_params(llm.model)
    llm.close()
    size = path.stat().st_size
    return {
        "file": path.as_posix(),
        "size_mb": round(size / 1e6, 2),
        "params_m": round(parameters / 1e6, 2),
        "bits_per_weight": round(size * 8 / parameters, 3),
    }


def export(params: Params, gguf_dir: Path = GGUF_DIR, echo=print) -> Path:
    with tempfile.TemporaryDirectory(prefix="healthslm-merged-") as workdir:
        hf_folder = models.save_merged(models.deployed(params), Path(workdir))
        echo(f"export: converting {hf_folder} ({architecture(hf_folder)}) to GGUF f16")
        out = convert(hf_folder, gguf_file("f16", gguf_dir))
    echo(f"export: wrote {out} ({gguf_facts(out)['size_mb']} MB)")
    return out


def quantize_stage(
    params: Params,
    quantization: str,
    gguf_dir: Path = GGUF_DIR,
    reports_dir: Path = EXPORT_REPORTS,
    echo=print,
) -> dict:
    source = gguf_file("f16", gguf_dir)
    if not source.exists():
        raise HealthSLMError(f"{source}: missing; run the export stage first")
    if quantization not in FTYPES or quantization == "f16":
        raise HealthSLMError(f"--type {quantization}: choose one of {', '.join(list(FTYPES)[1:])}")
    out = quantize(source, gguf_file(quantization, gguf_dir), quantization, params.export.n_threads)
    facts = gguf_facts(out)
    write_json(reports_dir / f"{quantization}.json", facts)
    echo(f"quantize: wrote {out} ({facts['size_mb']} MB, {facts['bits_per_weight']} bits/weight)")
    return facts
