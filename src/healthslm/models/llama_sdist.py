"""Files from the llama-cpp-python sdist of the installed bindings: llama.cpp's GGUF converter, and the
vocabulary files and chat templates its own tests use (twins of the presets, models/twin.py).

The sdist is downloaded once per version into the cache (PyPI; `pip download`); every single file taken
from it for a twin is pinned by sha256 (PINNED), so a re-released sdist cannot change a tokenizer unseen.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from filelock import FileLock

from healthslm.errors import HealthSLMError
from healthslm.io import atomic_path
from healthslm.models.loader import cache_root

PINNED_VERSION = "0.3.36"
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


def version() -> str:
    """The installed bindings' version; where they are absent (a GPU machine running benchmarks/gpu_check.py
    with a carried cache), the version PINNED was measured on."""
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return PINNED_VERSION


def sdist() -> Path:
    """The llama-cpp-python sdist of the installed version, downloaded from PyPI once."""
    target = cache_root() / "sdists" / f"llama_cpp_python-{version()}.tar.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory() as download:
            fetched = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                 "--disable-pip-version-check", f"llama-cpp-python=={version()}", "-d", download],
                capture_output=True, text=True,
            )  # fmt: skip
            found = list(Path(download).glob("*.tar.gz"))
            if fetched.returncode or not found:
                raise HealthSLMError(
                    f"cannot download the llama-cpp-python {version()} sdist (llama.cpp's GGUF converter, "
                    f"vocabularies): {fetched.stderr.strip().splitlines()[-1:] or 'no file'}"
                )
            with atomic_path(target) as tmp:
                tmp.write_bytes(found[0].read_bytes())
    return target


def extract(parts: tuple[str, ...], dest: Path) -> None:
    """The sdist's vendor/llama.cpp/ members whose paths start with one of `parts`, into `dest`."""
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
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PINNED[inner]:
        raise HealthSLMError(
            f"{path}: sha256 {digest} is not the pinned {PINNED[inner]} "
            f"(llama-cpp-python {version()}'s vendor/llama.cpp/{inner})"
        )
    return path
