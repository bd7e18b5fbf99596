"""evaluate: the pretrained model's modes of eval.mode (zs, fs-k), beside baselines; needs no training.

Reads   artifacts/records/, reports/validation/ · params model, base.seed, data.datasets, eval,
        validate.near_duplicate_similarity (leak-free rows)
Writes  artifacts/predictions/base/<mode>/, reports/metrics.json, reports/plots/base/
Calls   healthslm.evaluate.evaluate
"""

from healthslm.evaluate import evaluate
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("evaluate", evaluate)
