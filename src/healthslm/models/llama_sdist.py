"""Files from the llama-cpp-python sdist the bindings were built from: llama.cpp's GGUF converter, and the
vocabulary files and chat templates its own tests use (twins of the presets, models/twin.py).

The sdist is pinned by sha256 in llama-cpp-python.txt (a pip requirements line) and downloaded at setup time
(setup.sh, or `healthslm fetch` for a venv set up before) into the venv, never while a stage runs: `dvc repro`
needs no network, and a re-released sdist cannot change the converter unseen. Every single file taken from it
for a twin is pinned by sha256 too (PINNED).
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from filelock import FileLock

from healthslm.errors import HealthSLMError
from healthslm.io import sha256_of
from healthslm.models.loader import cache_root

REQUIREMENT = Path(__file__).with_name("llama-cpp-python.txt")
# Paths under the sdist's vendor/llama.cpp/ -> sha256, measured on llama-cpp-python 0.3.36.
PINNED = {
    "models/ggml-vocab-llama-spm.gguf": "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
    "models/ggml-vocab-llama-bpe.gguf": "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e",
    "models/ggml-vocab-phi-3.gguf": "967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326",
    "models/ggml-vocab-qwen2.gguf": "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c",
    "models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja": "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4",  # noqa: E501
    "models/templates/Qwen-Qwen2.5-7B-Instruct.jinja": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",  # noqa: E501
    "models/templates/microsoft-Phi-3.5-mini-instruct.jinja": "78d976a442bcde2f0be15aafbb8e3050e1104f86732266f68403251b89982a90",  # noqa: E501
}
VENDOR = "/vendor/llama.cpp/"


@functools.cache
def pin() -> tuple[str, str]:
    """(version, sha256) of the pinned sdist, read from llama-cpp-python.txt."""
    text = REQUIREMENT.read_text(encoding="utf-8")
    found = re.search(r"^llama-cpp-python==(\S+) --hash=sha256:([0-9a-f]{64})$", text, re.MULTILINE)
    if not found:
        raise HealthSLMError(f"{REQUIREMENT}: no `llama-cpp-python==V --hash=sha256:H` line")
    return found[1], found[2]


def version() -> str:
    return pin()[0]


def sdist_path() -> Path:
    """Where setup keeps the sdist: in the venv, beside the bindings built from it."""
    return Path(sys.prefix) / "share" / "healthslm" / f"llama_cpp_python-{version()}.tar.gz"


@functools.cache
def sdist() -> Path:
    """The pinned sdist, checked against its sha256; never downloaded here: a stage needs no network."""
    path = sdist_path()
    if not path.is_file():
        raise HealthSLMError(
            f"{path}: missing (the llama-cpp-python {version()} sdist with llama.cpp's GGUF converter); "
            "run `healthslm fetch` or `bash setup.sh`, which download it from PyPI pinned by sha256"
        )
    if (digest := sha256_of(path)) != pin()[1]:
        raise HealthSLMError(
            f"{path}: sha256 {digest} is not the pinned {pin()[1]} ({REQUIREMENT.name}); "
            "delete it and run `healthslm fetch`"
        )
    return path


def ensure(echo=print) -> Path:
    """Download the pinned sdist into the venv if it is not there (pip checks the sha256); setup-time only."""
    path = sdist_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            echo(f"fetch: llama-cpp-python {version()} sdist (llama.cpp's GGUF converter) from PyPI")
            with tempfile.TemporaryDirectory(dir=path.parent) as download:
                fetched = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                     "--disable-pip-version-check", "--require-hashes", "-r", REQUIREMENT, "-d", download],
                    capture_output=True, text=True,
                )  # fmt: skip
                found = Path(download) / path.name
                if fetched.returncode or not found.is_file():
                    reason = fetched.stderr.strip().splitlines()[-1:] or ["no file"]
                    raise HealthSLMError(
                        f"cannot download the llama-cpp-python {version()} sdist pinned in {REQUIREMENT}: "
                        f"{reason[0]}"
                    )
                found.replace(path)
    sdist.cache_clear()
    return sdist()


def extract(parts: tuple[str, ...], dest: Path) -> None:
    """The pinned sdist's vendor/llama.cpp/ members whose paths start with one of `parts`, into `dest`."""
    with tarfile.open(sdist()) as archive:
        for member in archive.getmembers():
            _, _, inner = member.name.partition(VENDOR)
            if inner and inner.startswith(parts) and (member.isfile() or member.isdir()):
                member.name = inner
                archive.extract(member, dest, filter="data")


def pinned_file(inner: str) -> Path:
    """One pinned file of the sdist (a path under vendor/llama.cpp/), extracted once and checked each use."""
    if inner not in PINNED:
        raise HealthSLMError(f"{inner}: not a pinned file of the llama-cpp-python sdist")
    folder = cache_root() / f"llama.cpp-files-{version()}"
    path = folder / inner
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not path.exists():
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                extract((inner,), Path(tmp))
                path.parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / inner).replace(path)
    digest = sha256_of(path)
    if digest != PINNED[inner]:
        raise HealthSLMError(
            f"{path}: sha256 {digest} is not the pinned {PINNED[inner]} "
            f"(llama-cpp-python {version()}'s vendor/llama.cpp/{inner})"
        )
    return path
