"""Archive extraction refuses link chains by its own checks, with or without the standard
library's ``data`` filter (absent from Python 3.10.0-3.10.11 and 3.11.0-3.11.3)."""

from __future__ import annotations

import io
import tarfile

import pytest

from crystalforge import download as dl
from crystalforge.errors import DownloadError


def _tar(entries) -> bytes:
    """A .tar.gz of ``(name, kind, linkname_or_data)`` entries, in this order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                info.type = kind
                info.linkname = payload
                tf.addfile(info)
    return buffer.getvalue()


SYM, HARD, FILE = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.REGTYPE
CHAINS = {
    # a -> ., a/b -> .. (normalizes to "b", inside), then b/x lands in the target's parent
    "dot chain": ([("a", SYM, "."), ("a/b", SYM, ".."), ("b/x", FILE, b"pwned")], "lies under the link 'a'"),
    "file under a link": ([("d", SYM, "sub"), ("sub/keep", FILE, b"k"), ("d/x", FILE, b"x")], "lies under the link"),
    "link to a link": ([("f", FILE, b"x"), ("l1", SYM, "f"), ("l2", SYM, "l1")], "goes through the link 'l1'"),
    "hard link to a link": ([("f", FILE, b"x"), ("l1", SYM, "f"), ("h", HARD, "l1")], "goes through the link"),
    "link order reversed": ([("b/x", FILE, b"pwned"), ("a/b", SYM, ".."), ("a", SYM, ".")], "lies under the link"),
}


@pytest.mark.parametrize("with_stdlib_filter", [True, False], ids=["data-filter", "no-data-filter"])
@pytest.mark.parametrize("label", list(CHAINS))
def test_link_chains_are_refused_before_anything_is_written(tmp_path, monkeypatch, label, with_stdlib_filter):
    if not with_stdlib_filter:  # as on Python 3.10.0-3.10.11 / 3.11.0-3.11.3
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    entries, message = CHAINS[label]
    archive = tmp_path / "chain.tar.gz"
    archive.write_bytes(_tar(entries))
    target = tmp_path / "deep" / "out"
    with pytest.raises(DownloadError, match=message):
        dl.safe_extract(archive, target)
    assert list(target.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]


def test_plain_links_inside_still_unpack_without_the_filter(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(_tar([("m/ckpt.pt", FILE, b"w"), ("m/latest.pt", SYM, "ckpt.pt"), ("m/hard.pt", HARD, "m/ckpt.pt")]))
    dl.safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "m" / "latest.pt").read_bytes() == b"w"
    assert (tmp_path / "out" / "m" / "hard.pt").read_bytes() == b"w"
