#!/usr/bin/env python
"""Turn generated structures into ASE Atoms and VASP inputs (POSCAR, INCAR, KPOINTS).

Either generates candidates (valid ones only, unless --all) or converts the CIFs of an
existing folder, .tar.gz or CSV (--cifs, e.g. the output folder of `crystalforge run`).
Each structure gets a folder <name>/ with POSCAR, a starting INCAR for a relaxation and an
automatic KPOINTS, and all structures are collected in structures.extxyz (readable by
ase.io.read, with each structure's name, validity and score in atoms.info).

    python examples/export_ase_vasp.py CaTiO3 --spacegroup Pm-3m -n 8
    python examples/export_ase_vasp.py --cifs out/CaTiO3 --out out/vasp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import crystalforge as cf

INCAR = """\
SYSTEM = {name}
PREC = Accurate
ENCUT = 520
EDIFF = 1E-5
EDIFFG = -0.02
IBRION = 2
ISIF = 3
NSW = 100
ISMEAR = 0
SIGMA = 0.05
"""

KPOINTS = """\
Automatic mesh, density {density}
0
Auto
{density}
"""


def write_vasp_inputs(folder: Path, name: str, poscar: str, kpoint_density: int) -> None:
    """Write POSCAR, INCAR and KPOINTS for one structure into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "POSCAR").write_text(poscar)
    (folder / "INCAR").write_text(INCAR.format(name=name))
    (folder / "KPOINTS").write_text(KPOINTS.format(density=kpoint_density))


def from_generation(args) -> list[tuple[str, str, object]]:
    """Return ``(name, poscar, atoms)`` for generated candidates with a readable structure."""
    candidates = cf.generate(args.composition, spacegroup=args.spacegroup, n=args.n, model=args.model,
                             seed=args.seed, search_options={"max_new_tokens": args.max_new_tokens})
    chosen = [c for c in candidates if (args.all or c.is_valid) and c.structure is not None]
    print(f"{len(candidates)} generated, {sum(c.is_valid for c in candidates)} valid, exporting {len(chosen)}")
    # Candidate.to_poscar / to_ase carry the name, validity and score along
    return [(c.name, c.to_poscar(), c.to_ase()) for c in chosen]


def from_files(source: Path) -> list[tuple[str, str, object]]:
    """Return ``(name, poscar, atoms)`` for every readable CIF of a folder, archive or CSV."""
    from crystalforge.cif.io import iter_cifs
    from crystalforge.errors import CrystalforgeError
    from crystalforge.generation.export import structure_from_cif, to_ase, to_poscar

    out = []
    for name, text in iter_cifs(source):
        stem = Path(name).name.removesuffix(".cif")
        try:
            structure = structure_from_cif(text)
        except CrystalforgeError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        out.append((stem, to_poscar(structure, comment=stem), to_ase(structure, {"name": stem})))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("composition", nargs="?", default="CaTiO3")
    parser.add_argument("--spacegroup", default="Pm-3m")
    parser.add_argument("--cifs", type=Path, help="convert these CIFs instead of generating")
    parser.add_argument("--all", action="store_true", help="export invalid candidates too")
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("-n", type=int, default=8, help="candidates to generate")
    parser.add_argument("--max-new-tokens", type=int, default=1000, help="stop after this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kpoint-density", type=int, default=30, help="KPOINTS automatic length")
    parser.add_argument("--out", type=Path, default=Path("out/examples/vasp"))
    args = parser.parse_args(argv)

    structures = from_files(args.cifs) if args.cifs else from_generation(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, poscar, _ in structures:
        write_vasp_inputs(args.out / name, name, poscar, args.kpoint_density)
    if structures:
        from ase.io import write

        write(args.out / "structures.extxyz", [atoms for _, _, atoms in structures], format="extxyz")
    extxyz = " and structures.extxyz" if structures else ""
    print(f"wrote {len(structures)} VASP input folders{extxyz} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
