"""`healthslm token-economy`: tokens per example of each prompt format (embedded model's tokenizer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from healthslm.data.registry import get_dataset
from healthslm.io import write_json
from healthslm.params import Params
from healthslm.paths import RECORDS_DIR, SKIPPED_FILE, TOKENS_FILE
from healthslm.prepare import read_records
from healthslm.prompts import question

FORMATS = ("seed", "compact")


def _tokenizer():
    from transformers import AutoTokenizer

    from healthslm.models.loader import model_location
    from healthslm.models.registry import load_preset

    return AutoTokenizer.from_pretrained(model_location(load_preset("smollm2-135m")))


def token_economy(
    params: Params, records_dir: Path = RECORDS_DIR, out_file: Path = TOKENS_FILE, echo=print
) -> dict:
    """Mean tokens of the rendered question (instruction + input) on each task's eval split."""
    tokenizer = _tokenizer()
    result: dict = {}
    for name in params.data.datasets:
        if (records_dir / name / SKIPPED_FILE).exists():
            continue
        for spec in get_dataset(name).tasks:
            records = read_records(records_dir, name, spec.name, "eval")
            means = {
                fmt: float(np.mean([len(tokenizer(question(r, spec, fmt)).input_ids) for r in records]))
                for fmt in FORMATS
            }
            result[spec.key] = {
                "examples": len(records),
                **{f"{fmt}_tokens": round(value, 1) for fmt, value in means.items()},
                "compact_over_seed": round(means["compact"] / means["seed"], 3),
            }
            echo(
                f"{spec.key}: seed {means['seed']:.0f} tokens, compact {means['compact']:.0f} "
                f"({result[spec.key]['compact_over_seed']:.2f}x)"
            )
    write_json(out_file, result)
    return result
