"""`healthslm validate --dataset NAME`: the Great Expectations gate over one dataset's raw files and records.

One suite per raw file (declared by the dataset) and per task and split: schema, no nulls, unique ids, label
in the label space, text length bounds, duplicate rows and split sizes; one more per table with wearable
readings: every reading finite and within its quantity's physical range (validate.physical_ranges); plus a
train/eval leakage check. Data Docs HTML goes to reports/data_docs/<dataset>/, a summary to
reports/validation/<dataset>.json. A violation fails the stage with a line per failed expectation naming the
table, field, bound, how many rows and the first rows with an excerpt of each value.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from healthslm.data.loaders import RECORD_FIELDS
from healthslm.data.people import shared_readings
from healthslm.data.readings import column_readings, text_readings
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
            column="input",
            min_value=bounds.min_input_chars,
            max_value=bounds.max_prompt_chars,
            meta={"param": "validate.min_input_chars, validate.max_prompt_chars"},
        ),
        expect.ExpectColumnValueLengthsToBeBetween(
            column="output",
            min_value=1,
            max_value=bounds.max_output_chars,
            meta={"param": "validate.max_output_chars"},
        ),
        expect.ExpectColumnValueLengthsToBeBetween(column="instruction", min_value=10, max_value=2000),
        duplicate_rows(expect, ["input", "output"], bounds.max_duplicate_share),
    ]
    if spec.closed:
        labels = [spec.parse_label(v) for v in spec.label_space]
        expectations.append(expect.ExpectColumnValuesToBeInSet(column="label", value_set=labels))
    elif spec.label_kind == "float":
        expectations.append(expect.ExpectColumnValuesToBeBetween(column="label", min_value=0))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def duplicate_rows(expect, columns: list[str], max_share: float):
    """Rows repeating another row's `columns`: fails above `max_share` of the table (both copies count)."""
    return expect.ExpectCompoundColumnsToBeUnique(
        column_list=columns, mostly=1 - max_share, meta={"param": "validate.max_duplicate_share"}
    )


def readings_suite(gx, readings: pd.DataFrame, params: Params):
    """Every reading finite and within its quantity's physical range."""
    from great_expectations.expectations.row_conditions import Column

    suite = gx.ExpectationSuite(name="readings")
    suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="value"))  # NaN, or no number
    for quantity in sorted(readings["quantity"].unique()):
        low, high = params.validate_.physical_ranges[quantity]
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="value", min_value=low, max_value=high, row_condition=Column("quantity") == quantity,
                meta={"param": f"validate.physical_ranges.{quantity}"},
            )
        )  # fmt: skip
    return suite


def _bound(config) -> str:
    kwargs, param = config.kwargs, (config.meta or {}).get("param")
    if "min_value" in kwargs or "max_value" in kwargs:
        shown = f"[{_num(kwargs.get('min_value'))}, {_num(kwargs.get('max_value'))}]"
    elif "value_set" in kwargs:
        shown = "one of " + ", ".join(map(str, list(kwargs["value_set"])[:8]))
    elif "regex" in kwargs:
        shown = f"matching {kwargs['regex']}"
    elif "column_list" in kwargs:
        shown = (
            f"unique ({', '.join(kwargs['column_list'])}) in at least {kwargs.get('mostly', 1):.0%} of rows"
        )
    else:
        return ""
    return f" (bound: {shown}{', ' + param if param else ''})"


def _num(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _excerpt(value, width: int = 40) -> str:
    text = repr(value.item() if hasattr(value, "item") else value)  # numpy scalars as plain numbers
    return text if len(text) <= width else text[: width - 1] + "…"


def failure_lines(name: str, result, frame: pd.DataFrame | None = None, readings: bool = False) -> list[str]:
    """One line per failed expectation: table, field, bound, how many rows, and the first rows with an
    excerpt of each value (`readings`: a readings table, whose rows name their source row and field)."""
    lines = []
    for outcome in result.results:
        if outcome.success:
            continue
        config, details = outcome.expectation_config, outcome.result or {}
        column = config.kwargs.get("column") or "/".join(config.kwargs.get("column_list", []))
        where = f" field '{column}'" if column and not readings else ""
        indexes = details.get("partial_unexpected_index_list") or []
        if frame is not None and indexes:
            row_name, column = (_reading_row, "text") if readings else (_row, column)
            shown = ", ".join(
                f"{row_name(frame, i)} = {_excerpt(_value(frame, i, column))}" for i in indexes[:3]
            )
            count = details.get("unexpected_count", len(indexes))
            lines.append(f"{name}:{where} {config.type}{_bound(config)}: {count} row(s), e.g. {shown}")
        else:
            observed = details.get("partial_unexpected_list") or details.get("observed_value")
            lines.append(f"{name}:{where} {config.type}{_bound(config)}: got {_excerpt(observed, 160)}")
    return lines


def _row(frame: pd.DataFrame, index) -> str:
    return f"row {index}" + (f" ({frame.at[index, 'id']})" if "id" in frame.columns else "")


def _value(frame: pd.DataFrame, index, column: str):
    if column in frame.columns:
        return frame.at[index, column]
    return {c: frame.at[index, c] for c in column.split("/") if c in frame.columns}


def _reading_row(frame: pd.DataFrame, index) -> str:
    return f"{frame.at[index, 'table']} row {frame.at[index, 'row']} field '{frame.at[index, 'field']}'"


def readings_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The wearable readings of a table: written in its text column, or as columns of their own."""
    texts = next((c for c in ("input", "question") if c in frame.columns), None)
    found = [column_readings(frame)]
    if texts:
        found.append(text_readings(frame[texts].fillna("").astype(str).tolist()))
    return pd.concat(found, ignore_index=True)


def check_table(
    gx, context, source, suite, frame: pd.DataFrame, name: str
) -> tuple[dict, list, pd.DataFrame]:
    """Run a table's suite: (its summary, failure lines, its readings labelled with the table's name)."""
    outcome = run_suite(gx, context, source, suite, frame)
    readings = readings_of(frame).assign(table=name)
    return _summary(frame, outcome), failure_lines(name, outcome, frame), readings


def check_readings(
    gx, context, source, dataset: str, readings: pd.DataFrame, params: Params
) -> tuple[dict, list]:
    """One suite over the readings of every raw file and record set of a dataset (one GX run, not one per
    table: the per-run overhead dominates); each failure names its table, row and field."""
    suite = readings_suite(gx, readings, params)
    outcome = run_suite(gx, context, source, suite, readings)
    summary = _summary(readings, outcome) | {"tables": int(readings["table"].nunique())}
    return summary, failure_lines(f"{dataset} readings", outcome, readings, readings=True)


def _summary(frame: pd.DataFrame, outcome) -> dict:
    summary = {"rows": len(frame), "success": bool(outcome.success), "expectations": len(outcome.results)}
    for result in outcome.results:
        if result.expectation_config.type == "expect_compound_columns_to_be_unique":
            summary["duplicate_rows"] = (result.result or {}).get("unexpected_count", 0)
    return summary


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
    # cross_task: readings of eval rows shown in another task's train prompts; shared_readings: eval rows
    # showing three consecutive days of readings that a train row shows too (the same person's days)
    return found | {"cross_task": len(copied), "shared_readings": len(shared_readings(test, train))}


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
    raw = spec.raw_tables(data_dir / spec.raw_dir, params.validate_) if spec.raw_tables else {}
    readings = []
    for name, (frame, checks) in raw.items():
        suite = gx.ExpectationSuite(name=f"raw.{name}")
        for expectation, kwargs in checks:
            suite.add_expectation(getattr(gx.expectations, expectation)(**kwargs))
        suites[suite.name], failed, found = check_table(
            gx, context, source, suite, frame, f"{dataset} raw {name}"
        )
        failures, readings = failures + failed, [*readings, found]
    for task in spec.tasks:
        for split in split_names(records_dir, dataset, task.name):
            frame = pd.DataFrame(read_records(records_dir, dataset, task.name, split))
            suite = build_suite(gx, task, split, params)
            suites[suite.name], failed, found = check_table(gx, context, source, suite, frame, suite.name)
            failures, readings = failures + failed, [*readings, found]
        leakage[task.key] = _leakage(task, records_dir, params)
        if leakage[task.key]["rate"] > params.validate_.max_leakage:
            failures.append(
                f"{task.key}: {leakage[task.key]['rate']:.1%} of eval inputs also in train "
                f"(exact or near), above validate.max_leakage={params.validate_.max_leakage}; "
                f"e.g. {leakage[task.key]['examples'][:2]}"
            )
    if readings and len(readings := pd.concat(readings, ignore_index=True)):
        suites["readings"], failed = check_readings(gx, context, source, dataset, readings, params)
        failures += failed
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
    readings = suites.get("readings", {}).get("rows", 0)
    docs = docs_dir / "index.html"
    echo(f"{dataset}: {len(suites)} suites run ({readings} wearable readings checked); Data Docs: {docs}")
    if failures:
        raise HealthSLMError(f"validation of {dataset} failed:\n  " + "\n  ".join(failures))
    return suites
