"""The real download code against a real HTTP server on 127.0.0.1 serving the mirror."""

import shutil
import socket
import subprocess
import sys

import pytest

from healthslm.data.fetch import fetch, load_sources, sha256_of
from healthslm.errors import HealthSLMError


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_fetch_over_http_verifies_every_checksum(tmp_path, mirror_url):
    written = fetch(["pmdata"], tmp_path, mirror_url, echo=lambda _: None)
    pins = load_sources()["pmdata"]
    assert written == len(pins) == 24
    for pin in pins:
        assert sha256_of(tmp_path / "pmdata" / pin.file) == pin.sha256
    assert fetch(["pmdata"], tmp_path, mirror_url, echo=lambda _: None) == 0  # verified, not downloaded again


def test_fetch_from_a_mirror_folder(tmp_path, mirror):
    assert fetch(["pubmedqa"], tmp_path, str(mirror), echo=lambda _: None) == 3


def test_bad_checksum_leaves_no_file(tmp_path, mirror, serve):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(mirror / "pubmedqa", corrupt / "pubmedqa")
    (corrupt / "pubmedqa" / "test_ground_truth.json").write_text('{"tampered": true}')
    dest = tmp_path / "data"
    with pytest.raises(HealthSLMError, match="checksum mismatch for pubmedqa/test_ground_truth.json"):
        fetch(["pubmedqa"], dest, serve(corrupt), echo=lambda _: None)
    assert not (dest / "pubmedqa" / "test_ground_truth.json").exists()
    assert not [p for p in _files(dest) if p.endswith(".tmp")]


def test_missing_file_is_a_clear_404(tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HealthSLMError, match=r"HTTP 404 .* for http://127\.0\.0\.1:\d+/pubmedqa/"):
        fetch(["pubmedqa"], tmp_path / "data", serve(empty), echo=lambda _: None)
    assert _files(tmp_path / "data") == []


def test_unreachable_host_is_a_clear_error(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HealthSLMError, match=rf"cannot reach 127\.0\.0\.1:{port} .*HEALTHSLM_DATA_MIRROR"):
        fetch(["pubmedqa"], tmp_path / "data", f"http://127.0.0.1:{port}", echo=lambda _: None)
    assert _files(tmp_path / "data") == []


def test_unknown_dataset_names_the_known_ones(tmp_path):
    with pytest.raises(HealthSLMError, match="unknown dataset.*nope.*known: pmdata"):
        fetch(["nope"], tmp_path, None)


def test_cli_fetch_reads_the_mirror_from_the_environment(tmp_path, mirror_url):
    result = subprocess.run(
        [sys.executable, "-m", "healthslm", "fetch", "--dataset", "pubmedqa", "--dest", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HEALTHSLM_DATA_MIRROR": mirror_url},
    )
    assert result.returncode == 0, result.stderr
    assert "3 file(s) written" in result.stdout
