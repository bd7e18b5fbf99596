"""`healthslm fetch`: download the pinned raw files into data/, verifying every pin.

Every file comes from GitHub at a pinned commit: a raw file from raw.githubusercontent.com, MedQuAD from the
repository's archive zip, converted here (data/convert.py) into the JSONL the loaders read and pinned by the
sha256 and record count of that JSONL (a zip's own bytes differ between hosts).

A mirror (HEALTHSLM_DATA_MIRROR, or --mirror) is GitHub's layout at another base, an http(s) URL or a folder:
`<base>/<owner>/<repo>/<commit>/<path>` for a raw file, `<base>/<owner>/<repo>/archive/<commit>.zip` for an
archive; `healthslm mirror DIR` makes one. A folder laid out as `<folder>/<dataset>/<file>`, converted files
included, is accepted too, for offline machines.

pooch downloads (retries, the hash checked on a temporary file that is renamed only when it matches); a wrong
hash, a cut or failed download raises one line naming the file and what to do, and leaves no partial file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import pooch
import requests
import yaml

from healthslm.data.convert import CONVERTERS
from healthslm.data.registry import DATASETS, load_plugins
from healthslm.errors import HealthSLMError
from healthslm.io import atomic_path, sha256_of

MIRROR_ENV = "HEALTHSLM_DATA_MIRROR"
RAW_BASE = "https://raw.githubusercontent.com"
ARCHIVE_BASE = "https://github.com"
RETRIES = 2
CHUNK = 1 << 20
pooch.get_logger().setLevel("WARNING")  # our own one line per file instead of pooch's


@dataclass(frozen=True)
class SourceFile:
    dataset: str
    file: str
    repo: str
    commit: str
    sha256: str  # of the file; of its decompressed content when `convert` is set
    path: str = ""  # in the repository (raw files)
    convert: str = ""  # a converter of data/convert.py: the file is made from the repository's archive zip
    records: int | None = None  # record count of a converted file
    folder: str = ""  # destination under data/, when not the dataset's own name

    @property
    def dest(self) -> str:
        return f"{self.folder or self.dataset}/{self.file}"

    def raw_location(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"

    def archive_location(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.repo}/archive/{self.commit}.zip"

    @property
    def upstream_url(self) -> str:
        return self.archive_location(ARCHIVE_BASE) if self.convert else self.raw_location(RAW_BASE)


def load_sources() -> dict[str, list[SourceFile]]:
    text = resources.files("healthslm.data").joinpath("sources.yaml").read_text(encoding="utf-8")
    pins = yaml.safe_load(text)["datasets"]
    return {ds: [SourceFile(dataset=ds, **row) for row in rows] for ds, rows in pins.items()}


def content_sha256(path: Path, gzipped: bool | None = None) -> str:
    """sha256 of a converted file's content (decompressed when gzip, by default when named *.gz)."""
    if not (path.suffix == ".gz" if gzipped is None else gzipped):
        return sha256_of(path)
    with gzip.open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def is_http(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _copy(source: str, output_file: str, _pooch) -> None:
    """pooch downloader for a mirror folder."""
    shutil.copyfile(source, output_file)


def _download(location: str, target: Path, sha256: str | None, label: str) -> None:
    """Fetch `location` (URL or local file) to `target` through pooch; one clear line on any failure."""
    if is_http(location):
        downloader = pooch.HTTPDownloader(chunk_size=CHUNK, timeout=(15, 120))
    elif Path(location).is_file():
        downloader = _copy
    else:
        raise HealthSLMError(f"{label}: the mirror has no {location}")
    key = target.name
    store = pooch.create(
        path=target.parent,
        base_url="",
        registry={key: f"sha256:{sha256}" if sha256 else None},
        urls={key: location},
        retry_if_failed=RETRIES if is_http(location) else 0,
    )
    upstream = location.startswith((RAW_BASE, ARCHIVE_BASE))
    try:
        store.fetch(key, downloader=downloader)
    except requests.exceptions.HTTPError as exc:
        todo = "the pinned file is gone upstream: please report it" if upstream else "the mirror lacks it"
        raise HealthSLMError(f"{label}: HTTP {exc.response.status_code} for {location}; {todo}") from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        raise HealthSLMError(
            f"{label}: the download from {location} was cut off ({type(exc).__name__}) "
            f"{RETRIES + 1} times; nothing was written; run fetch again"
        ) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:  # ValueErrors too
        raise HealthSLMError(f"{label}: {location} is not a URL requests can fetch ({exc})") from None
    except requests.exceptions.RequestException as exc:
        raise HealthSLMError(
            f"{label}: cannot reach {urlparse(location).netloc} for {location} ({type(exc).__name__}); "
            f"set {MIRROR_ENV} to a mirror folder or URL if this machine is offline"
        ) from None
    except ValueError as exc:
        if "does not match the known hash" not in str(exc):  # pooch's only ValueError for a wrong file
            raise HealthSLMError(f"{label}: cannot fetch {location}: {exc}") from None
        todo = "upstream changed: please report it" if upstream else f"fix the mirror, or unset {MIRROR_ENV}"
        raise HealthSLMError(
            f"{label}: {location} does not match its pinned sha256 {sha256}; nothing was written ({todo})"
        ) from None


def _raw_source(item: SourceFile, mirror: str | None) -> str:
    if not mirror:
        return item.raw_location(RAW_BASE)
    if is_http(mirror):
        return item.raw_location(mirror)
    github, flat = Path(item.raw_location(mirror)), Path(mirror) / item.dataset / item.file
    return str(flat if flat.is_file() and not github.is_file() else github)


def _fetch_raw(item: SourceFile, dest_root: Path, mirror: str | None) -> bool:
    target = dest_root / item.dest
    if target.is_file() and sha256_of(target) == item.sha256:
        return False
    _download(_raw_source(item, mirror), target, item.sha256, item.dest)
    return True


def _convert(item: SourceFile, archive: Path, target: Path, source: str) -> None:
    try:
        content, records = CONVERTERS[item.convert](archive)
    except Exception as exc:  # a damaged or cut archive: zipfile.BadZipFile, XML ParseError, ...
        raise HealthSLMError(
            f"{item.dest}: cannot convert {source} ({type(exc).__name__}: {exc}); nothing was written"
        ) from None
    digest = hashlib.sha256(content).hexdigest()
    if (digest, records) != (item.sha256, item.records):
        raise HealthSLMError(
            f"{item.dest}: converting {source} gave {records} records with sha256 {digest}, pinned "
            f"{item.records} with sha256 {item.sha256}; nothing was written (a damaged archive)"
        )
    with atomic_path(target) as tmp:
        tmp.write_bytes(gzip.compress(content, mtime=0) if target.suffix == ".gz" else content)


def _fetch_converted(item: SourceFile, dest_root: Path, mirror: str | None) -> bool:
    target = dest_root / item.dest
    if target.is_file() and content_sha256(target) == item.sha256:
        return False
    flat = Path(mirror) / item.dataset / item.file if mirror and not is_http(mirror) else None
    if flat and flat.is_file() and not Path(item.archive_location(mirror)).is_file():
        with atomic_path(target) as tmp:  # an offline folder that holds the converted file itself
            shutil.copyfile(flat, tmp)
            if content_sha256(tmp, gzipped=target.suffix == ".gz") != item.sha256:
                raise HealthSLMError(
                    f"{item.dest}: {flat} does not match its pinned content sha256 {item.sha256}; "
                    "nothing was written"
                )
        return True
    source = item.archive_location(mirror or ARCHIVE_BASE)
    with tempfile.TemporaryDirectory(prefix="healthslm-archive-") as scratch:
        archive = Path(scratch) / f"{item.commit}.zip"
        _download(source, archive, None, item.dest)
        _convert(item, archive, target, source)
    return True


def fetch_file(item: SourceFile, dest_root: Path, mirror: str | None) -> bool:
    """Fetch one pinned file; return False when a verified copy was already there."""
    return (_fetch_converted if item.convert else _fetch_raw)(item, dest_root, mirror)


def _resolve(datasets: list[str] | None) -> dict[str, list[SourceFile]]:
    sources = load_sources()
    unknown = sorted(set(datasets or []) - set(sources))
    if unknown:
        raise HealthSLMError(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sources)}")
    return {name: sources[name] for name in datasets or sources}


def fetch(datasets: list[str] | None, dest_root: Path, mirror: str | None = None, echo=print) -> int:
    """Fetch the named datasets (all when None) into dest_root; return how many files were written."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    written = 0
    for items in _resolve(datasets).values():
        for item in items:
            if fetch_file(item, dest_root, mirror):
                written += 1
                size = (dest_root / item.dest).stat().st_size
                how = f", converted from {item.repo}'s archive" if item.convert else ""
                echo(f"fetched  {item.dest} ({size / 1e6:.1f} MB{how})")
            else:
                echo(f"verified {item.dest}")
    write_user_supplied_placeholders(dest_root)
    return written


def save_mirror(dest: Path, mirror: str | None = None, echo=print) -> int:
    """Download every pinned upstream object into `dest`, laid out as GitHub serves it: a mirror for
    machines that cannot reach GitHub. Return how many files were written."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    written = 0
    archives = set()
    for items in _resolve(None).values():
        for item in items:
            if item.convert:
                if (item.repo, item.commit) in archives:
                    continue
                archives.add((item.repo, item.commit))
                target = Path(item.archive_location(str(dest)))
                if target.is_file():
                    continue
                _download(item.archive_location(mirror or ARCHIVE_BASE), target, None, item.dest)
            else:
                target = Path(item.raw_location(str(dest)))
                if target.is_file() and sha256_of(target) == item.sha256:
                    continue
                _download(_raw_source(item, mirror), target, item.sha256, item.dest)
            written += 1
            echo(f"saved    {target.relative_to(dest)}")
    return written


def write_user_supplied_placeholders(dest_root: Path) -> None:
    """data/<name>/README.md for credentialed datasets, saying where the user's copy goes."""
    load_plugins([])
    for spec in DATASETS.values():
        if spec.user_supplied:
            readme = dest_root / spec.raw_dir / "README.md"
            readme.parent.mkdir(parents=True, exist_ok=True)
            text = (
                f"# {spec.name}: user-supplied ({spec.license})\n\n"
                f"Put {', '.join(spec.required_files)} here, then `dvc add data`. "
                f"Without them the pipeline skips {spec.name}. Schema: see docs/data.md.\n"
            )
            if not readme.exists() or readme.read_text() != text:
                readme.write_text(text)
