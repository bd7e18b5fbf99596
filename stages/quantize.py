"""quantize@<type>: the f16 GGUF quantized by llama.cpp to one type of export.quantizations.

Reads   artifacts/gguf/model-f16.gguf · params export.n_threads
Writes  artifacts/gguf/model-<type>.gguf, reports/export/<type>.json
Calls   healthslm.export.quantize_stage
"""

from healthslm.export import quantize_stage
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("quantize", lambda params, type: quantize_stage(params, type), "type")
