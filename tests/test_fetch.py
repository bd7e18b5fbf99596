"""The real download code against real HTTP servers on 127.0.0.1 that serve GitHub's URL paths (raw files
by repo/commit/path, the MedQuAD archive zip): every pin verified, MedQuAD converted, damage refused in one
line."""

import gzip
import http.server
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from healthslm.data.fetch import content_sha256, fetch, load_sources, sha256_of
from healthslm.errors import HealthSLMError

ARCHIVE = "abachaa/MedQuAD/archive/577bd37b96c02d1833b2c9eed2de9f96964e96cb.zip"
RAW = "pubmedqa/pubmedqa/{commit}/data/test_ground_truth.json"


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _cli(args: list[str], cwd: Path, mirror: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "HEALTHSLM_DATA_MIRROR": mirror}
    command = [sys.executable, "-m", "healthslm", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_fetch_every_dataset_from_a_github_layout_server(tmp_path, mirror_url):
    """A clone with no ../shared beside it: only the loopback stand-in for GitHub."""
    clone = tmp_path / "clone"
    clone.mkdir()
    result = _cli(["fetch"], clone, mirror_url)
    assert result.returncode == 0, result.stderr
    pins = [item for items in load_sources().values() for item in items]
    assert f"{len(pins)} file(s) written" in result.stdout
    for item in pins:
        target = clone / "data" / item.dest
        digest = content_sha256(target) if item.convert else sha256_of(target)
        assert digest == item.sha256, item.dest
    medquad = clone / "data" / "medquad" / "medquad_answered.jsonl.gz"
    assert "converted from abachaa/MedQuAD's archive" in result.stdout
    with gzip.open(medquad, "rt", encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == 16407
    again = _cli(["fetch"], clone, mirror_url)
    assert "0 file(s) written" in again.stdout
    assert "verified medquad/medquad_answered.jsonl.gz" in again.stdout


class _Damaging(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, but `cut` files stop half-way under a full Content-Length and `corrupt` files arrive
    with their middle byte flipped."""

    cut: tuple[str, ...] = ()
    corrupt: tuple[str, ...] = ()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        if name not in self.cut + self.corrupt:
            return super().do_GET()
        body = bytearray(Path(self.translate_path(self.path)).read_bytes())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        body[len(body) // 2] ^= 0xFF
        self.wfile.write(body)


@pytest.fixture
def damaging_server(github_layout, serve):
    def start(**damage) -> str:
        return serve(github_layout, type("Handler", (_Damaging,), {k: tuple(v) for k, v in damage.items()}))

    return start


@pytest.mark.parametrize(
    ("damage", "name", "dest", "message"),
    [
        ("corrupt", "raw", "pubmedqa/test_ground_truth.json", "does not match its pinned sha256"),
        ("cut", "raw", "pubmedqa/test_ground_truth.json", "was cut off"),
        ("corrupt", "archive", "medquad/medquad_answered.jsonl.gz", "cannot convert|gave .* records"),
        ("cut", "archive", "medquad/medquad_answered.jsonl.gz", "was cut off"),
    ],
)
def test_a_damaged_download_fails_in_one_line_and_leaves_nothing(
    tmp_path, damaging_server, damage, name, dest, message
):
    commit = next(i.commit for i in load_sources()["pubmedqa"])
    path = ARCHIVE if name == "archive" else RAW.format(commit=commit)
    dataset = dest.split("/")[0]
    result = _cli(["fetch", "--dataset", dataset], tmp_path, damaging_server(**{damage: [path]}))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {dest}: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    written = _files(tmp_path / "data") if (tmp_path / "data").exists() else []
    assert dest not in written
    assert not [f for f in written if "tmp" in Path(f).name], written  # no partial file left behind


def test_fetch_from_mirror_folders_in_either_layout(tmp_path, github_layout, raw_data):
    assert fetch(["pubmedqa"], tmp_path / "a", str(github_layout), echo=lambda _: None) == 3
    # A folder laid out as <dataset>/<file>, the converted file included (an offline copy of data/).
    assert fetch(["pubmedqa", "medquad"], tmp_path / "b", str(raw_data), echo=lambda _: None) == 6


def test_saved_mirror_serves_a_later_fetch(tmp_path, mirror_url):
    saved = tmp_path / "saved"
    result = _cli(["mirror", str(saved)], tmp_path, mirror_url)
    assert result.returncode == 0, result.stderr
    assert (saved / ARCHIVE).is_file()
    assert fetch(None, tmp_path / "data", str(saved), echo=lambda _: None) == sum(
        len(items) for items in load_sources().values()
    )


def test_a_verified_file_is_kept_and_a_damaged_one_replaced(tmp_path, mirror_url):
    assert fetch(["pubmedqa"], tmp_path, mirror_url, echo=lambda _: None) == 3
    (tmp_path / "pubmedqa" / "ori_pqal.json").write_text("{}")
    assert fetch(["pubmedqa"], tmp_path, mirror_url, echo=lambda _: None) == 1


def test_missing_file_is_a_clear_404(tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HealthSLMError, match=r"HTTP 404 for http://127\.0\.0\.1:\d+/pubmedqa/pubmedqa/"):
        fetch(["pubmedqa"], tmp_path / "data", serve(empty), echo=lambda _: None)
    assert _files(tmp_path / "data") == [] if (tmp_path / "data").exists() else True


def test_unreachable_host_is_a_clear_error(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HealthSLMError, match=rf"cannot reach 127\.0\.0\.1:{port} .*HEALTHSLM_DATA_MIRROR"):
        fetch(["pubmedqa"], tmp_path / "data", f"http://127.0.0.1:{port}", echo=lambda _: None)
    assert not (tmp_path / "data").exists() or _files(tmp_path / "data") == []


def test_a_malformed_mirror_url_is_named_not_called_a_hash_mismatch(tmp_path):
    """requests' InvalidURL is a ValueError, which pooch's hash mismatch also is: it was reported as a file
    that "does not match its pinned sha256"."""
    with pytest.raises(
        HealthSLMError, match=r"http://127\.0\.0\.1:99999/\S+ is not a URL requests can fetch"
    ):
        fetch(["pubmedqa"], tmp_path / "data", "http://127.0.0.1:99999", echo=lambda _: None)


def test_unknown_dataset_names_the_known_ones(tmp_path):
    with pytest.raises(HealthSLMError, match="unknown dataset.*nope.*known: pmdata"):
        fetch(["nope"], tmp_path, None)
