"""Augmentation under injected faults: requests/s and the retry overhead, against a clean endpoint, same run.

A loopback OpenAI-compatible endpoint (tests/fault_endpoint.py) answers instantly, so what is measured is the
client: concurrency, cache and retries. With --fault-share of the requests answered by 429, 500, a hang past
the timeout, a cut-off JSON body or a dropped connection, it prints answered requests/s of both runs, their
ratio, the HTTP requests per answered record, and the answers paid for twice (must be 0). Also written to
reports/benchmarks/llm_faults.json (--out) with the CPU that measured it.

    python benchmarks/llm_faults.py [--per-task 100] [--fault-share 0.3] [--concurrency 8]

Needs the records of `dvc repro` (or `healthslm prepare`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests.fault_endpoint

from healthslm.augment import augment  # noqa: E402
from healthslm.io import write_json  # noqa: E402
from healthslm.params import load_params  # noqa: E402
from healthslm.resources import cpu_name  # noqa: E402
from tests.fault_endpoint import fault_endpoint  # noqa: E402

TASKS = ["pubmedqa_answer", "dreaddit_stress", "pmdata_fatigue"]


def run(params, share: float, concurrency: int, per_task: int, timeout: float, seed: int) -> dict:
    with (
        fault_endpoint(fault_share=share, seed=seed, hang_s=timeout * 2) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        endpoint = {"base_url": server.base_url, "model": "fault-model", "concurrency": concurrency,
                    "timeout_s": timeout, "max_retries": 3}  # fmt: skip
        settings = params.model_copy(
            update={"augment": params.augment.model_validate(
                {"tasks": TASKS, "per_task": per_task, "import_existing": False, "endpoint": endpoint}
            )}
        )  # fmt: skip
        root = Path(tmp)
        summary = augment(settings, out_dir=root / "out", cache_file=root / "cache.jsonl",
                          summary_file=root / "augment.json", echo=lambda _: None)  # fmt: skip
        return {
            "fault_share": share,
            "faults_injected": dict(server.faults),
            "records": len(TASKS) * per_task,
            "answered": summary["new_responses"],
            "unanswered": summary["failed_requests"],
            "http_requests": server.received,
            "wall_s": summary["wall_s"],
            "answered_per_s": round(summary["new_responses"] / summary["wall_s"], 1),
            "duplicate_paid_answers": server.duplicate_bills,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-task", type=int, default=100)
    parser.add_argument("--fault-share", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/llm_faults.json"))
    args = parser.parse_args()
    params = load_params()
    clean = run(params, 0.0, args.concurrency, args.per_task, args.timeout, args.seed)
    faulty = run(params, args.fault_share, args.concurrency, args.per_task, args.timeout, args.seed)
    result = {
        "cpu": cpu_name(),
        "concurrency": args.concurrency,
        "timeout_s": args.timeout,
        "clean": clean,
        "faulty": faulty,
        "throughput_ratio": round(faulty["answered_per_s"] / clean["answered_per_s"], 3),
        "http_requests_per_answer": round(faulty["http_requests"] / max(faulty["answered"], 1), 3),
    }
    for name, row in (("clean", clean), (f"{args.fault_share:.0%} faults", faulty)):
        print(
            f"{name:>11}: {row['answered']}/{row['records']} answered, {row['http_requests']} HTTP "
            f"requests, {row['answered_per_s']} answered/s, {row['duplicate_paid_answers']} paid twice"
        )
    print(f"faults injected: {faulty['faults_injected']}")
    print(
        f"throughput with faults / clean: {result['throughput_ratio']}x; "
        f"HTTP requests per answer: {result['http_requests_per_answer']} ({result['cpu']})"
    )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
