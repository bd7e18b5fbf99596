"""augment: a reference response per train record from an OpenAI-compatible endpoint (default: llama.cpp
on 127.0.0.1 with the embedded model); every response cached as it arrives.

Reads   artifacts/records/, reports/validation/, the response cache · params data.datasets, augment
Writes  artifacts/augmented/, artifacts/llm_cache/augment.jsonl (persist), reports/augment.json
Calls   healthslm.augment.augment
"""

from healthslm.augment import augment
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("augment", augment)
