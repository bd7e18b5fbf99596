"""ondevice: each GGUF on llama.cpp beside the Hugging Face model: speed, memory, bound, accuracy kept.

Reads   artifacts/gguf/, artifacts/model/, artifacts/predictions/finetuned/, artifacts/records/
        · params model, data.datasets, base.seed, eval.finetuned, eval.prompt_format, eval.chat_template,
        eval.bootstrap_samples, export
Writes  reports/ondevice.json, reports/ondevice/speed_vs_accuracy.png
Calls   healthslm.ondevice.ondevice
"""

from healthslm.ondevice import ondevice
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("ondevice", ondevice)
