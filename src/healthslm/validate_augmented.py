"""`healthslm validate --augmented`: the Great Expectations gate over the augment stage's kept records.

Exact columns, unique ids, non-null output and provenance, split train, output length within bounds, and
(closed tasks) the stated label equal to the gold label. Data Docs: reports/data_docs/augmented/.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pandas as pd

from healthslm.data.loaders import RECORD_FIELDS
from healthslm.data.registry import get_dataset
from healthslm.errors import HealthSLMError
from healthslm.io import read_jsonl, write_json
from healthslm.params import Params
from healthslm.paths import AUGMENT_VALIDATION, AUGMENTED_DIR, DOCS_DIR
from healthslm.tasks import TaskSpec
from healthslm.validate import failure_lines, gx_context, run_suite


def read_augmented(out_dir: Path = AUGMENTED_DIR) -> dict[str, list[dict]]:
    """Augmented records per task key."""
    if not out_dir.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no augmented records", str(out_dir))
    return {
        f"{path.parent.name}_{path.name.split('.')[0]}": read_jsonl(path)
        for path in sorted(out_dir.glob("*/*.train.jsonl"))
    }


def task_of(key: str, datasets: list[str]) -> TaskSpec:
    for name in datasets:
        for spec in get_dataset(name).tasks:
            if spec.key == key:
                return spec
    raise HealthSLMError(f"no task {key} in data.datasets")


AUGMENTED_FIELDS = (*RECORD_FIELDS, "record_id", "stated_label", "augmentation")


def augmented_suite(gx, spec: TaskSpec, params: Params):
    expect, bounds = gx.expectations, params.augment
    suite = gx.ExpectationSuite(name=f"augmented.{spec.key}")
    expectations = [
        expect.ExpectTableColumnsToMatchSet(column_set=list(AUGMENTED_FIELDS), exact_match=True),
        expect.ExpectColumnValuesToBeUnique(column="id"),
        expect.ExpectColumnValuesToNotBeNull(column="output"),
        expect.ExpectColumnValuesToNotBeNull(column="augmentation"),
        expect.ExpectColumnValuesToBeInSet(column="split", value_set=["train"]),
        expect.ExpectColumnValueLengthsToBeBetween(
            column="output", min_value=bounds.min_chars, max_value=bounds.max_chars
        ),
    ]
    if spec.closed:
        expectations += [
            expect.ExpectColumnValuesToNotBeNull(column="stated_label"),
            expect.ExpectColumnPairValuesToBeEqual(column_A="stated_label", column_B="label"),
        ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def validate_augmented(
    params: Params,
    augmented_dir: Path | None = None,
    docs_dir: Path = DOCS_DIR / "augmented",
    summary_file: Path = AUGMENT_VALIDATION,
    echo=print,
) -> dict:
    """The gate over artifacts/augmented/: non-empty, within length bounds, stated label = gold."""
    shutil.rmtree(docs_dir, ignore_errors=True)
    docs_dir.mkdir(parents=True)
    gx, context = gx_context(docs_dir)
    source = context.data_sources.add_pandas("augmented")
    suites, failures = {}, []
    for key, rows in read_augmented(augmented_dir or AUGMENTED_DIR).items():
        spec = task_of(key, params.data.datasets)
        frame = pd.DataFrame(rows)
        result = run_suite(gx, context, source, augmented_suite(gx, spec, params), frame)
        name = f"augmented.{key}"
        suites[name] = {
            "rows": len(frame),
            "success": bool(result.success),
            "expectations": len(result.results),
        }
        failures += failure_lines(name, result, frame)
    context.build_data_docs(site_names=["healthslm"])
    write_json(summary_file, {"success": not failures, "suites": suites, "failures": failures})
    echo(f"augmented: {len(suites)} record sets validated; Data Docs: {docs_dir / 'index.html'}")
    if failures:
        raise HealthSLMError("validation of the augmented records failed:\n  " + "\n  ".join(failures))
    return suites
