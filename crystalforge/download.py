"""Download CrystaLLM's published artifacts (models, datasets, prompts), resumably and safely.

Names, sizes, MD5 sums and URLs come from ``assets/crystallm_artifacts.csv``. A download
goes to ``<name>.part`` first and continues where it stopped when run again (HTTP Range);
the MD5 sum is checked before the file takes its final name, and archives (``.tar.gz``,
``.zip``) are unpacked only after every member was checked to stay inside the target folder.

Set ``CRYSTALFORGE_DOWNLOAD_BASE_URL`` to fetch the same file names from a mirror.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import http.client
import logging
import os
import posixpath
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from tqdm.auto import tqdm

from .errors import DownloadError

log = logging.getLogger(__name__)

ARTIFACTS_CSV = Path(__file__).resolve().parent / "assets" / "crystallm_artifacts.csv"
BASE_URL_ENV = "CRYSTALFORGE_DOWNLOAD_BASE_URL"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CHUNK_SIZE = 1 << 20
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Artifact:
    """One published file: its name, catalogue section, human-readable size, MD5 sum and URL."""

    name: str
    section: str
    size: str
    md5: str
    url: str

    @property
    def is_archive(self) -> bool:
        return self.name.endswith(ARCHIVE_SUFFIXES)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "section": self.section, "size": self.size, "md5": self.md5, "url": self.url}


def list_artifacts() -> list[Artifact]:
    """Return every known artifact, in catalogue order."""
    with open(ARTIFACTS_CSV, newline="", encoding="utf-8") as handle:
        return [
            Artifact(row["name"], row["section"], row["size"], row["md5"].lower(), row["url"])
            for row in csv.DictReader(handle)
        ]


def find_artifact(name: str) -> Artifact:
    """Return the artifact called ``name`` (the extension may be left out if that is unambiguous).

    Raises:
        DownloadError: no such artifact; the message suggests close names.
    """
    artifacts = list_artifacts()
    by_name = {a.name: a for a in artifacts}
    if name in by_name:
        return by_name[name]
    stem_matches = [a for a in artifacts if _stem(a.name) == name]
    if len(stem_matches) == 1:
        return stem_matches[0]
    close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6)
    if stem_matches:
        close = [a.name for a in stem_matches]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise DownloadError(f"unknown artifact {name!r}.{hint} ('crystalforge download --list' shows all)")


def artifact_url(artifact: Artifact, base_url: str | None = None) -> str:
    """Return the URL to fetch ``artifact`` from.

    That is ``base_url`` (or ``$CRYSTALFORGE_DOWNLOAD_BASE_URL``) joined with the file name
    when set, else the artifact's published URL.
    """
    base = base_url or os.environ.get(BASE_URL_ENV)
    if base:
        return f"{base.rstrip('/')}/{artifact.name}"
    return artifact.url


def md5sum(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Return the hex MD5 digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    *,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``dest.part``, and verify ``md5``.

    Returns:
        ``dest``.

    Raises:
        DownloadError: the server refused or the connection broke (the ``.part`` file is kept
            so the next call resumes), or the MD5 sum does not match (the bad file is removed).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "crystalforge"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is complete
            return _finish(part, dest, md5)
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}") from exc

    with response:
        if have and response.status == 206:
            log.info("resuming %s at byte %d", dest.name, have)
            mode = "ab"
        else:
            have, mode = 0, "wb"  # server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        bar = tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=dest.name, disable=not progress, leave=False,
        )
        received = have
        try:
            with open(part, mode) as handle, bar:
                while True:
                    block = response.read(CHUNK_SIZE)
                    if not block:
                        break
                    handle.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (http.client.HTTPException, socket.timeout, OSError) as exc:
            raise DownloadError(
                f"download of {dest.name} interrupted after {received} bytes ({type(exc).__name__}); "
                "run the same command again to resume"
            ) from exc
    if total is not None and received < total:
        raise DownloadError(
            f"download of {dest.name} stopped at {received} of {total} bytes; run the same command again to resume"
        )
    return _finish(part, dest, md5)


def _finish(part: Path, dest: Path, md5: str | None) -> Path:
    if md5:
        actual = md5sum(part)
        if actual != md5.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {dest.name}: expected md5 {md5.lower()}, got {actual}; "
                "the file was removed, run the command again"
            )
    os.replace(part, dest)
    return dest


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Unpack a ``.tar[.gz]`` or ``.zip`` archive into ``target`` after checking every member.

    Members with absolute paths, ``..`` components, links that point outside ``target``,
    link chains (a member stored under a link, a link to a link, a hard link to a link) or
    device files are refused before anything is written. These checks are the project's
    own, so they hold on every supported Python: the standard library's ``data`` filter,
    used as well where it exists, is missing from Python 3.10.0-3.10.11 and 3.11.0-3.11.3.

    Returns:
        the member names, in archive order.

    Raises:
        DownloadError: the archive is unreadable or holds an unsafe member.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                for name in names:
                    _check_member_path(name, archive)
                zf.extractall(target)
                return names
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for member in members:
                _check_tar_member(member, archive)
            _check_link_chains(members, archive)
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(target, members=members, **kwargs)
            return [m.name for m in members]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DownloadError(f"cannot unpack {archive.name}: {exc}") from exc


def _check_member_path(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DownloadError(f"refusing to unpack {archive.name}: member {name!r} has an absolute path")
    if ".." in path.parts:
        raise DownloadError(f"refusing to unpack {archive.name}: member {name!r} points outside the target folder")
    return path


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = _check_member_path(member.name, archive)
    if member.issym() or member.islnk():
        link = member.linkname.replace("\\", "/")
        # symlinks resolve from the member's folder, hard links from the archive root
        base = str(path.parent) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
            raise DownloadError(
                f"refusing to unpack {archive.name}: link {member.name!r} -> {member.linkname!r} "
                "points outside the target folder"
            )
    elif not (member.isfile() or member.isdir()):
        raise DownloadError(f"refusing to unpack {archive.name}: member {member.name!r} is a device or special file")


def _check_link_chains(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Refuse members that only stay inside the target when links are ignored.

    ``a -> .``, ``a/b -> ..``, ``b/x`` passes a member-by-member check (``a/b`` normalizes
    to ``b``, inside), yet on disk ``a/b`` is ``target/b`` pointing at the target's parent,
    and ``b/x`` lands outside. So, whatever the member order: no member may lie under a
    link, and no link (soft or hard) may point at or through another link.
    """
    links = {posixpath.normpath(m.name.replace("\\", "/")) for m in members if m.issym() or m.islnk()}
    if not links:
        return

    def through_link(path: str) -> str | None:
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            prefix = "/".join(parts[:end])
            if prefix in links:
                return prefix
        return None

    for member in members:
        name = posixpath.normpath(member.name.replace("\\", "/"))
        parent = posixpath.dirname(name)
        via = through_link(parent) if parent else None
        if via is not None:
            raise DownloadError(f"refusing to unpack {archive.name}: member {member.name!r} lies under the link "
                                f"{via!r} (link chains are not unpacked)")
        if member.issym() or member.islnk():
            base = parent if member.issym() else ""
            target = posixpath.normpath(posixpath.join(base, member.linkname.replace("\\", "/")))
            via = through_link(target) if target != "." else None
            if via is not None:
                raise DownloadError(f"refusing to unpack {archive.name}: link {member.name!r} -> "
                                    f"{member.linkname!r} goes through the link {via!r} (link chains are not unpacked)")


def _stem(name: str) -> str:
    for suffix in (".tar.gz", ".pkl.gz", ".tgz", ".zip", ".pkl", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _top_folder(names: Iterable[str]) -> str | None:
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    return tops.pop() if len(tops) == 1 else None


def download_artifact(
    name: str,
    directory: str | os.PathLike = ".",
    *,
    base_url: str | None = None,
    extract: bool = True,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download the published artifact ``name`` into ``directory``, verify it, and unpack archives.

    A file already present with the right MD5 sum is not fetched again.

    Returns:
        the unpacked folder (the archive's single top folder, else ``directory``) for
        archives when ``extract`` is true, otherwise the downloaded file.

    Raises:
        DownloadError: unknown name, network failure, checksum mismatch or unsafe archive.
    """
    artifact = find_artifact(name)
    directory = Path(directory).expanduser()
    dest = directory / artifact.name
    if dest.exists() and md5sum(dest) == artifact.md5:
        log.info("%s already downloaded", dest)
    else:
        url = artifact_url(artifact, base_url)
        log.info("downloading %s (%s) from %s", artifact.name, artifact.size, url)
        download_file(url, dest, artifact.md5, progress=progress)
    if not (extract and artifact.is_archive):
        return dest
    names = safe_extract(dest, directory)
    if not keep_archive:
        dest.unlink()
    top = _top_folder(names)
    return directory / top if top and (directory / top).is_dir() else directory


__all__ = [
    "Artifact",
    "artifact_url",
    "download_artifact",
    "download_file",
    "find_artifact",
    "list_artifacts",
    "md5sum",
    "safe_extract",
]
