"""report: reports/report.md and report.html from every stage's reports, beside the paper's numbers.

Reads   every stage's reports/, the dataset pins, the paper's tables
        · every params block (the report prints them) · reports/benchmarks/eval_speed.json
Writes  reports/report.md, reports/report.html, reports/figures/, reports/summary.md (docs/results.md's block)
Calls   healthslm.report.report
"""

from healthslm.report import report
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("report", report, timed=False)  # it reads the others; its own seconds come last
