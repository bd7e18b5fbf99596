"""`healthslm fetch`: download the pinned raw files into data/, verifying each sha256.

Files come from their upstream URL, or from a mirror (a folder or an http(s) base URL laid out as
`<mirror>/<dataset>/<file>`). A bad checksum, an HTTP error or an unreachable host raises a clear
HealthSLMError and leaves no partial file behind.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import requests
import yaml
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from healthslm.errors import HealthSLMError
from healthslm.io import atomic_path

MIRROR_ENV = "HEALTHSLM_DATA_MIRROR"
UPSTREAM_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    dataset: str
    file: str
    repo: str
    commit: str
    path: str
    sha256: str
    bytes: int
    converted: bool = False
    folder: str = ""  # destination under data/, when not the dataset's own name

    @property
    def dest(self) -> str:
        return f"{self.folder or self.dataset}/{self.file}"

    @property
    def upstream_url(self) -> str:
        return UPSTREAM_URL.format(repo=self.repo, commit=self.commit, path=self.path)


def load_sources() -> dict[str, list[SourceFile]]:
    text = resources.files("healthslm.data").joinpath("sources.yaml").read_text(encoding="utf-8")
    pins = yaml.safe_load(text)["datasets"]
    return {ds: [SourceFile(dataset=ds, **row) for row in rows] for ds, rows in pins.items()}


def _session() -> requests.Session:
    session = requests.Session()
    retry = Retry(total=3, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _copy_hashing(src: BinaryIO, dst: Path) -> str:
    digest = hashlib.sha256()
    with dst.open("wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _download(session: requests.Session, url: str, dst: Path) -> str:
    try:
        with session.get(url, stream=True, timeout=(10, 120)) as response:
            if response.status_code != 200:
                raise HealthSLMError(
                    f"download failed: HTTP {response.status_code} {response.reason} for {url}"
                )
            response.raw.decode_content = True
            return _copy_hashing(response.raw, dst)
    except requests.exceptions.RequestException as exc:
        host = requests.utils.urlparse(url).netloc
        raise HealthSLMError(
            f"cannot reach {host} for {url} ({type(exc).__name__}); "
            f"set {MIRROR_ENV} to a mirror folder or URL if this machine is offline"
        ) from None


def sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _source_location(item: SourceFile, mirror: str | None) -> str:
    if mirror:
        if mirror.startswith(("http://", "https://")):
            return f"{mirror.rstrip('/')}/{item.dataset}/{item.file}"
        return str(Path(mirror) / item.dataset / item.file)
    if item.converted:
        raise HealthSLMError(
            f"{item.dataset}/{item.file} is converted from upstream {item.repo} ({item.path}); "
            f"fetching it needs a mirror: set {MIRROR_ENV}"
        )
    return item.upstream_url


def fetch_file(item: SourceFile, dest_root: Path, mirror: str | None, session: requests.Session) -> bool:
    """Fetch one file; return False when a verified copy was already there."""
    target = dest_root / item.dest
    if target.exists() and sha256_of(target) == item.sha256:
        return False
    location = _source_location(item, mirror)
    with atomic_path(target) as tmp:
        if location.startswith(("http://", "https://")):
            digest = _download(session, location, tmp)
        else:
            if not Path(location).is_file():
                raise HealthSLMError(f"mirror has no file {location}")
            with open(location, "rb") as src:
                digest = _copy_hashing(src, tmp)
        if digest != item.sha256:
            raise HealthSLMError(
                f"checksum mismatch for {item.dataset}/{item.file} from {location}: "
                f"expected sha256 {item.sha256}, got {digest}; nothing was written"
            )
    return True


def fetch(datasets: list[str] | None, dest_root: Path, mirror: str | None = None, echo=print) -> int:
    """Fetch the named datasets (all when None) into dest_root; return how many files were written."""
    sources = load_sources()
    unknown = sorted(set(datasets or []) - set(sources))
    if unknown:
        raise HealthSLMError(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sources)}")
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    written = 0
    with _session() as session:
        for name in datasets or list(sources):
            for item in sources[name]:
                if fetch_file(item, dest_root, mirror, session):
                    written += 1
                    echo(f"fetched  {item.dest} ({item.bytes / 1e6:.1f} MB)")
                else:
                    echo(f"verified {item.dest}")
    write_user_supplied_placeholders(dest_root)
    return written


def write_user_supplied_placeholders(dest_root: Path) -> None:
    """data/<name>/README.md for credentialed datasets, saying where the user's copy goes."""
    from healthslm.data.registry import DATASETS, load_plugins

    load_plugins([])
    for spec in DATASETS.values():
        if spec.user_supplied:
            readme = dest_root / spec.raw_dir / "README.md"
            readme.parent.mkdir(parents=True, exist_ok=True)
            text = (
                f"# {spec.name}: user-supplied ({spec.license})\n\n"
                f"Put {', '.join(spec.required_files)} here, "
                f"then `dvc add data`. Without them the pipeline skips {spec.name}. Schema: see README.md.\n"
            )
            if not readme.exists() or readme.read_text() != text:
                readme.write_text(text)
