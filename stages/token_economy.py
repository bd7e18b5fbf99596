"""token_economy: tokens per eval prompt of the seed and compact formats (the embedded model's tokenizer).

Reads   artifacts/records/ · params data.datasets
Writes  reports/token_economy.json
Calls   healthslm.token_economy.token_economy
"""

from healthslm.stage import run
from healthslm.token_economy import token_economy

if __name__ == "__main__":  # spawned worker processes import this file again
    run("token_economy", token_economy)
