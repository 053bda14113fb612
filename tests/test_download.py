"""Artifact downloads against a real HTTP server on 127.0.0.1 (with Range support)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from crystalforge import download as dl
from crystalforge.cli import cli
from crystalforge.errors import DownloadError

PAYLOAD = bytes(range(256)) * 1200  # ~300 kB stand-in for a ckpt.pt


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; can cut one response short."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        server = self.server
        name = self.path.lstrip("/")
        range_header = self.headers.get("Range")
        server.requests.append((name, range_header))
        data = server.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_next:  # promise the whole body, send 40 % of it, hang up
            server.cut_next = False
            self.wfile.write(body[: len(body) * 2 // 5])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.requests, httpd.cut_next, httpd.ignore_range = {}, [], False, False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def make_tar(members: dict[str, bytes], links: dict[str, tuple[str, bytes]] | None = None) -> bytes:
    """A .tar.gz with regular files ``members`` and links ``{name: (linkname, type)}``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (target, kind) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def catalogue(tmp_path, monkeypatch, server):
    """Point the artifact catalogue at test files served by ``server`` (the mirror env var)."""
    archive = make_tar({"tiny_model/ckpt.pt": PAYLOAD, "tiny_model/README": b"tiny\n"})
    evil = make_tar({"ok.txt": b"fine", "../evil.txt": b"pwned"})
    server.files.update({"tiny_model.tar.gz": archive, "data.pkl.gz": PAYLOAD, "evil.tar.gz": evil})
    rows = [
        ("tiny_model.tar.gz", "Pre-trained Models", "300 kB", md5(archive)),
        ("data.pkl.gz", "Main Dataset", "300 kB", md5(PAYLOAD)),
        ("evil.tar.gz", "Main Dataset", "1 kB", md5(evil)),
        ("wrong_sum.pkl", "Main Dataset", "300 kB", "0" * 32),
    ]
    server.files["wrong_sum.pkl"] = PAYLOAD
    csv_path = tmp_path / "artifacts.csv"
    lines = ["name,section,size,md5,url"] + [f"{n},{s},{z},{m},https://example.invalid/{n}" for n, s, z, m in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(dl, "ARTIFACTS_CSV", csv_path)
    monkeypatch.setenv(dl.BASE_URL_ENV, server.url + "/")
    return {"archive": archive}


# -- catalogue ----------------------------------------------------------------------------------


def test_packaged_catalogue_lists_crystallm_artifacts():
    artifacts = {a.name: a for a in dl.list_artifacts()}
    small = artifacts["crystallm_v1_small.tar.gz"]
    assert small.md5 == "0221fbcd166bddb17f75be8a610892f3" and small.section == "Pre-trained Models"
    assert small.url.startswith("https://zenodo.org/") and small.is_archive
    assert not artifacts["cifs_v1_test.pkl.gz"].is_archive
    assert len(artifacts) > 80


def test_find_artifact_by_stem_and_close_names():
    assert dl.find_artifact("crystallm_v1_small").name == "crystallm_v1_small.tar.gz"
    with pytest.raises(DownloadError, match="Did you mean crystallm_v1_small.tar.gz"):
        dl.find_artifact("crystallm_v1_smal.tar.gz")
    with pytest.raises(DownloadError, match="Did you mean perov_5_test_orig.tar.gz, perov_5_test_orig.pkl.gz"):
        dl.find_artifact("perov_5_test_orig")  # stem shared by two files: ambiguous
    with pytest.raises(DownloadError, match="unknown artifact 'zzz'. \\('crystalforge download --list'"):
        dl.find_artifact("zzz")


def test_mirror_base_url(monkeypatch):
    artifact = dl.find_artifact("starts_v1_val.pkl")
    monkeypatch.delenv(dl.BASE_URL_ENV, raising=False)
    assert dl.artifact_url(artifact) == artifact.url
    monkeypatch.setenv(dl.BASE_URL_ENV, "http://mirror.local/files/")
    assert dl.artifact_url(artifact) == "http://mirror.local/files/starts_v1_val.pkl"


# -- downloading --------------------------------------------------------------------------------


def test_download_and_unpack_model_archive(tmp_path, server, catalogue):
    out = dl.download_artifact("tiny_model.tar.gz", tmp_path / "models", progress=False)
    assert out == tmp_path / "models" / "tiny_model"
    assert (out / "ckpt.pt").read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny_model"]  # archive removed
    assert server.requests == [("tiny_model.tar.gz", None)]


def test_interrupted_download_resumes_with_range(tmp_path, server, catalogue):
    archive = catalogue["archive"]
    server.cut_next = True
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        dl.download_artifact("tiny_model.tar.gz", tmp_path, keep_archive=True, progress=False)
    part = tmp_path / "tiny_model.tar.gz.part"
    have = part.stat().st_size
    assert 0 < have < len(archive)
    out = dl.download_artifact("tiny_model.tar.gz", tmp_path, keep_archive=True, progress=False)
    assert server.requests[-1] == ("tiny_model.tar.gz", f"bytes={have}-")
    assert (out / "ckpt.pt").read_bytes() == PAYLOAD
    assert (tmp_path / "tiny_model.tar.gz").read_bytes() == archive and not part.exists()
    # already there with the right checksum: nothing is fetched again
    count = len(server.requests)
    dl.download_artifact("tiny_model.tar.gz", tmp_path, keep_archive=True, progress=False)
    assert len(server.requests) == count


def test_server_ignoring_range_restarts_cleanly(tmp_path, server, catalogue):
    server.cut_next = True
    with pytest.raises(DownloadError):
        dl.download_artifact("data.pkl.gz", tmp_path, progress=False)
    server.ignore_range = True  # answers 200 with the whole file
    path = dl.download_artifact("data.pkl.gz", tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD  # not appended to the partial bytes


def test_complete_part_file_is_finished_after_416(tmp_path, server, catalogue):
    (tmp_path / "data.pkl.gz.part").write_bytes(PAYLOAD)
    path = dl.download_artifact("data.pkl.gz", tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and server.requests[-1][1] == f"bytes={len(PAYLOAD)}-"


def test_non_archives_are_not_unpacked(tmp_path, server, catalogue):
    path = dl.download_artifact("data.pkl.gz", tmp_path, progress=False)
    assert path == tmp_path / "data.pkl.gz" and path.read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_the_file(tmp_path, server, catalogue):
    with pytest.raises(DownloadError, match="checksum mismatch for wrong_sum.pkl: expected md5 0{32}"):
        dl.download_artifact("wrong_sum.pkl", tmp_path, progress=False)
    assert list(tmp_path.glob("wrong_sum*")) == []


def test_http_errors_and_unreachable_server(tmp_path, server, monkeypatch):
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.download_file(server.url + "/missing.bin", tmp_path / "missing.bin", progress=False)
    with pytest.raises(DownloadError, match="cannot reach"):
        dl.download_file("http://127.0.0.1:9/x", tmp_path / "x", progress=False, timeout=2)


def test_malicious_archive_is_refused(tmp_path, server, catalogue):
    target = tmp_path / "inside"
    with pytest.raises(DownloadError, match="member '../evil.txt' points outside"):
        dl.download_artifact("evil.tar.gz", target, progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (target / "ok.txt").exists()


@pytest.mark.parametrize(
    "members, links, message",
    [
        ({"/etc/crystalforge_evil": b"x"}, None, "absolute path"),
        ({"a/../../evil": b"x"}, None, "points outside"),
        ({}, {"link": ("../outside", tarfile.SYMTYPE)}, "link 'link' -> '../outside' points outside"),
        ({}, {"d/link": ("/etc/passwd", tarfile.SYMTYPE)}, "points outside"),
        ({}, {"hard": ("../../x", tarfile.LNKTYPE)}, "points outside"),
        ({}, {"dev": ("", tarfile.CHRTYPE)}, "device or special file"),
    ],
)
def test_safe_extract_refuses_unsafe_tar_members(tmp_path, members, links, message):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_tar(members, links))
    with pytest.raises(DownloadError, match=message):
        dl.safe_extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_safe_extract_allows_links_inside_and_zips(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(make_tar({"m/ckpt.pt": b"w"}, {"m/latest.pt": ("ckpt.pt", tarfile.SYMTYPE)}))
    dl.safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "m" / "latest.pt").read_bytes() == b"w"
    zipped = tmp_path / "set.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("challenge/a.cif", "data_x\n")
    assert dl.safe_extract(zipped, tmp_path / "z") == ["challenge/a.cif"]
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("../evil.cif", "data_x\n")
    with pytest.raises(DownloadError, match="points outside"):
        dl.safe_extract(zipped, tmp_path / "z2")
    assert not (tmp_path / "evil.cif").exists()


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DownloadError, match="cannot unpack bad.tar.gz"):
        dl.safe_extract(bad, tmp_path / "out")


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_list_text_and_json():
    runner = CliRunner()
    result = runner.invoke(cli, ["download", "--list"])
    assert result.exit_code == 0
    assert "Pre-trained Models:" in result.output and "crystallm_v1_small.tar.gz" in result.output
    result = runner.invoke(cli, ["download", "--list", "--json"])
    rows = json.loads(result.output)
    assert {"name", "section", "size", "md5", "url"} <= set(rows[0])


def test_cli_unknown_name_is_one_line():
    result = CliRunner().invoke(cli, ["download", "crystallm_v1_smal"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Did you mean crystallm_v1_small" in result.output


def test_cli_without_name_is_usage_error():
    result = CliRunner().invoke(cli, ["download"])
    assert result.exit_code == 2 and "--list" in result.output


def test_cli_downloads_into_dir(tmp_path, server, catalogue):
    result = CliRunner().invoke(cli, ["download", "tiny_model", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.output.strip().splitlines()[-1])["path"])
    assert (path / "ckpt.pt").read_bytes() == PAYLOAD
    result = CliRunner().invoke(cli, ["download", "wrong_sum.pkl", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "checksum mismatch" in result.output
