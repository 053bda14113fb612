"""Export structures to other formats: POSCAR, extended XYZ, ASE ``Atoms`` and CIF.

Used by :class:`crystalforge.generation.candidate.Candidate` and ``crystalforge export``.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import attrs

from ..errors import CIFError, OptionError

logger = logging.getLogger(__name__)

#: format name -> file suffix
FORMATS: dict[str, str] = {"poscar": ".vasp", "extxyz": ".extxyz", "cif": ".cif"}


def structure_from_cif(cif: str):
    """Return the pymatgen ``Structure`` of a CIF text.

    Raises:
        CIFError: the text cannot be read as a structure.
    """
    from ..cif.preprocess import parse_structure

    return parse_structure(cif)


def to_poscar(structure, comment: str | None = None) -> str:
    """Return the structure as VASP POSCAR text (direct coordinates)."""
    from pymatgen.io.vasp import Poscar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Poscar(structure, comment=comment or structure.composition.formula).get_str()


def to_ase(structure, info: dict[str, Any] | None = None):
    """Return the structure as an ``ase.Atoms`` (periodic cell), with ``info`` merged into ``atoms.info``."""
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    if info:
        atoms.info.update({k: v for k, v in info.items() if v is not None})
    return atoms


def to_extxyz(structure, info: dict[str, Any] | None = None) -> str:
    """Return the structure as extended XYZ text (lattice and ``info`` in the comment line)."""
    from ase.io import write

    buffer = io.StringIO()
    write(buffer, to_ase(structure, info), format="extxyz")
    return buffer.getvalue()


def to_cif(structure) -> str:
    """Return the structure as CIF text written by pymatgen (P1, all sites; site labels made
    unique, as CIF requires, on a copy)."""
    from pymatgen.io.cif import CifWriter

    labelled = structure.copy()
    labelled.relabel_sites(ignore_uniq=True)
    return str(CifWriter(labelled))


def convert(structure, fmt: str, info: dict[str, Any] | None = None) -> str:
    """Return the structure as text in format ``fmt`` (poscar, extxyz or cif).

    Raises:
        OptionError: unknown format.
    """
    if fmt == "poscar":
        return to_poscar(structure, comment=(info or {}).get("name"))
    if fmt == "extxyz":
        return to_extxyz(structure, info)
    if fmt == "cif":
        return to_cif(structure)
    raise OptionError(f"Unknown export format '{fmt}'. Available: {', '.join(FORMATS)}.")


@attrs.frozen
class ExportResult:
    """One exported input: its name, the written path (or None) and the error (or None)."""

    name: str
    path: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def export_cifs(
    sources: Iterable[str | os.PathLike], fmt: str, out_dir: str | os.PathLike
) -> Iterator[ExportResult]:
    """Convert every CIF of the sources (files, folders, tar archives, CSVs) to ``fmt`` in ``out_dir``.

    A CIF that cannot be read is yielded with its error and the rest go on. Files are
    written atomically as ``<name><suffix>``.

    Raises:
        OptionError: unknown format.
        DataError: a source does not exist or cannot be read at all.
    """
    from ..cif.io import atomic_write_text, iter_cifs

    if fmt not in FORMATS:
        raise OptionError(f"Unknown export format '{fmt}'. Available: {', '.join(FORMATS)}.")
    out = Path(out_dir)
    seen: set[str] = set()
    for source in sources:
        for name, text in iter_cifs(source):
            stem = _unique(_file_stem(name), seen)
            try:
                if not text:
                    raise CIFError("empty or unreadable file")
                structure = structure_from_cif(text)
                target = out / f"{stem}{FORMATS[fmt]}"
                atomic_write_text(target, convert(structure, fmt, {"name": stem}))
            except CIFError as exc:
                yield ExportResult(name, None, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a converter failing on odd input is that item's error
                yield ExportResult(name, None, f"{type(exc).__name__}: {exc}")
                continue
            yield ExportResult(name, str(target))


def _file_stem(name: str) -> str:
    stem = Path(name).name
    if stem.lower().endswith(".cif"):
        stem = stem[:-4]
    cleaned = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in stem).strip(".")
    return cleaned or "structure"


def _unique(stem: str, seen: set[str]) -> str:
    candidate, k = stem, 1
    while candidate in seen:
        candidate = f"{stem}_{k}"
        k += 1
    seen.add(candidate)
    return candidate
