"""Shared fixtures: the real data mirror (also served over real HTTP on 127.0.0.1), the embedded model,
and a tiny random model with the embedded model's tokenizer for fast pipeline runs."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def mirror_dir() -> Path:
    path = Path(os.environ.get("HEALTHSLM_DATA_MIRROR") or ROOT.parent / "shared" / "datasets")
    if not (path / "pmdata").is_dir():
        pytest.fail(f"no data mirror at {path}: set HEALTHSLM_DATA_MIRROR to a copy of the datasets")
    return path


@pytest.fixture(scope="session")
def mirror() -> Path:
    return mirror_dir()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output readable
        pass


@pytest.fixture(scope="session")
def serve():
    """serve(folder) -> base URL of a real HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def mirror_url(mirror: Path, serve) -> str:
    return serve(mirror)


@pytest.fixture(scope="session")
def pmdata_records(tmp_path_factory, mirror: Path) -> Path:
    """Real PMData records, prepared once from the mirror."""
    from healthslm.data.fetch import fetch
    from healthslm.params import Params
    from healthslm.prepare import prepare

    root = tmp_path_factory.mktemp("records")
    fetch(["pmdata"], root / "data", str(mirror), echo=lambda _: None)
    prepare(Params(), ["pmdata"], data_dir=root / "data", out_dir=root / "records", echo=lambda _: None)
    return root / "records"


@pytest.fixture(scope="session")
def all_records(tmp_path_factory, mirror: Path) -> Path:
    """Records of every built-in dataset from the mirror (GLOBEM absent, so skipped)."""
    from healthslm.data.fetch import fetch
    from healthslm.params import ALL_DATASETS, Params
    from healthslm.prepare import prepare

    root = tmp_path_factory.mktemp("all-records")
    fetch(None, root / "data", str(mirror), echo=lambda _: None)
    prepare(Params(), ALL_DATASETS, data_dir=root / "data", out_dir=root / "records", echo=lambda _: None)
    return root / "records"


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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of this project's pipeline files in a fresh folder (not yet a git/DVC repo)."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


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
