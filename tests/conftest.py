"""Shared fixtures: the real data served on 127.0.0.1 at GitHub's URL paths, the embedded model,
and a tiny random model with the embedded model's tokenizer for fast pipeline runs."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

import healthslm  # noqa: F401  (first: it pins torch's CPU kernels before any test computes)

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def pytest_configure(config) -> None:
    """Under pytest-xdist (pyproject's `-n auto`), each worker keeps to one CPU of its own: its processes see
    one core (resources.physical_cores), so torch and llama.cpp start one thread each and two workers never
    compete for a core (their spinning threads did, 8x slower, when both used every core)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[int(worker[2:]) % len(cpus)]})


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: a worker per CPU this process may use, as far as memory allows (a worker's pipeline stages
    peak at ~3.5 GB: the embedded model training)."""
    import psutil

    from healthslm.resources import allowed_cpus

    return max(1, min(len(allowed_cpus()), int(psutil.virtual_memory().total / 2**30 // 4)))


EXPENSIVE_FIXTURES = ("small_run", "evaluated", "logliks_by_threads")  # built per worker that uses them


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config, items) -> None:
    """Tests sharing an expensive fixture of their own run on one worker (xdist loadgroup): the small pipeline
    run, evaluate's run of the tiny model, the canary's scores, each family's twin. The small run's tests go
    first: they are the longest, and the other worker takes the rest meanwhile."""
    for item in items:
        if shared := [name for name in EXPENSIVE_FIXTURES if name in item.fixturenames]:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif "twin" in item.fixturenames and hasattr(item, "callspec"):
            item.add_marker(pytest.mark.xdist_group(f"twin-{item.callspec.params['twin']}"))
    items.sort(key=lambda item: "small_run" not in item.fixturenames)  # stable: the rest keep their order


SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def link_github_layout(flat: Path, dest: Path) -> Path:
    """Lay a folder like ../shared/datasets (<dataset>/<file>, upstream/<repo>/<commit>.zip) out as GitHub
    serves the pinned files, routed by the pins: symlinks, nothing copied."""
    from healthslm.data.fetch import load_sources

    for items in load_sources().values():
        for item in items:
            if item.convert:
                source = flat / "upstream" / item.repo / f"{item.commit}.zip"
                link = Path(item.archive_location(str(dest)))
            else:
                source, link = flat / item.dataset / item.file, Path(item.raw_location(str(dest)))
            if not source.is_file():
                pytest.fail(f"{flat} has no {source.relative_to(flat)}, which the pins need")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source.resolve())
    return dest


@pytest.fixture(scope="session")
def github_layout(tmp_path_factory) -> Path:
    """A folder holding every pinned upstream file as GitHub serves it. The data comes from
    HEALTHSLM_DATA_MIRROR, else ../shared/datasets, else GitHub itself (saved once into the user cache)."""
    from healthslm.data.fetch import MIRROR_ENV, is_http, save_mirror
    from healthslm.models.loader import cache_root

    env = os.environ.get(MIRROR_ENV)
    flat = Path(env) if env and not is_http(env) else None if env else SHARED_DATASETS
    if flat is not None and (flat / "pmdata").is_dir():  # a folder laid out like ../shared/datasets
        return link_github_layout(flat, tmp_path_factory.mktemp("github"))
    dest = cache_root() / "upstream"
    save_mirror(dest, env, echo=lambda _: None)  # skips what is already there and verified
    return dest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output readable
        pass


@pytest.fixture(scope="session")
def serve():
    """serve(folder, handler) -> base URL of a real HTTP server on 127.0.0.1 (until the session ends) serving
    that folder, or answering with `handler` alone when there is no folder."""
    servers = []

    def start(folder: Path | None, handler=_QuietHandler) -> str:
        if folder is not None:
            handler = functools.partial(handler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def mirror_url(github_layout: Path, serve) -> str:
    """A stand-in for GitHub on 127.0.0.1: raw files and archives at GitHub's URL paths."""
    return serve(github_layout)


def once_per_run(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build` fills once per test run, shared by every pytest-xdist worker (the first builds it
    under a file lock, the others wait and read it). Read-only for the tests: copy before changing."""
    workers = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        workers = workers.parent  # the run's folder, above each worker's own
    folder, done = workers / f"shared-{name}", workers / f"shared-{name}.done"
    with FileLock(f"{folder}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def raw_data(tmp_path_factory, mirror_url: str) -> Path:
    """data/ as `healthslm fetch` writes it (every dataset, MedQuAD converted), fetched once over HTTP."""
    from healthslm.data.fetch import fetch

    def build(root: Path) -> None:
        fetch(None, root / "data", mirror_url, echo=lambda _: None)

    return once_per_run(tmp_path_factory, "raw", build) / "data"


@pytest.fixture(scope="session")
def pmdata_records(tmp_path_factory, raw_data: Path) -> Path:
    """Real PMData records, prepared once; its raw files beside them in data/."""
    from healthslm.params import Params
    from healthslm.prepare import prepare

    def build(root: Path) -> None:
        shutil.copytree(raw_data / "pmdata", root / "data" / "pmdata")
        prepare(Params(), ["pmdata"], data_dir=root / "data", out_dir=root / "records", echo=lambda _: None)

    return once_per_run(tmp_path_factory, "records", build) / "records"


@pytest.fixture(scope="session")
def all_records(tmp_path_factory, raw_data: Path) -> Path:
    """Records of every built-in dataset (GLOBEM absent, so skipped)."""
    from healthslm.params import ALL_DATASETS, Params
    from healthslm.prepare import prepare

    def build(root: Path) -> None:
        prepare(Params(), ALL_DATASETS, data_dir=raw_data, out_dir=root / "records", echo=lambda _: None)

    return once_per_run(tmp_path_factory, "all-records", build) / "records"


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct."""
    from healthslm.models.loader import load_model_and_tokenizer
    from healthslm.models.registry import resolve_model

    return load_model_and_tokenizer(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template: a second, fast local model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = embedded
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def copy_pipeline_files(dest: Path, files=(), folders=()) -> Path:
    """This project's pipeline files (and `files`, `folders` besides) in a fresh folder, not a repo yet."""
    dest.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore", *files):
        shutil.copy(ROOT / name, dest / name)
    for name in ("src", "stages", "plugins", *folders):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # The benchmarks' committed outputs (eval_speed, capacity): the report quotes them.
    shutil.copytree(ROOT / "reports" / "benchmarks", dest / "reports" / "benchmarks")
    return dest


def pipeline_env(tmp_path: Path) -> dict[str, str]:
    """The environment a user's shell gives the pipeline: this suite's tools first on PATH, no Hub."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["HF_ENDPOINT"] = "https://hub.invalid"  # the Hub must not be needed (and never resolves here)
    env.pop("HEALTHSLM_DATA_MIRROR", None)
    return env


def run(cmd: list[str], cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    print(f"{time.perf_counter() - started:7.1f} s  {' '.join(cmd)[:100]}")  # where the test's time goes (-s)
    if ok and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def set_params(project: Path, **changes) -> None:
    """params.yaml with `block__key=value` changes."""
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in changes.items():
        block, key = dotted.split("__")
        params[block][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@dataclass(frozen=True)
class SmallRun:
    project: (
        Path  # a git + DVC repo (branch main), its first `dvc repro` committed: copy it before changing it
    )
    first_repro: str  # that repro's stdout
    traces: Path  # what each of its stages opened (HEALTHSLM_TRACE_READS)

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.project, dest, symlinks=True)
        return dest


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, mirror_url: str) -> SmallRun:
    """The one small pipeline run that the pipeline test and the PR-workflow test both start from: this
    project at small params (the embedded model, PMData + PubMedQA + GLOBEM absent, 3 eval rows), fetched over
    HTTP from the loopback GitHub, `dvc repro`, committed."""
    root = tmp_path_factory.mktemp("small-run")
    # and what the PR job reads besides
    project = copy_pipeline_files(root / "project", ("README.md", "setup.sh"), (".github",))
    set_params(
        project,
        eval__limit=3,
        eval__bootstrap_samples=200,
        data__datasets=["pmdata", "pubmedqa", "globem"],
        train__examples_per_task=2,
        train__max_steps=2,
        train__merge=False,
        augment__tasks=["pubmedqa_answer"],
        augment__per_task=2,
        export__quantizations=["q4_0"],
        export__bench_prompts=1,
        export__bench_new_tokens=2,
    )
    env = pipeline_env(root)
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "ci@example.org"],
        ["git", "config", "user.name", "ci"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.site_cache_dir", str(root / "dvc-site")],
        ["healthslm", "fetch", "--dataset", "pmdata", "--dataset", "pubmedqa", "--mirror", mirror_url],
        ["dvc", "add", "-q", "data"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "data"],  # DVCLive reads the git revision
    ):
        run(command, project, env)
    traces = root / "reads"
    first = run(["dvc", "repro"], project, {**env, "HEALTHSLM_TRACE_READS": str(traces)})
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "first run"], project, env)
    return SmallRun(project, first.stdout, traces)


def browser_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("no headless browser: `bash setup.sh --dev` installs Debian's chromium")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """load(html_file) -> (DOM after load, console messages): a real headless Chromium, offline flags."""
    import subprocess

    def load(page: Path) -> tuple[str, list[str]]:
        profile = tmp_path_factory.mktemp("chromium-profile")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
        flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        flags += [f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom"]
        result = subprocess.run(
            [browser_binary(), *flags, page.resolve().as_uri()], capture_output=True, text=True, timeout=120
        )
        console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
        return result.stdout, console

    return load
