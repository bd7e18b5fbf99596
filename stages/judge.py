"""judge: an LLM judge scores the open-ended answers 0-5 on six criteria (same endpoint rules as augment).

Reads   artifacts/predictions/, artifacts/records/, the response cache · params base.seed, eval.mode,
        eval.bootstrap_samples, judge
Writes  artifacts/judge/, artifacts/llm_cache/judge.jsonl (persist), reports/judge.json
Calls   healthslm.judge.judge
"""

from healthslm.judge import judge
from healthslm.stage import run

if __name__ == "__main__":  # spawned worker processes import this file again
    run("judge", judge)
