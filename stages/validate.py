"""validate@<dataset>: the Great Expectations gate over one dataset's raw files and records, and leakage.

Reads   data/<dataset>/, artifacts/records/<dataset>/ · params validate, data.plugins
Writes  reports/validation/<dataset>.json, reports/data_docs/<dataset>/
Calls   healthslm.validate.validate
"""

from healthslm.stage import run
from healthslm.validate import validate

if __name__ == "__main__":  # spawned worker processes import this file again
    run("validate", validate, "dataset")
