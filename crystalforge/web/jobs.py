"""The web app's one adapter to the generation kernel.

Every call the web package makes into ``crystalforge.generation`` (and into the
registries, validators and exporters) goes through this module, so a change of the
kernel's entry points is a change here only. A web run is an ordinary run folder, the
same as ``crystalforge run --out DIR`` writes, plus two sidecar files:

* ``web.json``: the run's status (queued, running, done, failed, cancelled), its request
  and timings;
* ``details.jsonl``: per candidate, every check's result and message, the density and the
  P1 sites the 3D viewer draws (computed once, also for folders written by the CLI).
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from ..errors import CrystalforgeError, OptionError

WEB_STATUS = "web.json"
DETAILS = "details.jsonl"
#: file suffix -> export format for the converted downloads of one candidate
CONVERTED = {".vasp": "poscar", ".extxyz": "extxyz"}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}$")


class JobCancelled(CrystalforgeError):
    """The job was cancelled between two chunks of generation."""


@attrs.frozen
class RunRequest:
    """What a user asks for: the same settings as ``crystalforge run``."""

    compositions: tuple[str, ...]
    spacegroup: str | None = None
    z: int | None = None
    n: int = 4
    search: str = "top-k"
    search_options: Mapping[str, Any] = attrs.field(factory=dict)
    scorer: str | None = None
    scorer_options: Mapping[str, Any] = attrs.field(factory=dict)
    seed: int = 0
    require: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        """Return the run-folder settings (the manifest's, as ``crystalforge run`` writes them)."""
        return {"seed": self.seed, "search": self.search, "search_options": dict(self.search_options),
                "model": "default", "scorer": self.scorer, "scorer_options": dict(self.scorer_options),
                "require": list(self.require)}


# -- checking a request (before it is queued) ---------------------------------------------
def check_request(request: RunRequest, plugin_manager, max_n: int, max_prompts: int = 8) -> list:
    """Return the prompt specs of ``request``; raise the CLI's one-line error for bad input.

    Raises:
        CompositionError, SpaceGroupError: a bad composition or space group.
        UnknownComponentError, OptionError: a bad strategy, scorer, option or check name, or n out of range.
    """
    from ..generation.components import make_strategy
    from ..generation.prompts import make_specs

    if not 1 <= request.n <= max_n:
        raise OptionError(f"n must be between 1 and {max_n}, got {request.n}")
    if len(request.compositions) > max_prompts:
        raise OptionError(f"at most {max_prompts} compositions per run, got {len(request.compositions)}")
    specs = make_specs(list(request.compositions), request.spacegroup or None, request.z)
    make_strategy(request.search, request.search_options, plugin_manager)
    if request.scorer:
        plugin_manager.registry("scorer").get(request.scorer).convert_options(request.scorer_options)
    elif request.scorer_options:
        raise OptionError("scorer options given without a scorer")
    validator_names = plugin_manager.registry("validator").names()
    for name in request.require:
        if name not in validator_names:
            plugin_manager.registry("validator").get(name)  # raises with the known names
    return specs


def components(plugin_manager) -> dict[str, Any]:
    """Return what the form offers: strategies, scorers and validators with their options, space groups."""
    from ..cif.extract import _space_group_tables

    out: dict[str, Any] = {}
    for kind in ("search", "scorer", "validator"):
        items = []
        for component in plugin_manager.registry(kind):
            try:
                item = component.to_dict()
            except CrystalforgeError as exc:  # a broken lazy plugin: shown, not offered
                item = {"kind": kind, "name": component.name, "plugin": component.plugin,
                        "description": str(exc), "options": [], "broken": True}
            if kind == "scorer":
                item["unit"] = score_unit(plugin_manager, component.name)
            if kind == "validator":
                item["required"] = bool(component.metadata.get("required", False))
            items.append(item)
        out[kind] = items
    symbols, _ = _space_group_tables()
    out["spacegroups"] = sorted(set(symbols.values()), key=lambda s: (len(s), s))
    return out


def _declared_unit(factory: Any) -> str | None:
    """Return the unit a scorer class declares: a plain class attribute, or the default of an
    attrs field named ``unit`` (on a slotted class the attribute itself is a slot descriptor)."""
    unit = getattr(factory, "unit", None)
    if isinstance(unit, str):
        return unit
    try:
        import attrs

        default = attrs.fields_dict(factory)["unit"].default
    except (TypeError, KeyError, attrs.exceptions.NotAnAttrsClassError):
        return None
    return default if isinstance(default, str) else None


def score_unit(plugin_manager, scorer: str | None) -> str | None:
    """Return the unit of a scorer's values: its ``unit`` metadata or attribute, else the unit in its description."""
    if not scorer:
        return None
    try:
        component = plugin_manager.registry("scorer").get(scorer)
    except CrystalforgeError:
        return None
    unit = component.metadata.get("unit") or None
    if unit is None and not isinstance(component._factory, str):
        unit = _declared_unit(component._factory) or None  # "" is the contract's "no unit"
    if unit is None:
        match = re.search(r"\(([^()]*/[^()]*)\)", component.summary())  # "(eV/atom)"
        unit = match.group(1) if match else "arbitrary units"
    return str(unit)


def lower_is_better(plugin_manager, scorer: str | None, options: Mapping[str, Any]) -> bool:
    """Return the ranking direction of a scorer without building it (an option wins over the class)."""
    if not scorer:
        return True
    if "lower_is_better" in options:
        try:
            return bool(plugin_manager.registry("scorer").get(scorer).option("lower_is_better").convert(
                options["lower_is_better"]))
        except CrystalforgeError:
            return True
    try:
        factory = plugin_manager.registry("scorer").get(scorer).factory
    except CrystalforgeError:
        return True
    value = getattr(factory, "lower_is_better", True)
    return value if isinstance(value, bool) else True


# -- running a job -------------------------------------------------------------------------
def run_job(
    *,
    model,
    plugin_manager,
    request: RunRequest,
    out_dir: Path,
    device: str,
    batch_size: int,
    on_chunk: Callable[[int, int], None],
    cancelled: threading.Event,
) -> int:
    """Generate ``request`` into ``out_dir`` (resuming what is there); return the candidates written.

    ``on_chunk(done, valid)`` is called after each chunk with the running totals. Between
    chunks, a set ``cancelled`` stops the run with :class:`JobCancelled` (what was written stays).

    Raises:
        JobCancelled: the job was cancelled.
        CrystalforgeError: bad settings or a failing scorer.
    """
    from ..generation.api import generate

    totals = {"done": 0, "valid": 0}
    details_path = out_dir / DETAILS

    def observe(chunk) -> None:
        # generate has written the chunk's files when it reports it
        lines = [json.dumps(_details_of_candidate(c)) for c in chunk]
        with open(details_path, "a") as handle:
            handle.write("".join(line + "\n" for line in lines))
        totals["done"] += len(chunk)
        totals["valid"] += sum(1 for c in chunk if c.is_valid)
        on_chunk(totals["done"], totals["valid"])
        if cancelled.is_set():
            raise JobCancelled("cancelled")

    out_dir.mkdir(parents=True, exist_ok=True)
    result = generate(list(request.compositions), spacegroup=request.spacegroup or None, z=request.z,
                      n=request.n, search=request.search, search_options=request.search_options,
                      scorer=request.scorer or None, scorer_options=request.scorer_options, seed=request.seed,
                      model=model, device=device, batch_size=batch_size, plugin_manager=plugin_manager,
                      require=request.require, out=out_dir, on_chunk=observe)
    return len(result.run.rows)


# -- reading run folders ---------------------------------------------------------------------
def is_run_folder(path: Path) -> bool:
    """Return whether ``path`` is a run folder (``crystalforge run`` output or a web run)."""
    from ..generation.runfolder import MANIFEST

    return path.is_dir() and ((path / MANIFEST).is_file() or (path / WEB_STATUS).is_file())


def valid_run_id(run_id: str) -> bool:
    """Return whether ``run_id`` can name a folder directly under the runs folder."""
    return bool(_RUN_ID.match(run_id)) and run_id not in (".", "..")


def read_status(out_dir: Path) -> dict[str, Any]:
    """Return the ``web.json`` of a run folder, or {} for a CLI run."""
    try:
        data = json.loads((out_dir / WEB_STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_status(out_dir: Path, status: Mapping[str, Any]) -> None:
    """Write ``web.json`` atomically."""
    from ..cif.io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / WEB_STATUS, json.dumps(dict(status), indent=2, default=str) + "\n")


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """Return the run folder's manifest (settings, n, prompts), or {} before generation started."""
    from ..generation.runfolder import MANIFEST

    try:
        data = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def count_candidates(out_dir: Path) -> tuple[int, int]:
    """Return ``(candidates written, valid ones)`` of a run folder (cheap: no details)."""
    from ..generation.runfolder import read_rows

    rows = read_rows(out_dir) if out_dir.is_dir() else {}
    valid = sum(1 for row in rows.values() if row.get("is_valid") in (True, "True", "true"))
    return len(rows), valid


def read_candidates(out_dir: Path, lower: bool = True) -> list[dict[str, Any]]:
    """Return the run's candidate rows ranked (valid first, then by score), each with its details.

    Details missing from ``details.jsonl`` (a CLI run, or a run cut short) are computed from
    the CIF file and appended, so the next read is cheap.
    """
    from ..generation.ranking import rank_key
    from ..generation.runfolder import read_rows

    rows = read_rows(out_dir)
    details = _read_details(out_dir)
    missing = [name for name in rows if name not in details]
    if missing:
        new = []
        for name in missing:
            text = (out_dir / rows[name]["file"]).read_text(errors="replace")
            item = details_of_cif(text, name)
            details[name] = item
            new.append(json.dumps(item))
        with open(out_dir / DETAILS, "a") as handle:
            handle.write("".join(line + "\n" for line in new))
    ranked = sorted(rows.values(), key=rank_key(lower))
    out = []
    for position, row in enumerate(ranked, 1):
        item = {k: _plain(v) for k, v in row.items() if k != "written_at"}
        item["rank"] = position
        item.update(details.get(row["name"], {}))
        out.append(item)
    return out


def _read_details(out_dir: Path) -> dict[str, dict[str, Any]]:
    details: dict[str, dict[str, Any]] = {}
    try:
        text = (out_dir / DETAILS).read_text(errors="replace")
    except OSError:
        return details
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "name" in item:
            details[item["name"]] = item
    return details


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _details_of_candidate(candidate) -> dict[str, Any]:
    return _details(candidate.name, candidate.report, candidate.structure, candidate.structure_error)


def details_of_cif(text: str, name: str) -> dict[str, Any]:
    """Return every check's result, density and viewer sites of one CIF text (never raises)."""
    from ..generation.candidate import Candidate
    from ..validation.report import validate

    candidate = Candidate(composition="", formula="", spacegroup=None, index=0, raw=text, cif=text, name=name)
    return _details(name, validate(text), candidate.structure, candidate.structure_error)


def _details(name: str, report, structure, structure_error: str | None) -> dict[str, Any]:
    checks = []
    if report is not None:
        for check_name, result in report.checks.items():
            checks.append({"name": check_name, "passed": result.passed, "required": result.required,
                           "score": _plain(result.score), "message": result.message})
    out: dict[str, Any] = {"name": name, "checks": checks, "density": None, "formula_found": None,
                           "structure": None, "structure_error": structure_error}
    if structure is not None:
        out["density"] = round(float(structure.density), 4)
        out["formula_found"] = structure.composition.reduced_formula
        out["structure"] = viewer_sites(structure)
    return out


def viewer_sites(structure) -> dict[str, Any]:
    """Return what the 3D viewer draws: lattice rows, every P1 site (element, fractional coordinates), bond cutoffs."""
    species = [getattr(site.specie, "symbol", str(site.specie)) for site in structure]
    return {
        "lattice": [[round(float(x), 5) for x in row] for row in structure.lattice.matrix],
        "species": species,
        "frac": [[round(float(x), 5) for x in site.frac_coords] for site in structure],
        "bond_cutoffs": bond_cutoffs(species),
    }


def bond_cutoffs(symbols: Sequence[str]) -> dict[str, dict[str, float]]:
    """Return, per pair of elements, the longest distance (A) drawn as a bond.

    After the bond-length check's rule: the expected length is the sum of atomic radii, or
    of average ionic radii when the electronegativity gap is ionic and that is longer; a
    bond is drawn up to the check's upper tolerance. With an anion (the most electronegative element,
    Pauling 2.5 or more) only cation-anion bonds are drawn, as coordination polyhedra are.
    """
    from ..cif.properties import element_properties
    from ..validation.checks import BondLengthReasonableness

    rule = BondLengthReasonableness()
    props: dict[str, tuple[float, float, float]] = {}
    for symbol in dict.fromkeys(symbols):
        try:
            props[symbol] = element_properties(symbol)
        except ValueError:
            continue
    anion = max(props, key=lambda s: props[s][0]) if len(props) > 1 else None
    if anion is not None and props[anion][0] < 2.5:
        anion = None
    cutoffs: dict[str, dict[str, float]] = {}
    names = sorted(props)
    for i, first in enumerate(names):
        for second in names[i:]:
            if anion is not None and (anion not in (first, second) or first == second):
                continue
            (x1, radius1, ionic1), (x2, radius2, ionic2) = props[first], props[second]
            expected = radius1 + radius2
            if abs(x1 - x2) >= rule.ionic_difference:  # average ionic radii can be small (Cl: -1, +5, +7)
                expected = max(expected, ionic1 + ionic2)
            if expected > 0:
                length = round(expected * (1 + rule.tolerance), 3)
                cutoffs.setdefault(first, {})[second] = length
                cutoffs.setdefault(second, {})[first] = length
    return cutoffs


# -- files --------------------------------------------------------------------------------------
def converted_file(out_dir: Path, name: str) -> tuple[str, str] | None:
    """Return ``(text, media type)`` of a POSCAR/extended-XYZ download of a candidate's CIF, or None.

    Raises:
        CIFError: the candidate's CIF cannot be read as a structure.
    """
    suffix = next((s for s in CONVERTED if name.endswith(s)), None)
    if suffix is None:
        return None
    cif_path = out_dir / (name[: -len(suffix)] + ".cif")
    if not cif_path.is_file():
        return None
    from ..generation.export import convert, structure_from_cif

    structure = structure_from_cif(cif_path.read_text(errors="replace"))
    return convert(structure, CONVERTED[suffix], {"name": cif_path.stem}), "text/plain; charset=utf-8"


def zip_run(out_dir: Path) -> bytes:
    """Return the run folder's regular files as a zip archive (in memory)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(out_dir.iterdir()):
            if path.is_file() and not path.is_symlink():
                archive.write(path, f"{out_dir.name}/{path.name}")
    return buffer.getvalue()


def view_items(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Return, per CIF file, what ``crystalforge view`` shows: checks, density, viewer sites.

    Raises:
        DataError: a file cannot be read.
    """
    from ..cif.io import read_text_file

    items = []
    for path in paths:
        text = read_text_file(path)
        item = details_of_cif(text, Path(path).name)
        item["source"] = str(path)
        items.append(item)
    return items


def candidate_view(candidate) -> dict[str, Any]:
    """Return what the notebook viewer shows for a :class:`Candidate` (its own report when it has one)."""
    if candidate.report is None and candidate.cif is not None:
        return details_of_cif(candidate.cif, candidate.name)
    return _details(candidate.name, candidate.report, candidate.structure, candidate.structure_error)


def now() -> float:
    return time.time()
