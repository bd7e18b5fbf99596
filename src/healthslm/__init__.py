"""healthslm: small language models for health prediction, as a DVC pipeline."""

import os
import platform

# The same numbers on every x86-64 CPU of one vendor (AVX2 or newer, any core count; AMD and Intel agree to
# about the 7th digit, tests/canary.py): torch's CPU kernels take one code path, not the widest this CPU has.
# ATen reads ATEN_CPU_CAPABILITY and MKL its reproducible branch (MKL_CBWR; STRICT: the same bits for any
# thread count) when first used, so this runs before torch computes.
# Measured on an AMD EPYC with AVX-512: its own kernels moved label log-likelihoods by up to 5e-5 from the
# AVX2 ones and 1 thread from 2 by 4e-6; pinned, both differences were 0, at ~3 % more time (fp32 scoring).
# oneDNN (bf16 only; fp32 does not reach it) stops below AMX: with ATen pinned to AVX2, torch's bf16 attention
# on an AMX CPU asked oneDNN for AMX-packed weights and failed ("pack_vnni2 is only supported when avx512 is
# supported", Intel Xeon with AMX, eval.dtype bfloat16). AVX-512 BF16 and AVX2 CPUs are under the cap.
PINNED_CPU_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16",
}
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.update(PINNED_CPU_KERNELS)
