"""Reading and writing collections of CIFs: a file, a folder, a ``.tar.gz`` or a CSV.

Every reader yields ``(name, text)`` pairs in a stable order, so repeated runs give
identical output. Writers are atomic: a temp file in the same folder, then a rename.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import pickle
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from ..errors import CIFError, DataError

CIF_SUFFIXES = (".cif",)
#: how the atomic writer's temp files end (``.<name>.<pid>.<random>.crystalforge-tmp``), so
#: a folder left by a killed process can be cleaned without touching anything else
TEMP_SUFFIX = ".crystalforge-tmp"
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")

csv.field_size_limit(2**31 - 1)


def source_kind(path: str | os.PathLike) -> str:
    """Return ``"cif"``, ``"folder"``, ``"tar"``, ``"csv"`` or ``"pkl"`` for a CIF source.

    Raises:
        DataError: the path does not exist or is of no known kind.
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "folder"
    if not p.exists():
        raise DataError(f"No such file or folder: {p}")
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".pkl.gz", ".pkl")):
        return "pkl"
    return "cif"


def read_text_file(path: str | os.PathLike) -> str:
    """Return a CIF file's text.

    Raises:
        CIFError: the file is empty, binary, too large (over 4 bytes per allowed CIF
            character), or not UTF-8/latin-1 text.
    """
    from .safety import MAX_CIF_CHARS

    p = Path(path)
    try:
        size = p.stat().st_size
        if size > 4 * MAX_CIF_CHARS:  # utf-8: at most 4 bytes a character; not read at all
            raise CIFError(f"{p}: file is {size:,} bytes, more than a CIF may be ({MAX_CIF_CHARS:,} characters)")
        data = p.read_bytes()
    except OSError as exc:
        raise CIFError(f"{p}: cannot read file ({exc.strerror})") from None
    return decode_cif_bytes(data, str(p))


def decode_cif_bytes(data: bytes, name: str) -> str:
    """Return CIF bytes as text; empty or binary content is a :class:`CIFError`."""
    if not data.strip():
        raise CIFError(f"{name}: empty file")
    if b"\x00" in data[:4096]:
        raise CIFError(f"{name}: binary file, not a CIF")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def iter_cifs(path: str | os.PathLike, *, column: str = "cif", id_column: str | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(name, cif_text)`` from a CIF file, folder, tar archive, CSV or ``.pkl.gz``.

    Names are file stems (folders, archives), the id column or row number (CSV), or the
    stored ids (pickles). A member that is empty, binary or unreadable is yielded with an
    empty string, so a batch run records it as failed by name and goes on.

    Raises:
        DataError: the source is missing or malformed (e.g. a CSV without the column).
    """
    kind = source_kind(path)
    p = Path(path)
    if kind == "cif":
        yield p.stem, _safe_read(p)
    elif kind == "folder":
        for file in sorted(p.rglob("*")):
            if file.is_file() and file.suffix.lower() in CIF_SUFFIXES:
                yield str(file.relative_to(p).with_suffix("")), _safe_read(file)
    elif kind == "tar":
        yield from _iter_tar(p)
    elif kind == "csv":
        yield from _iter_csv(p, column, id_column)
    else:
        from ..data.pickles import read_cif_pickle

        yield from read_cif_pickle(p)


def _safe_read(path: Path) -> str:
    try:
        return read_text_file(path)
    except CIFError:
        return ""


def _iter_tar(path: Path) -> Iterator[tuple[str, str]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(CIF_SUFFIXES)),
                             key=lambda m: m.name)
            from .safety import MAX_CIF_CHARS

            for member in members:
                name = Path(member.name).with_suffix("").as_posix().lstrip("./")
                if member.size > 4 * MAX_CIF_CHARS:  # not read: a batch run lists it as failed
                    yield name, ""
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                try:
                    yield name, decode_cif_bytes(data, member.name)
                except CIFError:
                    yield name, ""
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable tar archive ({exc})") from None


def _iter_csv(path: Path, column: str, id_column: str | None) -> Iterator[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if column not in fields:
            raise DataError(f"{path}: no '{column}' column (columns: {', '.join(fields) or 'none'})")
        if id_column is None:
            id_column = "material_id" if "material_id" in fields else None
        elif id_column not in fields:
            raise DataError(f"{path}: no '{id_column}' column")
        width = 6
        for row_number, row in enumerate(reader):
            name = row[id_column] if id_column and row.get(id_column) else f"row{row_number:0{width}d}"
            yield _safe_name(name), row[column] or ""


def _safe_name(name: str) -> str:
    """Return ``name`` usable as a file stem (no separators or odd characters)."""
    cleaned = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in name.strip())
    return cleaned.strip(".") or "unnamed"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    with atomic_writer(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary handle whose content replaces ``path`` only when the block succeeds.

    The data goes to a temp file in the same folder (flushed and fsynced), which is then
    renamed over ``path``; on any error the temp file is removed and ``path`` is untouched.
    Streaming, so large files (checkpoints) need not fit in memory twice. A process killed
    mid-write (``kill -9``) leaves its temp file, named ``.<name>.<pid>.<random>``
    :data:`TEMP_SUFFIX`; :func:`remove_stale_temp_files` removes such leftovers.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
    try:
        # mkstemp creates 0600 files; give the result the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_stale_temp_files(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove the temp files :func:`atomic_writer` left in ``folder`` when its process died.

    A temp file names the process that writes it; files of this process or of a process
    still alive are being written and stay (the web server writes its status file beside
    a run that starts). Returns the paths removed; a missing folder is empty.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    found = root.rglob(f".*{TEMP_SUFFIX}") if recursive else root.glob(f".*{TEMP_SUFFIX}")
    removed = []
    for path in sorted(found):
        if _writer_alive(path):
            continue
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path)
        except OSError:  # vanished or not ours to remove: leave it
            continue
    return removed


def _writer_alive(temp: Path) -> bool:
    """Return whether the process named in an atomic-writer temp file's name is running."""
    parts = temp.name[: -len(TEMP_SUFFIX)].split(".")
    pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
    if pid is None:
        return False  # an older name without a pid: only a dead writer leaves it behind
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def output_kind(path: str | os.PathLike) -> str:
    """Return how a collection is written to ``path``: ``"tar"``, ``"csv"``, ``"cif"`` or ``"folder"``."""
    name = str(path).lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".cif"):
        return "cif"
    return "folder"


def write_cifs(path: str | os.PathLike, items: Iterable[tuple[str, str]]) -> int:
    """Write ``(name, text)`` pairs to a folder, ``.tar.gz``, CSV (``cif`` column) or one CIF.

    Archives and CSVs are written to a temp file and renamed, so a failed run leaves no
    half-written output. Tar members get a fixed mtime so re-runs are byte-identical.
    Returns the number written.
    """
    kind = output_kind(path)
    p = Path(path)
    count = 0
    if kind == "folder":
        p.mkdir(parents=True, exist_ok=True)
        for name, text in items:
            atomic_write_text(p / f"{name}.cif", text)
            count += 1
    elif kind == "cif":
        pairs = list(items)
        if len(pairs) != 1:
            raise DataError(f"{p}: a single .cif output needs exactly one input CIF, got {len(pairs)}")
        atomic_write_text(p, pairs[0][1])
        count = 1
    elif kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["material_id", "cif"])
        for name, text in items:
            writer.writerow([name, text])
            count += 1
        atomic_write_text(p, buffer.getvalue())
    else:
        buffer = io.BytesIO()
        # gzip header mtime fixed to 0 so identical input gives identical bytes
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w") as tar:
                for name, text in items:
                    data = text.encode("utf-8")
                    info = tarfile.TarInfo(name=f"{name}.cif")
                    info.size = len(data)
                    info.mtime = 0
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(data))
                    count += 1
        atomic_write_bytes(p, buffer.getvalue())
    return count


def dump_pickle(path: str | os.PathLike, obj: object) -> None:
    """Pickle ``obj`` to ``path`` atomically (protocol 4, deterministic for plain data)."""
    atomic_write_bytes(path, pickle.dumps(obj, protocol=4))
