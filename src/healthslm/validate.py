"""`healthslm validate`: the Great Expectations gate over the instruction records.

One suite per task and split: schema, no nulls, unique ids, label in the label space, prompt length
bounds and split sizes. Data Docs HTML goes to reports/data_docs/; a summary to reports/validation.json.
A violation fails the stage with the dataset, expectation and a few offending values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from healthslm.errors import HealthSLMError
from healthslm.io import read_jsonl, write_json
from healthslm.params import Params
from healthslm.prepare import RECORDS_DIR, records_path
from healthslm.tasks import TaskSpec, tasks_of

DOCS_DIR = Path("reports/data_docs")
SUMMARY_FILE = Path("reports/validation.json")
RECORD_COLUMNS = [
    "id",
    "dataset",
    "task",
    "split",
    "instruction",
    "input",
    "output",
    "label",
    "label_space",
    "provenance",
]
REQUIRED = ["id", "instruction", "input", "output", "label"]
MIN_ROWS = {"train": 10, "eval": 10}


def build_suite(gx, spec: TaskSpec, split: str, max_chars: int):
    expect = gx.expectations
    labels = [spec.parse_label(v) for v in spec.label_space]
    suite = gx.ExpectationSuite(name=f"{spec.key}.{split}")
    for expectation in [
        expect.ExpectTableColumnsToMatchSet(column_set=RECORD_COLUMNS, exact_match=True),
        expect.ExpectTableRowCountToBeBetween(min_value=MIN_ROWS[split]),
        *(expect.ExpectColumnValuesToNotBeNull(column=c) for c in REQUIRED),
        expect.ExpectColumnValuesToBeUnique(column="id"),
        expect.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
        expect.ExpectColumnValuesToBeInSet(column="split", value_set=[split]),
        expect.ExpectColumnValueLengthsToBeBetween(column="input", min_value=20, max_value=max_chars),
        expect.ExpectColumnValueLengthsToBeBetween(column="instruction", min_value=10, max_value=2000),
    ]:
        suite.add_expectation(expectation)
    return suite


def _failure_lines(name: str, result) -> list[str]:
    lines = []
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        column = config.kwargs.get("column")
        details = outcome.result or {}
        examples = details.get("partial_unexpected_list") or details.get("observed_value")
        where = f" column '{column}'" if column else ""
        lines.append(f"{name}: {config.type}{where} failed; e.g. {examples!r}"[:400])
    return lines


def _docs_site(docs_dir: Path) -> dict:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def validate(
    params: Params,
    records_dir: Path = RECORDS_DIR,
    docs_dir: Path = DOCS_DIR,
    summary_file: Path = SUMMARY_FILE,
    echo=print,
) -> dict:
    import great_expectations as gx

    shutil.rmtree(docs_dir, ignore_errors=True)
    context = gx.get_context(mode="ephemeral")
    for site in list(context.get_config().data_docs_sites or {}):
        context.delete_data_docs_site(site)
    context.add_data_docs_site(site_name="healthslm", site_config=_docs_site(docs_dir))
    source = context.data_sources.add_pandas("records")
    summary, failures = {}, []
    for dataset in params.data.datasets:
        for spec in tasks_of(dataset):
            for split in ("train", "eval"):
                name = f"{spec.key}.{split}"
                frame = pd.DataFrame(read_jsonl(records_path(records_dir, dataset, spec.name, split)))
                batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
                suite = context.suites.add(build_suite(gx, spec, split, params.validate_.max_prompt_chars))
                definition = context.validation_definitions.add(
                    gx.ValidationDefinition(name=name, data=batch, suite=suite)
                )
                result = definition.run(batch_parameters={"dataframe": frame})
                summary[name] = {
                    "rows": len(frame),
                    "success": bool(result.success),
                    "expectations": len(result.results),
                }
                failures += _failure_lines(name, result)
    context.build_data_docs(site_names=["healthslm"])
    write_json(summary_file, {"success": not failures, "suites": summary, "failures": failures})
    echo(f"validated {len(summary)} record sets; Data Docs: {docs_dir / 'index.html'}")
    if failures:
        raise HealthSLMError("validation failed:\n  " + "\n  ".join(failures))
    return summary
