"""setup.sh's llama.cpp build: one AVX2 build on every x86-64 CPU (never AVX-512 or AMX), so its numbers
are the same everywhere, and the engine smoke check."""

import os
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
