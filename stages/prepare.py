"""prepare@<dataset>: one dataset's raw files -> instruction records (JSONL + TOON) and few-shot pools.

Reads   data/<dataset>/ (and the plug-in modules of data.plugins) · params base.seed, prepare, data.plugins
Writes  artifacts/records/<dataset>/
Calls   healthslm.prepare.prepare
"""

from healthslm.prepare import prepare
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("prepare", lambda params, dataset: prepare(params, [dataset]), "dataset")
