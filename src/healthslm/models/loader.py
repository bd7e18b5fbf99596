"""Load a preset's model and tokenizer with transformers.

The embedded GGUF is dequantized once into a safetensors cache (~20 s), then loads in ~0.1 s.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import platformdirs
from filelock import FileLock

from healthslm.errors import HealthSLMError
from healthslm.io import atomic_dir, packaged_folder, sha256_of
from healthslm.models.registry import GgufSource, ModelPreset

CACHE_ENV = "HEALTHSLM_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("healthslm"))


def gguf_path(source: GgufSource) -> Path:
    path = packaged_folder(source.package) / source.file
    if not path.is_file():
        raise HealthSLMError(f"{path}: missing from package {source.package}")
    return path


@functools.cache
def _content_digest(path: Path, stat_key: tuple[int, int, int]) -> str:
    del stat_key  # part of the memo key only: a file rewritten in place is hashed again
    return sha256_of(path)


def conversion_key(gguf: Path) -> str:
    """The GGUF's bytes and the transformers that dequantizes them: a re-released file of the same name and
    size, or another dequantizer, gets its own converted weights (~0.2 s to hash 100 MB, once per process)."""
    import transformers

    stat = gguf.stat()
    content = _content_digest(gguf.resolve(), (stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(f"{content}:{transformers.__version__}".encode()).hexdigest()[:16]


def converted_gguf_dir(preset: ModelPreset) -> Path:
    """Dequantize the preset's GGUF into safetensors under the cache, once; return that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = gguf_path(preset.gguf)
    target = cache_root() / "models" / f"{preset.name}-{conversion_key(gguf)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        model.config.quantization_config = None  # the saved weights are plain fp32, not GGUF
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return target


def model_location(preset: ModelPreset) -> str:
    if preset.source == "gguf":
        return str(converted_gguf_dir(preset))
    return preset.local_path or preset.hf_id


def _hub_unreachable_reason() -> str | None:
    """A DNS look-up of the Hub host: fails in a moment where the Hub's own client retries for ~45 s."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"{host} does not resolve: {exc.strerror or exc}"
    return None


def _download_error(preset: ModelPreset, reason: str) -> HealthSLMError:
    return HealthSLMError(
        f"cannot download {preset.hf_id} from the Hugging Face Hub ({reason}); "
        "set HF_HOME to a cache that holds it, HF_TOKEN for a gated model, or use a local path as `model`"
    )


def _from_pretrained(location: str, dtype, local_only: bool, **model_kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(
        location, dtype=dtype, local_files_only=local_only, **model_kwargs
    )
    return model, tokenizer


def load_model_and_tokenizer(preset: ModelPreset, dtype=None, **model_kwargs):
    """Return (model, tokenizer) in eval mode; a Hub preset that cannot be fetched gives a clear error.

    `model_kwargs` go to `from_pretrained` (e.g. a bitsandbytes `quantization_config` for QLoRA)."""
    location = model_location(preset)
    try:
        model, tokenizer = _from_pretrained(location, dtype, local_only=True, **model_kwargs)
    except OSError as exc:
        if preset.source != "hub":
            raise HealthSLMError(f"cannot load model from {location}: {str(exc).splitlines()[0]}") from None
        if reason := _hub_unreachable_reason():
            raise _download_error(preset, reason) from None
        try:
            model, tokenizer = _from_pretrained(location, dtype, local_only=False, **model_kwargs)
        except OSError as exc:
            raise _download_error(preset, str(exc).splitlines()[0]) from None
    model.eval()
    return model, tokenizer
