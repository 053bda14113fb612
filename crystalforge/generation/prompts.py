"""Prompt specs: what to generate from, checked before any work.

A :class:`PromptSpec` pairs what was asked (composition, space group, Z) with the exact
prompt text and the key that names its candidates' files. Specs come from compositions
(:func:`make_specs`) or from a prompts file, folder or tar archive (:func:`read_prompts`).
"""

from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path
from typing import Sequence

import attrs

from ..errors import CompositionError, CrystalforgeError, DataError, SpaceGroupError

logger = logging.getLogger(__name__)


@attrs.frozen
class PromptSpec:
    """One prompt to generate from: what was asked and the exact prompt text.

    ``key`` names the prompt's candidates (``<key>_<index>``): ``<formula>_<spacegroup or any>``
    for compositions, the file stem for prompt files.
    """

    composition: str
    formula: str
    spacegroup: str | None
    prompt: str
    key: str
    z: int | None = None
    #: ``(position, of)`` when the composition's candidates are shared among several specs
    #: (one per feasible Z, see :func:`make_specs`); None: this spec gets all ``n``
    share: tuple[int, int] | None = None
    #: what the prompt asks for: ``composition``, or de novo (:func:`make_denovo_spec`):
    #: ``unconditional`` or ``system`` (the model writes the formula)
    target: str = "composition"


def spec_count(spec: PromptSpec, n: int) -> int:
    """Return how many of a composition's ``n`` candidates ``spec`` gets (its share, or all)."""
    if spec.share is None:
        return n
    position, of = spec.share
    return n // of + (1 if position < n % of else 0)


def safe_name(text: str) -> str:
    """Return ``text`` usable as a file or folder name (other characters become ``_``)."""
    cleaned = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in text.strip())
    return cleaned.strip(".") or "prompt"


def candidate_stem(formula: str, spacegroup: str | None, index: int) -> str:
    """Return the deterministic name of a candidate: ``<formula>_<spacegroup or any>_<index>``."""
    return f"{spec_key(formula, spacegroup)}_{index}"


def spec_key(formula: str, spacegroup: str | None) -> str:
    """Return ``<formula>_<spacegroup or any>`` usable as a file stem (``/`` becomes ``_``)."""
    return safe_name(f"{formula}_{spacegroup.replace('/', '_') if spacegroup else 'any'}")


def make_spec(composition: str, spacegroup: str | int | None = None, z: int | None = None) -> PromptSpec:
    """Return the prompt spec of a composition (reduced or cell formula) and optional space group.

    Raises:
        CompositionError: malformed formula, unknown element or bad ``z``.
        SpaceGroupError: unknown space group.
    """
    from ..cif.extract import normalize_space_group
    from ..cif.prompt import make_prompt, prompt_formula

    symbol = normalize_space_group(spacegroup) if spacegroup not in (None, "") else None
    _check_elements(composition)
    formula = prompt_formula(composition, z)
    if symbol is not None:
        _check_fits(formula, symbol)
    prompt = make_prompt(composition, symbol, z)
    return PromptSpec(composition=composition, formula=formula, spacegroup=symbol, prompt=prompt,
                      key=spec_key(formula, symbol), z=z)


#: the prompt of de novo generation: the model writes the formula, then the rest
DENOVO_PROMPT = "data_"


def make_denovo_spec(system: str | None = None) -> PromptSpec:
    """Return the spec of de novo generation: the prompt ``data_`` alone, so the model picks
    the composition; with ``system`` (``"Li-Fe-P-O"``) its elements are the only ones the
    logits masks let it write (see :func:`crystalforge.cif.composition.parse_system`).

    Raises:
        CompositionError: ``system`` is not a chemical system the tokenizer can write.
    """
    if system is None:
        return PromptSpec(composition="unconditional", formula="", spacegroup=None, prompt=DENOVO_PROMPT,
                          key="unconditional", target="unconditional")
    from ..cif.composition import parse_system

    name = "-".join(parse_system(system))
    return PromptSpec(composition=name, formula="", spacegroup=None, prompt=DENOVO_PROMPT, key=safe_name(name),
                      target="system")


def denovo_naming(name: str, text: str) -> tuple[str, str]:
    """Return ``(formula, stem)`` of a de novo candidate: the formula its ``data_`` line
    wrote (``""`` when none) and its file stem, the stable ``name`` then that formula and
    the space group written, ``unconditional_7_Li4Fe4P4O16_Pnma`` (``..._unparsed`` when
    the text names no formula)."""
    from ..cif.extract import extract_data_formula, extract_space_group

    try:
        formula = extract_data_formula(text)
    except CrystalforgeError:
        return "", safe_name(f"{name}_unparsed")
    try:
        spacegroup = extract_space_group(text)
    except CrystalforgeError:
        spacegroup = None
    return formula, safe_name(f"{name}_{spec_key(formula, spacegroup)}")


def _check_fits(formula: str, symbol: str) -> None:
    """Raise SpaceGroupError when the cell ``formula`` cannot have the space group's sites."""
    from ..cif.wyckoff import infeasibility_reason

    reason = infeasibility_reason(formula, symbol)
    if reason is not None:
        raise SpaceGroupError(reason)


def _check_elements(composition: str) -> None:
    """Raise CompositionError for symbols pymatgen reads as dummy species (``Xx``, ``Qq``),
    elements the tokenizer cannot write, exponents, zero or fractional counts and oversized
    cells (one gate: check_composition)."""
    from pymatgen.core import Element

    from ..cif.composition import check_composition
    from ..cif.tokenizer import default_tokenizer

    vocabulary = default_tokenizer().stoi
    for element in check_composition(composition).elements:
        symbol = getattr(element, "symbol", str(element))
        if not isinstance(element, Element):
            raise CompositionError(f"composition {composition!r} names an unknown element {symbol!r}")
        if symbol not in vocabulary:
            raise CompositionError(f"composition {composition!r}: the tokenizer has no token for {symbol} "
                                   "(CrystaLLM's vocabulary holds 89 elements), so no model can write it")


def make_specs(
    compositions: str | Sequence[str], spacegroup: str | int | None = None, z: int | None = None
) -> list[PromptSpec]:
    """Return one spec per composition (all checked before any work), duplicates dropped.

    Raises:
        CompositionError, SpaceGroupError: on the first bad input.
    """
    if isinstance(compositions, str):
        compositions = [compositions]
    if not compositions:
        raise CompositionError("no composition given: name at least one, e.g. CaTiO3")
    specs: list[PromptSpec] = []
    for composition in compositions:
        specs.extend(_specs_of(composition, spacegroup, z))
    return dedupe_specs(specs)


def _specs_of(composition: str, spacegroup: str | int | None, z: int | None) -> list[PromptSpec]:
    """Return the spec of one composition; without ``z``, a formula that cannot have the space
    group is tried at the Z values that can (CrystaLLM's 1, 2, 3, 4, 6, 8 that fit), sharing
    the candidates."""
    try:
        return [make_spec(composition, spacegroup, z)]
    except SpaceGroupError as exc:
        if z is not None or spacegroup in (None, "") or " cannot hold " not in str(exc):
            raise
        from ..cif.composition import check_composition
        from ..model.datacard import z_candidates

        reduced = check_composition(composition).reduced_composition
        values = z_candidates({str(el): amount for el, amount in reduced.items()}, spacegroup)
        if not values:
            raise
        logger.warning("%s; without --z, the candidates are shared among Z = %s", exc, ", ".join(map(str, values)))
        specs = [make_spec(composition, spacegroup, value) for value in values]
        return [attrs.evolve(spec, share=(position, len(specs))) for position, spec in enumerate(specs)]


def dedupe_specs(specs: Sequence[PromptSpec]) -> list[PromptSpec]:
    """Return ``specs`` without repeated keys (a repeat would name the same files)."""
    seen: dict[str, PromptSpec] = {}
    for spec in specs:
        if spec.key in seen:
            logger.warning("prompt %s given twice; generating it once", spec.key)
            continue
        seen[spec.key] = spec
    return list(seen.values())


def spec_from_prompt_text(text: str, name: str) -> PromptSpec:
    """Return the spec of a ready-made prompt text (a ``data_`` line, maybe more).

    Raises:
        CompositionError: the text has no ``data_`` line with a readable formula.
    """
    lines = [line.strip() for line in text.splitlines()]
    first = next((line for line in lines if line), "")
    if not first.startswith("data_"):
        raise CompositionError(f"prompt {name}: does not start with a data_ line")
    formula = first[len("data_"):].strip()
    _check_elements(formula)
    spacegroup = None
    for line in lines:
        if line.startswith("_symmetry_space_group_name_H-M"):
            spacegroup = line.split(None, 1)[1].strip().strip("'\"") if len(line.split()) > 1 else None
    prompt = "\n".join(line for line in lines if line) + "\n"
    return PromptSpec(composition=formula, formula=formula, spacegroup=spacegroup, prompt=prompt,
                      key=safe_name(Path(name).name.split(".")[0] or formula))


def _spec_of_prompt_file(path: Path, text: str) -> PromptSpec:
    """Return the spec of a file holding one ready-made prompt (what ``crystalforge prompt -o``
    writes), its candidates named like those of the composition it was made from."""
    spec = spec_from_prompt_text(text, path.name)
    if spec.spacegroup is not None:
        from ..cif.extract import normalize_space_group

        try:
            normalize_space_group(spec.spacegroup)
        except CrystalforgeError as exc:
            raise SpaceGroupError(f"{path.name}: {exc}") from None
    return attrs.evolve(spec, key=spec_key(spec.formula, spec.spacegroup))


def read_prompts(path: str | os.PathLike, spacegroup: str | None = None, z: int | None = None) -> list[PromptSpec]:
    """Return the prompt specs of a prompts file, folder or tar archive.

    A text file holds one ``COMPOSITION [SPACEGROUP]`` per line (blank lines and ``#``
    comments skipped; ``spacegroup`` is the default for lines without one), or is one
    ready-made prompt (it starts with a ``data_`` line, as ``crystalforge prompt -o`` writes). A folder or
    tar archive holds one ready-made prompt text per file, named after the file.

    Raises:
        DataError: the path does not exist or cannot be read.
        CompositionError, SpaceGroupError: a bad line, naming its line number.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        return dedupe_specs([spec_from_prompt_text(f.read_text(errors="replace"), f.name) for f in files])
    if not p.exists():
        raise DataError(f"No such prompts file or folder: {p}")
    if p.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(p, "r:*") as tar:
                members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
                texts = [(m.name, tar.extractfile(m).read().decode("utf-8", "replace")) for m in members]  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{p}: not a readable tar archive ({exc})") from None
        return dedupe_specs([spec_from_prompt_text(text, name) for name, text in texts])
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read prompts file ({exc})") from None
    if next((line.strip() for line in lines if line.strip()), "").startswith("data_"):
        return [_spec_of_prompt_file(p, "\n".join(lines))]
    specs = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise CompositionError(f"{p.name} line {number}: expected 'COMPOSITION [SPACEGROUP]', got {line.strip()!r}")
        try:
            specs.extend(_specs_of(fields[0], fields[1] if len(fields) == 2 else spacegroup, z))
        except CrystalforgeError as exc:
            raise type(exc)(f"{p.name} line {number}: {exc}") from None
    if not specs:
        raise DataError(f"{p}: no prompts in the file")
    return dedupe_specs(specs)
