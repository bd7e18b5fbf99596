"""evaluate_finetuned: the ft mode (when in eval.mode) on the train stage's model, beside baselines.

Reads   artifacts/model/, artifacts/records/, reports/validation/ · params model, base.seed,
        data.datasets, eval
Writes  artifacts/predictions/finetuned/ft/, reports/metrics_ft.json, reports/plots/finetuned/
Calls   healthslm.evaluate.evaluate(finetuned=True)
"""

from healthslm.evaluate import evaluate
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("evaluate_finetuned", lambda params: evaluate(params, finetuned=True))
