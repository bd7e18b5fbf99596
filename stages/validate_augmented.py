"""validate_augmented: the Great Expectations gate over the augmented records.

Reads   artifacts/augmented/ · params data.datasets, augment.min_chars, augment.max_chars
Writes  reports/augment_validation.json, reports/data_docs/augmented/
Calls   healthslm.validate_augmented.validate_augmented
"""

from healthslm.stage import run
from healthslm.validate_augmented import validate_augmented

if __name__ == "__main__":  # spawned worker processes import this file again
    run("validate_augmented", validate_augmented)
