"""The `healthslm` command: one subcommand per pipeline stage (see dvc.yaml)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from healthslm.errors import HealthSLMError, exit_interrupted
from healthslm.params import PARAMS_FILE, load_params

params_option = click.option(
    "--params",
    "params_file",
    type=click.Path(path_type=Path),
    default=PARAMS_FILE,
    show_default=True,
    help="The params file to read.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Benchmark, fine-tune and deploy small language models for health prediction.

    `dvc repro` runs the pipeline (dvc.yaml, whose stages run stages/<stage>.py); the stage subcommands
    here run one stage by hand, reading all of params.yaml.
    """


mirror_option = click.option(
    "--mirror",
    envvar="HEALTHSLM_DATA_MIRROR",
    default=None,
    help="Fetch from this base (http(s) URL or folder) laid out as GitHub serves the files, instead of "
    "GitHub; env HEALTHSLM_DATA_MIRROR.",
)


@cli.command()
@click.option("--dataset", "datasets", multiple=True, help="Dataset to fetch (repeatable); default: all.")
@mirror_option
@click.option("--dest", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
def fetch(datasets: tuple[str, ...], mirror: str | None, dest: Path) -> None:
    """Download the pinned raw datasets into data/, verifying every pin (MedQuAD converted from its XML), and
    llama.cpp's converter sdist if setup has not: after this, `dvc repro` needs no network."""
    from healthslm.data.fetch import fetch as run
    from healthslm.models import llama_sdist

    written = run(list(datasets) or None, dest, mirror, echo=click.echo)
    click.echo(f"{written} file(s) written to {dest}/")
    llama_sdist.ensure(echo=click.echo)


@cli.command()
@click.argument("dest", type=click.Path(path_type=Path))
@mirror_option
def mirror(dest: Path, mirror: str | None) -> None:
    """Save every pinned upstream file into DEST as GitHub lays them out: a mirror for offline machines
    (then `export HEALTHSLM_DATA_MIRROR=DEST`)."""
    from healthslm.data.fetch import save_mirror

    written = save_mirror(dest, mirror, echo=click.echo)
    click.echo(f"{written} file(s) saved to {dest}/")


dataset_option = click.option(
    "--dataset", "datasets", multiple=True, help="Dataset (repeatable); default: params.yaml's data.datasets."
)


@cli.command()
@params_option
@dataset_option
def prepare(params_file: Path, datasets: tuple[str, ...]) -> None:
    """Turn raw files into instruction records (JSONL + TOON) and few-shot pools under artifacts/records/."""
    from healthslm.prepare import prepare as run

    params = load_params(params_file)
    run(params, list(datasets) or params.data.datasets, echo=click.echo)


@cli.command()
@params_option
@dataset_option
@click.option("--augmented", is_flag=True, help="Validate artifacts/augmented/ instead of a dataset.")
def validate(params_file: Path, datasets: tuple[str, ...], augmented: bool) -> None:
    """Great Expectations gate and leakage check; Data Docs in reports/data_docs/<dataset>/."""
    from healthslm.validate import validate as run
    from healthslm.validate_augmented import validate_augmented

    params = load_params(params_file)
    if augmented:
        validate_augmented(params, echo=click.echo)
        return
    for name in datasets or params.data.datasets:
        run(params, name, echo=click.echo)


@cli.command()
@params_option
def augment(params_file: Path) -> None:
    """Reference responses for train records from an OpenAI-compatible endpoint (default: local llama.cpp)."""
    from healthslm.augment import augment as run

    run(load_params(params_file), echo=click.echo)


@cli.command()
@params_option
def judge(params_file: Path) -> None:
    """Score the open-ended answers on six criteria with an LLM judge -> reports/judge.json."""
    from healthslm.judge import judge as run

    run(load_params(params_file), echo=click.echo)


@cli.command("token-economy")
@params_option
def token_economy(params_file: Path) -> None:
    """Tokens per example of the seed and compact prompt formats -> reports/token_economy.json."""
    from healthslm.token_economy import token_economy as run

    run(load_params(params_file), echo=click.echo)


@cli.command()
@params_option
def train(params_file: Path) -> None:
    """Fine-tune (LoRA, QLoRA or full) -> artifacts/model/ and reports/train/; resumes if interrupted."""
    from healthslm.train import train as run

    run(load_params(params_file), echo=click.echo)


@cli.command("wandb-sync")
def wandb_sync() -> None:
    """Upload the offline W&B runs under ./wandb/ (needs WANDB_API_KEY)."""
    import subprocess

    runs = sorted(str(p) for p in Path("wandb").glob("offline-run-*"))
    if not runs:
        raise HealthSLMError("no offline W&B runs under wandb/")
    if not os.environ.get("WANDB_API_KEY"):
        raise HealthSLMError("WANDB_API_KEY is not set; offline runs stay in wandb/")
    sys.exit(subprocess.call(["wandb", "sync", *runs]))


@cli.command()
@params_option
def evaluate(params_file: Path) -> None:
    """Every mode of eval.mode with the model and the baselines: zs/fs-k -> reports/metrics.json, ft ->
    reports/metrics_ft.json (the stages evaluate and evaluate_finetuned)."""
    from healthslm.evaluate import evaluate as run

    params = load_params(params_file)
    run(params, echo=click.echo)
    run(params, finetuned=True, echo=click.echo)


@cli.command()
@params_option
def report(params_file: Path) -> None:
    """Write reports/report.md from metrics, validation and params."""
    from healthslm.report import report as run

    run(load_params(params_file), echo=click.echo)


@cli.command()
def readme() -> None:
    """Copy the report stage's reports/summary.md into docs/results.md's results block."""
    from healthslm.paths import SUMMARY_FILE
    from healthslm.summary import RESULTS_PAGE, update_readme

    changed = update_readme(SUMMARY_FILE)
    click.echo(
        f"{RESULTS_PAGE}: results block {'updated from' if changed else 'already matches'} {SUMMARY_FILE}"
    )


@cli.command("config-docs")
def config_docs() -> None:
    """Write docs/configuration.md: the params schema, params.yaml's comments, the environment variables."""
    from healthslm.configdoc import CONFIG_DOC, write_configuration_page

    changed = write_configuration_page()
    click.echo(f"{CONFIG_DOC}: {'written' if changed else 'already up to date'}")


@cli.command()
@params_option
def export(params_file: Path) -> None:
    """The fine-tuned model as GGUF f16 (llama.cpp's converter) -> artifacts/gguf/model-f16.gguf."""
    from healthslm.export import export as run

    run(load_params(params_file), echo=click.echo)


@cli.command()
@params_option
@click.option("--type", "quantization", required=True, help="A llama.cpp type: q8_0, q4_0, q4_k_m, ...")
def quantize(params_file: Path, quantization: str) -> None:
    """Quantize artifacts/gguf/model-f16.gguf -> artifacts/gguf/model-TYPE.gguf (size in reports/export/)."""
    from healthslm.export import quantize_stage

    quantize_stage(load_params(params_file), quantization, echo=click.echo)


@cli.command()
@params_option
def ondevice(params_file: Path) -> None:
    """Benchmark each GGUF on llama.cpp beside the HF model (speed, memory, accuracy kept)."""
    from healthslm.ondevice import ondevice as run

    run(load_params(params_file), echo=click.echo)


@cli.command()
@click.argument("base", required=False, default="main")
@click.argument("target", required=False)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/compare"), show_default=True)
def compare(base: str, target: str | None, out: Path) -> None:
    """Compare metrics, params and plots of BASE (default main) and TARGET (default the workspace).

    Either may be a git revision or a DVC experiment name. Writes OUT/comparison.md and comparison.html."""
    from healthslm.compare import compare as run

    run(base, target, out, echo=click.echo)


@cli.group()
def study() -> None:
    """Full-scale runs anyone can repeat: studies/NAME.yaml (params overrides, one DVC experiment per
    variant), results in reports/studies/NAME/."""


@study.command("list")
def study_list() -> None:
    """The studies, what each asks, how long it takes (measured where it ran) and where its results are."""
    from healthslm.study import RESULTS_DIR, STUDIES_DIR, load_study, measured

    for path in sorted(STUDIES_DIR.glob("*.yaml")):
        found = load_study(path.stem)
        estimate = found.estimate
        run = RESULTS_DIR / path.stem / "run.json"
        budget = f"estimated {estimate.cpu_2_cores_h} h on 2 CPU cores"
        took, where = f"not run; {budget}", ""
        if run.exists():
            took, where = f"{measured(json.loads(run.read_text()))} ({budget})", f"; results in {run.parent}"
        click.echo(
            f"{path.stem:18} {took}, ~{estimate.one_gpu_h} h on one GPU (estimated){where}\n    {found.title}"
        )


@study.command("run")
@click.argument("name")
def study_run(name: str) -> None:
    """Run study NAME (or resume it where an earlier run stopped) and write reports/studies/NAME/."""
    from healthslm.study import run_study

    run_study(name, echo=click.echo)


@cli.command("check-params")
@params_option
def check_params(params_file: Path) -> None:
    """Validate params.yaml against the schema and print the resolved model."""
    from healthslm.models.registry import effective_recipe, resolve_model

    params = load_params(params_file)
    preset = resolve_model(params.model)
    effective_recipe(preset, params.train.recipe_overrides())
    click.echo(
        f"{params_file}: ok; model {params.model} -> {preset.source} {preset.hf_id or preset.local_path}"
    )


@cli.command("check-engine")
def check_engine() -> None:
    """Run a few tokens through llama.cpp in a child process; fail in one line if it cannot run here."""
    from healthslm.engine import check_engine as run

    click.echo(f"llama.cpp ok: {run()}")


@cli.command()
def models() -> None:
    """List the model presets: size, the tokenizer their twin uses offline (or why none), the twin check
    (reports/benchmarks/twins.json), and where benchmarks/capacity.py measured their shape
    (reports/benchmarks/capacity.json) the train step's memory and speed, and the default run's time."""
    from healthslm.models.registry import load_preset, preset_names
    from healthslm.paths import CAPACITY_BENCHMARK, TWIN_BENCHMARK

    capacity = json.loads(CAPACITY_BENCHMARK.read_text()) if CAPACITY_BENCHMARK.exists() else {}
    checked = json.loads(TWIN_BENCHMARK.read_text()) if TWIN_BENCHMARK.exists() else {}
    for name in preset_names():
        preset = load_preset(name)
        size = f"{preset.architecture.parameters / 1e9:.2f}B" if preset.architecture else "?"
        click.echo(f"{name:14} {preset.source:5} {size:>6} {preset.hf_id}")
        click.echo(f"{'':16}{_twin_line(preset, checked.get('presets', {}).get(name), checked)}")
        click.echo(f"{'':16}{_capacity_line(preset, capacity)}")


@cli.command()
@click.argument("preset")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The model folder to write.")
@click.option("--layers", type=int, default=None, help="Decoder layers (default: the preset's, full depth).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
def twin(preset: str, out: Path, layers: int | None, seed: int) -> None:
    """Write a twin of PRESET: its architecture with seeded random weights and its family's real tokenizer
    and chat template, offline (then `dvc exp run -S model=OUT`). Its answers mean nothing."""
    from healthslm.models.twin import build_twin

    folder = build_twin(preset, out, layers, seed)
    facts = json.loads((folder / "twin.json").read_text())
    click.echo(
        f"twin of {preset}: {facts['layers']} layers, tokenizer {facts['vocabulary_file']} -> {folder}"
    )


def _twin_line(preset, check: dict | None, checked: dict) -> str:
    spec = preset.twin
    if spec is None or spec.unavailable:
        return f"no twin: {spec.unavailable if spec else 'no tokenizer named'}"
    source = (
        "the embedded GGUF's"
        if spec.tokenizer == "embedded"
        else f"llama.cpp ggml-vocab-{spec.tokenizer}.gguf"
    )
    line = f"twin tokenizer: {source}; "
    if check is None:
        return line + "twin not checked (python benchmarks/twins.py)"
    verdict = "passed" if check["passed"] else "FAILED"
    return line + f"twin check {verdict} at {checked['commit']} ({check['summary']})"


def _capacity_line(preset, capacity: dict) -> str:
    """Peak memory and speed at the preset's defaults, where benchmarks/capacity.py measured its shape, and
    the default run's estimated time on that CPU: the committed run's stage times (SmolLM2-135M) scaled by
    the two shapes' tokens/s; for a shape not measured, the largest measured one's scaled by parameters."""
    from healthslm.models.capacity import estimated_run_s
    from healthslm.models.registry import load_preset
    from healthslm.paths import STAGE_TIMES_DIR

    measured = {
        name: row
        for name, row in capacity.get("presets", {}).items()
        if "error" not in json.dumps({k: row.get(k, {"error": 1}) for k in ("ours-default", "score")})
    }
    runs = {path.stem: json.loads(path.read_text()) for path in STAGE_TIMES_DIR.glob("*.json")}
    stages = {stage: run["wall_s"] for stage, run in runs.items()}
    if "smollm2-135m" not in measured or not stages:
        return f"not measured (python benchmarks/capacity.py --presets {preset.name})"
    reference, where = measured["smollm2-135m"], f"{capacity['cpu']}, {capacity['cores']} cores"
    # The tokens/s ratio of one capacity run, carried to stage times made on another CPU: say both.
    if (stage_cpus := {run.get("cpu") for run in runs.values()}) != {capacity["cpu"]}:
        where = f"stage times on {', '.join(sorted(map(str, stage_cpus)))}, tokens/s ratio on {where}"
    if row := measured.get(preset.name):
        train, score = row["ours-default"], row["score"]["score_tokens_per_s"]["float32"]
        hours = estimated_run_s(stages, reference, row) / 3600
        peak = train["peak_rss_mb"] / 1024
        return (
            f"train at defaults: {peak:.1f} GB peak, {train['train_tokens_per_s']} tok/s; scoring {score} "
            f"tok/s; default run ~{hours:.1f} h ({where}; measured on its full-depth shape)"
        )
    size = {name: load_preset(name).architecture.parameters for name in measured}
    anchor = max(measured, key=size.__getitem__)
    hours = estimated_run_s(stages, reference, measured[anchor]) / 3600 * preset.architecture.parameters
    hours /= size[anchor]
    return (
        f"default run ~{hours:.1f} h ({where}): {anchor}'s estimate scaled by parameters, not measured "
        f"(python benchmarks/capacity.py --presets {preset.name})"
    )


def main() -> None:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        cli.main(standalone_mode=False)
    except HealthSLMError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except FileNotFoundError as exc:
        from healthslm.stage import missing_input

        click.secho(f"error: {missing_input(exc)}", fg="red", err=True)
        sys.exit(1)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        exit_interrupted(" ".join(["healthslm", *sys.argv[1:2]]))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
