"""healthslm: small language models for health prediction, as a DVC pipeline."""

import os
import platform

# The same numbers on every x86-64 CPU (AVX2 or newer, AMD or Intel, any core count): torch's CPU kernels take
# one code path, not the widest this CPU has. ATen reads ATEN_CPU_CAPABILITY and MKL its reproducible branch
# (MKL_CBWR; STRICT: the same bits for any thread count) when first used, so this runs before torch computes.
# Measured on an AMD EPYC with AVX-512: its own kernels moved label log-likelihoods by up to 5e-5 from the
# AVX2 ones and 1 thread from 2 by 4e-6; pinned, both differences were 0, at ~3 % more time (fp32 scoring).
PINNED_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.update(PINNED_CPU_KERNELS)
