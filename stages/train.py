"""train: fine-tune (LoRA, QLoRA or full) on every available task; resumes a killed run; trains nothing
when eval.mode has no ft.

Reads   artifacts/records/, reports/validation/, artifacts/augmented/ (train.targets) · params model,
        base.seed, data.datasets, train, eval.mode
Writes  artifacts/model/, reports/train/ (DVCLive metrics and curves, training.json)
Calls   healthslm.train.train
"""

from healthslm.stage import run
from healthslm.train import train

if __name__ == "__main__":  # spawned worker processes import this file again
    run("train", train)
