"""export: the deployed model (fine-tuned, or pretrained when nothing was trained) as GGUF f16.

Reads   artifacts/model/ · params model, eval.finetuned
Writes  artifacts/gguf/model-f16.gguf
Calls   healthslm.export.export
"""

from healthslm.export import export
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("export", export)
