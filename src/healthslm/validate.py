"""`healthslm validate --dataset NAME`: the Great Expectations gate over one dataset's records.

One suite per task and split: schema, no nulls, unique ids, label in the label space, text length bounds
and split sizes; plus a train/eval leakage check. Data Docs HTML goes to reports/data_docs/<dataset>/,
a summary to reports/validation/<dataset>.json. A violation fails the stage naming the dataset,
expectation and a few offending values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from healthslm.data.loaders import RECORD_FIELDS
from healthslm.data.registry import get_dataset
from healthslm.errors import HealthSLMError
from healthslm.io import write_json
from healthslm.leakage import copies_across_tasks, find_leaks
from healthslm.params import Params
from healthslm.paths import DOCS_DIR, RECORDS_DIR, SKIPPED_FILE
from healthslm.paths import VALIDATION_DIR as SUMMARY_DIR
from healthslm.prepare import available_tasks, read_records, split_names
from healthslm.tasks import TaskSpec

MIN_ROWS = 10


def build_suite(gx, spec: TaskSpec, split: str, params: Params):
    expect, bounds = gx.expectations, params.validate_
    suite = gx.ExpectationSuite(name=f"{spec.key}.{split}")
    required = ["id", "instruction", "input", "output"] + (["label"] if spec.label_kind != "text" else [])
    expectations = [
        expect.ExpectTableColumnsToMatchSet(column_set=list(RECORD_FIELDS), exact_match=True),
        expect.ExpectTableRowCountToBeBetween(min_value=MIN_ROWS),
        *(expect.ExpectColumnValuesToNotBeNull(column=c) for c in required),
        expect.ExpectColumnValuesToBeUnique(column="id"),
        expect.ExpectColumnValuesToBeInSet(column="split", value_set=[split]),
        expect.ExpectColumnValueLengthsToBeBetween(
            column="input", min_value=5, max_value=bounds.max_prompt_chars
        ),
        expect.ExpectColumnValueLengthsToBeBetween(
            column="output", min_value=1, max_value=bounds.max_output_chars
        ),
        expect.ExpectColumnValueLengthsToBeBetween(column="instruction", min_value=10, max_value=2000),
    ]
    if spec.closed:
        labels = [spec.parse_label(v) for v in spec.label_space]
        expectations.append(expect.ExpectColumnValuesToBeInSet(column="label", value_set=labels))
    elif spec.label_kind == "float":
        expectations.append(expect.ExpectColumnValuesToBeBetween(column="label", min_value=0))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def failure_lines(name: str, result) -> list[str]:
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


def gx_context(docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in list(context.get_config().data_docs_sites or {}):
        context.delete_data_docs_site(site)
    context.add_data_docs_site(site_name="healthslm", site_config=_docs_site(docs_dir))
    return gx, context


def run_suite(gx, context, source, suite, frame: pd.DataFrame):
    """Validate one DataFrame against one suite (registered in the ephemeral context for Data Docs)."""
    batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
    )
    return definition.run(batch_parameters={"dataframe": frame})


def _leakage(spec: TaskSpec, records_dir: Path, params: Params) -> dict:
    train = read_records(records_dir, spec.dataset, spec.name, "train")
    test = read_records(records_dir, spec.dataset, spec.name, "eval")
    found = find_leaks(train, test, params.validate_.near_duplicate_similarity)
    others = [t for t in available_tasks([spec.dataset], records_dir) if t.name != spec.name]
    copied = set().union(
        *(copies_across_tasks(test, read_records(records_dir, spec.dataset, t.name, "train")) for t in others)
    )
    return found | {"cross_task": len(copied)}  # readings of eval rows shown in another task's train prompts


def validate(
    params: Params,
    dataset: str,
    records_dir: Path = RECORDS_DIR,
    docs_root: Path = DOCS_DIR,
    summary_dir: Path = SUMMARY_DIR,
    echo=print,
    data_dir: Path = Path("data"),
) -> dict:
    spec = get_dataset(dataset)
    docs_dir, summary_file = docs_root / dataset, summary_dir / f"{dataset}.json"
    shutil.rmtree(docs_dir, ignore_errors=True)
    docs_dir.mkdir(parents=True)
    skipped = records_dir / dataset / SKIPPED_FILE
    if skipped.exists():
        reason = json.loads(skipped.read_text())["reason"]
        (docs_dir / "index.html").write_text(f"<!doctype html><title>{dataset}</title><p>{reason}</p>\n")
        write_json(
            summary_file, {"success": True, "skipped": reason, "suites": {}, "leakage": {}, "failures": []}
        )
        echo(reason)
        return {}
    gx, context = gx_context(docs_dir)
    source = context.data_sources.add_pandas(dataset)
    suites, leakage, failures = {}, {}, []
    for name, (frame, checks) in (
        spec.raw_tables(data_dir / spec.raw_dir) if spec.raw_tables else {}
    ).items():
        suite = gx.ExpectationSuite(name=f"raw.{name}")
        for expectation, kwargs in checks:
            suite.add_expectation(getattr(gx.expectations, expectation)(**kwargs))
        outcome = run_suite(gx, context, source, suite, frame)
        suites[suite.name] = {
            "rows": len(frame),
            "success": bool(outcome.success),
            "expectations": len(checks),
        }
        failures += failure_lines(f"{dataset} raw {name}", outcome)
    for task in spec.tasks:
        for split in split_names(records_dir, dataset, task.name):
            name = f"{task.key}.{split}"
            frame = pd.DataFrame(read_records(records_dir, dataset, task.name, split))
            result = run_suite(gx, context, source, build_suite(gx, task, split, params), frame)
            suites[name] = {
                "rows": len(frame),
                "success": bool(result.success),
                "expectations": len(result.results),
            }
            failures += failure_lines(name, result)
        leakage[task.key] = _leakage(task, records_dir, params)
        if leakage[task.key]["rate"] > params.validate_.max_leakage:
            failures.append(
                f"{task.key}: {leakage[task.key]['rate']:.1%} of eval inputs also in train "
                f"(exact or near), above validate.max_leakage={params.validate_.max_leakage}; "
                f"e.g. {leakage[task.key]['examples'][:2]}"
            )
    context.build_data_docs(site_names=["healthslm"])
    # The index lists runs with JavaScript from CDNs; direct links keep the pages reachable offline.
    pages = {
        page.stem.removeprefix(f"{dataset}-"): page.relative_to(docs_dir).as_posix()
        for page in sorted(docs_dir.glob("validations/**/*.html"))
    }
    write_json(docs_dir / "pages.json", pages)  # kept out of the summary: page names carry run timestamps
    write_json(
        summary_file, {"success": not failures, "suites": suites, "leakage": leakage, "failures": failures}
    )
    echo(f"{dataset}: {len(suites)} record sets validated; Data Docs: {docs_dir / 'index.html'}")
    if failures:
        raise HealthSLMError(f"validation of {dataset} failed:\n  " + "\n  ".join(failures))
    return suites
