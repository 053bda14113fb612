"""The runnable examples in examples/ keep working: each runs as a real subprocess.

They run on a tiny random-weight model (the ``cf_tiny_model`` fixture) with few, short
samples, so they finish in seconds; a random model writes few readable structures, so the
analysis paths are also exercised on real Perov-5 / Carbon-24 structures.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CARBON_CSV, PEROV_CSV

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
FAST = ["-n", "2", "--max-new-tokens", "60"]


def run_example(script: str, *args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def run_main(name: str, *args: str, capsys) -> tuple[str, str]:
    """Run an example's ``main(argv)`` in this process (fast: imports are shared); return its output."""
    assert load_example(name).main(list(args)) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_candidates():
    """Return Candidates built from the real sample structures (what generation would give)."""
    import crystalforge as cf
    from crystalforge.cif.extract import extract_data_formula, extract_space_group
    from crystalforge.testing import sample_cifs

    pm = cf.make_plugin_manager()
    out = []
    for index, (name, canonical) in enumerate(sample_cifs()):
        cif = cf.postprocess_cif(canonical)
        formula = extract_data_formula(canonical)
        out.append(cf.Candidate(composition=formula, formula=formula, spacegroup=extract_space_group(canonical),
                                index=index, raw=canonical, cif=cif, report=cf.validate(cif, plugin_manager=pm),
                                name=name))
    return out


def test_every_example_is_documented():
    page = (REPO / "docs" / "guide" / "examples.md").read_text()
    scripts = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh") and not p.name.startswith("_"))
    assert scripts, "no examples found"
    for script in scripts:
        assert f"`{script}`" in page, f"docs/guide/examples.md does not describe {script}"


def test_compose_pipeline(cf_tiny_model, capsys):
    out, _ = run_main("compose_pipeline", "--model", str(cf_tiny_model), *FAST, capsys=capsys)
    assert "search: TopKSampling(" in out
    assert sum(line.startswith("[") for line in out.splitlines()) == 2  # one line per sample


def test_custom_validator(cf_tiny_model, capsys):
    out, _ = run_main("custom_validator", "--model", str(cf_tiny_model), *FAST, "--max-atoms", "10",
                      capsys=capsys)
    lines = out.splitlines()
    assert "registered validator 'max_atoms' from plugin 'my-checks'" in lines[0]
    # the real Cd1Cu1N3 perovskite (5 atoms) is valid, and the custom check passed
    assert any(line.startswith("perov5-18517-Cd1Cu1N3: max_atoms=pass; valid") for line in lines)
    # the 16-atom carbon fails the required custom check, which now decides validity
    assert any("C16: max_atoms=fail" in line and "max_atoms" in line.split(";")[1] for line in lines)
    assert sum(line.startswith("Ca2Ti2O6_any_") for line in lines) == 2


def test_perovskite_study(cf_tiny_model, tmp_path, capsys):
    out = tmp_path / "perov"
    stdout, _ = run_main("perovskite_study", "--model", str(cf_tiny_model), *FAST,
                         "--compositions", "CaTiO3", "SrTiO3", "--spacegroups", "Pm-3m", "P4mm",
                         "--out", str(out), capsys=capsys)
    rows = list(csv.DictReader((out / "perovskites.csv").open()))
    assert len(rows) == 2 * 2 * 2
    assert {(r["composition"], r["spacegroup_asked"]) for r in rows} == {
        ("CaTiO3", "Pm-3m"), ("CaTiO3", "P4mm"), ("SrTiO3", "Pm-3m"), ("SrTiO3", "P4mm")}
    assert (out / "perovskites.png").read_bytes().startswith(b"\x89PNG")
    assert "wrote" in stdout


def test_perovskite_analysis_on_real_structures(tmp_path):
    study = load_example("perovskite_study")
    rows = [study.analyse(c) for c in sample_candidates()]
    by_name = {r["name"]: r for r in rows}
    cdcun3 = by_name["perov5-18517-Cd1Cu1N3"]
    assert cdcun3["is_valid"] is True
    assert cdcun3["volume_per_formula_unit"] == pytest.approx(78.363, abs=1e-3)
    import crystalforge as cf

    if "tolerance_factor" in cf.make_plugin_manager().registry("validator"):
        viro3 = by_name["perov5-15400-V1Ir1O3"]
        assert 0.5 < viro3["tolerance_factor"] < 1.5
    path = tmp_path / "plot.png"
    study.plot(rows, sorted({r["composition"] for r in rows}), sorted({r["spacegroup_asked"] for r in rows}), path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_screening(cf_tiny_model, tmp_path, capsys):
    compositions = tmp_path / "compositions.txt"
    compositions.write_text("# composition [space group]\nCaTiO3 Pm-3m\n\nC4\n")
    out = tmp_path / "screen"
    stdout, _ = run_main("screening", "KNbO3", "--file", str(compositions), "--model", str(cf_tiny_model),
                         *FAST, "--out", str(out), capsys=capsys)
    assert "KNbO3        any      " in stdout
    assert "CaTiO3       Pm-3m    " in stdout
    assert "6 generated" in stdout
    header = (out / "shortlist.csv").read_text().splitlines()[0]
    assert header == "rank,name,composition,spacegroup,score,volume,file"


def test_export_generated(cf_tiny_model, tmp_path, capsys):
    stdout, _ = run_main("export_ase_vasp", "CaTiO3", "--model", str(cf_tiny_model), *FAST,
                         "--out", str(tmp_path / "vasp"), capsys=capsys)
    assert "2 generated" in stdout


def test_export_existing_cifs(tmp_path, capsys):
    import crystalforge as cf
    from crystalforge.testing import sample_cifs

    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for name, canonical in sample_cifs():
        (cifs / f"{name}.cif").write_text(cf.postprocess_cif(canonical))
    (cifs / "broken.cif").write_text("data_broken\n")
    out = tmp_path / "vasp"
    stdout, stderr = run_main("export_ase_vasp", "--cifs", str(cifs), "--out", str(out), capsys=capsys)
    assert "wrote 6 VASP input folders and structures.extxyz" in stdout
    assert "skipping broken: pymatgen cannot read the CIF" in stderr
    folder = out / "perov5-18517-Cd1Cu1N3"
    assert {p.name for p in folder.iterdir()} == {"POSCAR", "INCAR", "KPOINTS"}
    from ase.io import read

    atoms = read(out / "structures.extxyz", index=":")
    assert len(atoms) == 6
    by_name = {a.info["name"]: a for a in atoms}
    assert sorted(by_name["perov5-18517-Cd1Cu1N3"].get_chemical_symbols()) == ["Cd", "Cu", "N", "N", "N"]
    assert len(by_name["carbon24-C-148264-7891-51-C16"]) == 16


@pytest.mark.slow
@pytest.mark.parametrize("script,args", [
    ("compose_pipeline.py", ()),
    ("custom_validator.py", ()),
    ("perovskite_study.py", ("--compositions", "CaTiO3", "--spacegroups", "Pm-3m", "--out", "perov")),
    ("screening.py", ("CaTiO3", "--out", "screen")),
    ("export_ase_vasp.py", ("--out", "vasp")),
])
def test_example_runs_as_a_script(cf_tiny_model, tmp_path, script, args):
    # what a user does: run the file with the venv's python, from any folder
    result = run_example(script, "--model", str(cf_tiny_model), "-n", "1", "--max-new-tokens", "40", *args,
                         cwd=tmp_path)
    assert result.stdout.strip()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_quickstart(cf_tiny_model, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MODEL": str(cf_tiny_model), "N": "2",
           "MAX_NEW_TOKENS": "60", "OUT": str(tmp_path / "tour"),
           "CRYSTALFORGE": str(Path(sys.executable).parent / "crystalforge")}
    result = subprocess.run(["bash", str(EXAMPLES / "quickstart.sh")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / "tour" / "CaTiO3" / "summary.csv").exists()
    assert "== done" in result.stdout


def test_sample_cifs_are_current_preprocess_output():
    """crystalforge/assets/sample_cifs.json holds real rows of the benchmark CSVs, preprocessed now."""
    import crystalforge as cf
    from crystalforge.testing import sample_cifs

    csv.field_size_limit(2**31 - 1)
    items = sample_cifs()
    assert len(items) == 6
    sources = {"perov5": PEROV_CSV, "carbon24": CARBON_CSV}
    for name, cif in items:
        dataset, rest = name.split("-", 1)
        material_id = rest.rsplit("-", 1)[0]
        with Path(sources[dataset]).open(newline="") as handle:
            raw = next(r["cif"] for r in csv.DictReader(handle) if r["material_id"] == material_id)
        assert cf.preprocess_cif(raw) == cif, (
            f"{name} differs from preprocess_cif's output: regenerate crystalforge/assets/sample_cifs.json")
    assert json.loads((REPO / "crystalforge" / "assets" / "sample_cifs.json").read_text())[0].keys() == {"name", "cif"}
