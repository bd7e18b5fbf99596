"""setup.sh's llama.cpp build: one AVX2 build on every x86-64 CPU (never AVX-512 or AMX), so its numbers
are the same everywhere, and the engine smoke check."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from healthslm import engine
from healthslm.errors import HealthSLMError
from tests.conftest import ROOT

BASE = {"-DLLAVA_BUILD=OFF", "-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF"}
BASE |= {"-DGGML_AMX_BF16=OFF"}
AVX2 = {"-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON"}
INTEL_AMX = "fpu avx avx2 fma f16c bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi avx512_vnni "
INTEL_AMX += "avx512_bf16 amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (INTEL_AMX, BASE | AVX2),  # the Xeon VM whose native build died in ggml_backend_amx_mul_mat
        ("fpu avx avx2 fma f16c bmi1 bmi2 sha_ni", BASE | AVX2),  # the AMD EPYC VM
        ("avx avx2 fma f16c bmi2 avx512f avx512cd avx512bw avx512vl avx512dq avx512_bf16", BASE | AVX2),
        ("fpu avx sse4_2", BASE | {"-DGGML_AVX=ON"}),  # no AVX2: what it has, with a warning
    ],
)
def test_llama_cpp_build_is_the_same_avx2_build_on_every_cpu_and_never_amx(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    env = {**os.environ, "HEALTHSLM_CPUINFO": str(cpuinfo)}
    result = subprocess.run(
        ["bash", str(ROOT / "setup.sh"), "--llama-cmake-args"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected


def test_the_installed_engine_runs_here_without_amx():
    healthslm = Path(sys.executable).parent / "healthslm"
    result = subprocess.run([str(healthslm), "check-engine"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("llama.cpp ok: ") and "AVX" in result.stdout
    assert "AMX_INT8 = 1" not in result.stdout and "AMX_TILE = 1" not in result.stdout


def test_an_engine_that_cannot_run_fails_in_one_line(monkeypatch):
    monkeypatch.setattr(engine, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    with pytest.raises(HealthSLMError) as info:
        engine.check_engine()
    message = str(info.value)
    assert "killed by SIGILL" in message and "rebuilds it for this CPU" in message and "\n" not in message


def _plan(tmp_path: Path, flags: str, gpu: bool) -> list[str]:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.unlink(missing_ok=True)
    if gpu:  # what nvidia-smi -L prints on a machine with one H100
        fake.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5e1f)"\n')
        fake.chmod(0o755)
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()
    )
    env = {**os.environ, "HEALTHSLM_CPUINFO": str(cpuinfo), "PATH": f"{bin_dir}{os.pathsep}{path}"}
    env.pop("HEALTHSLM_TORCH_INDEX", None)
    result = subprocess.run(
        ["bash", str(ROOT / "setup.sh"), "--plan"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_plan_picks_the_torch_build_for_the_machine_and_keeps_llama_cpp_on_the_cpu(tmp_path):
    """setup.sh --plan installs nothing; it says which torch build comes from which index, and why."""
    plain = _plan(tmp_path, "fpu avx avx2 fma f16c bmi1 bmi2", gpu=False)
    assert plain[0].startswith(
        "torch 2.13.0, CPU build, from https://download.pytorch.org/whl/cpu: no NVIDIA"
    )
    gpu = _plan(tmp_path, "fpu avx avx2 fma f16c bmi1 bmi2", gpu=True)
    assert gpu[0] == (
        "torch 2.13.0, CUDA (cu128) build, from https://download.pytorch.org/whl/cu128: "
        "nvidia-smi: GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5e1f)"
    )
    assert gpu[1].startswith("bitsandbytes 0.50.2 from PyPI: one wheel with CPU and CUDA kernels")
    amx = _plan(tmp_path, INTEL_AMX, gpu=False)
    for plan in (plain, gpu, amx):
        llama = plan[2]
        assert llama.startswith(
            "llama.cpp (llama-cpp-python 0.3.36, its sdist pinned by sha256), a CPU build"
        )
        assert set(re.findall(r"-D\S+", llama.split("Flags: ")[1])) == BASE | AVX2
    assert "this CPU advertises AMX: kept off" in amx[2] and "advertises AMX" not in plain[2]
    # the constraints pin torch's version, not its build: a CUDA index's 2.13.0+cu128 satisfies them
    assert "torch==2.13.0\n" in (ROOT / "constraints.txt").read_text()
