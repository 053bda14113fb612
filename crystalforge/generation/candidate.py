"""One generated crystal structure and everything learned about it."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ..errors import CIFError, CrystalforgeError


@attrs.define(eq=False)
class Candidate:
    """A generated CIF with its validity report and score.

    Attributes:
        composition: the composition as asked (``"CaTiO3"``).
        formula: the formula of the prompt's ``data_`` line (``"Ca1Ti1O3"``).
        spacegroup: the space group asked for (normalized symbol), or None.
        index: the sample's index among the candidates of its prompt.
        raw: the generated text, prompt included, before post-processing.
        cif: the post-processed CIF (full symmetry operators, no props block), or None
            when post-processing failed (``postprocess_error`` says why).
        report: the validity report (None when validation was skipped).
        score: the scorer's value (nan: could not score; None: no scorer).
        n_tokens: tokens generated after the prompt.
        finished: whether the end-of-CIF marker was reached.
        file: where the CLI wrote the candidate, if it did.
        name: a stable name, ``<formula>_<spacegroup or any>_<index>`` by default (the
            CLI's file stem).
        extra: strategy-specific facts (MCTS: reward, simulation, ...).
        score_unit: the unit of :attr:`score` the scorer declared (``"eV/atom"``; ``""``
            unitless or no scorer).
        score_extras: further numbers the scorer gave (CHGNet relaxing:
            ``energy_unrelaxed``, ``energy_relaxed``).
        relaxed_cif: the structure the score belongs to when the scorer relaxed it (CIF
            text), else None.
        group: with ``unique``, the id of the group of equivalent structures (same
            composition, matched by pymatgen's ``StructureMatcher``); 1 is the group of
            the best-ranked candidate. None without ``unique``.
        stem: the file stem in a run folder: ``name``, except for de novo candidates, whose
            stem adds the formula and space group the model wrote.
    """

    composition: str
    formula: str
    spacegroup: str | None
    index: int
    raw: str
    cif: str | None = None
    postprocess_error: str | None = None
    report: Any = None
    score: float | None = None
    n_tokens: int = 0
    finished: bool = True
    file: str | None = None
    name: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict)
    score_unit: str = ""
    score_extras: dict[str, Any] = attrs.field(factory=dict)
    relaxed_cif: str | None = None
    group: int | None = None
    stem: str = ""
    _structure: Any = attrs.field(default=None, init=False, repr=False)
    _structure_error: str | None = attrs.field(default=None, init=False, repr=False)
    _parsed: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.name:
            from .prompts import candidate_stem

            self.name = candidate_stem(self.formula, self.spacegroup, self.index)
        if not self.stem:
            self.stem = self.name

    def __repr__(self) -> str:
        """``<Candidate CaTiO3 Pm-3m Z=1 valid score=-1.23 eV/atom>``: what was asked, how it went."""
        verdict = "unchecked" if self.report is None else ("valid" if self.is_valid else "invalid")
        parts = [self.composition, self.spacegroup or "any-sg"]
        if self.z is not None:
            parts.append(f"Z={self.z}")
        parts.append(verdict)
        if self.score is not None:
            unit = getattr(self, "score_unit", None)
            parts.append(f"score={self.score:.4g}" + (f" {unit}" if unit else ""))
        return f"<Candidate {' '.join(parts)}>"

    # -- derived facts ---------------------------------------------------------------------
    @property
    def z(self) -> int | None:
        """Formula units in the prompt's cell (its formula over the reduced one), or None."""
        from ..cif.extract import parse_composition

        try:
            _, factor = parse_composition(self.formula).get_reduced_composition_and_factor()
        except Exception:  # noqa: BLE001 - a formula read from a hand-written prompt may be odd
            return None
        return int(factor) if factor and float(factor).is_integer() else None

    @property
    def text(self) -> str:
        """The best text available: the post-processed CIF, else the raw generation."""
        return self.cif if self.cif is not None else self.raw

    @property
    def is_valid(self) -> bool:
        """True when validation ran and every required check passed."""
        return bool(self.report is not None and self.report.is_valid)

    @property
    def structure(self):
        """The pymatgen ``Structure`` of :attr:`cif`, or None (see :attr:`structure_error`)."""
        self._parse()
        return self._structure

    @property
    def structure_error(self) -> str | None:
        """Why :attr:`structure` is None, or None when it parsed."""
        self._parse()
        return self._structure_error

    def _parse(self) -> None:
        if self._parsed:
            return
        self._parsed = True
        if self.cif is None:
            self._structure_error = f"post-processing failed: {self.postprocess_error}"
            return
        from .export import structure_from_cif

        try:
            self._structure = structure_from_cif(self.cif)
        except CrystalforgeError as exc:
            self._structure_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - hostile generated text must not escape
            self._structure_error = f"{type(exc).__name__}: {exc}"[:300]

    @property
    def spacegroup_found(self) -> str | None:
        """The space group written in the generated CIF, or None when absent."""
        from ..cif.extract import extract_space_group

        try:
            return extract_space_group(self.text)
        except CrystalforgeError:
            return None

    @property
    def volume(self) -> float | None:
        """The ``_cell_volume`` written in the generated CIF, or None when absent."""
        from ..cif.extract import extract_volume

        try:
            value = extract_volume(self.text)
        except CrystalforgeError:
            return None
        return value if math.isfinite(value) else None

    # -- exporters -----------------------------------------------------------------------
    def _require_structure(self):
        structure = self.structure
        if structure is None:
            raise CIFError(f"candidate {self.name} has no readable structure: {self.structure_error}")
        return structure

    def info(self) -> dict[str, Any]:
        """Return the facts exported with the structure (extended XYZ comment, ASE ``info``)."""
        return {
            "name": self.name,
            "composition": self.composition,
            "spacegroup_asked": self.spacegroup,
            "is_valid": self.is_valid if self.report is not None else None,
            "score": None if self.score is None or math.isnan(self.score) else self.score,
            "score_unit": self.score_unit or None,
        }

    def to_poscar(self) -> str:
        """Return the structure as POSCAR text.

        Raises:
            CIFError: the candidate has no readable structure.
        """
        from .export import to_poscar

        return to_poscar(self._require_structure(), comment=self.name)

    def to_extxyz(self) -> str:
        """Return the structure as extended XYZ text (name, validity and score in the comment line).

        Raises:
            CIFError: the candidate has no readable structure.
        """
        from .export import to_extxyz

        return to_extxyz(self._require_structure(), self.info())

    def to_ase(self):
        """Return the structure as an ``ase.Atoms`` with :meth:`info` in ``atoms.info``.

        Raises:
            CIFError: the candidate has no readable structure.
        """
        from .export import to_ase

        return to_ase(self._require_structure(), self.info())

    def _repr_html_(self) -> str:
        """Return the 3D viewer and the checks as notebook HTML (offline; 3Dmol.js inlined once)."""
        from ..web.jobs import candidate_view
        from ..web.render import notebook_html

        return notebook_html(candidate_view(self))

    def to_row(self) -> dict[str, Any]:
        """Return the flat summary row (what ``summary.csv`` and ``--json`` show)."""
        row: dict[str, Any] = {
            "name": self.name,
            "composition": self.composition,
            "formula": self.formula,
            "index": self.index,
            "z": self.z,
            "spacegroup_asked": self.spacegroup or "",
            "spacegroup_found": self.spacegroup_found or "",
        }
        if self.report is not None:
            flat = self.report.to_dict()
            for name in self.report.checks:
                row[name] = flat[name]
            row["bond_length_score"] = self.report.bond_length_score
            row["is_valid"] = self.report.is_valid
            row["failed"] = ";".join(self.report.failed())
        else:
            row["is_valid"] = None
            row["failed"] = ""
        row.update(
            score=self.score,
            score_unit=self.score_unit,
            score_extras=dict(self.score_extras),
            volume=self.volume,
            n_tokens=self.n_tokens,
            finished=self.finished,
            error=self.postprocess_error or "",
            file=self.file or "",
        )
        if self.group is not None:
            row["group"] = self.group
        return row
