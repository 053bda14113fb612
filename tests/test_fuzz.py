"""Fuzz suite: seeded mutants of real CIFs through tokenize, preprocess, postprocess,
validate and the ``preprocess``/``validate``/``evaluate`` CLIs, each in a watched child
process, so a crash or a hang is seen: no escaped exception (CrystalforgeError only), no
dead process, no call over a few seconds, no impossible cell called valid.
``bench/fuzz.py`` runs the same harness at scale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import fuzzing
from conftest import REPO

#: no single library call may take longer (seconds); the harness kills a call at 20 s
FEW_SECONDS = 6.0


def test_mutation_families_are_seeded_and_cover_the_list():
    assert set(fuzzing.FAMILIES) >= {"byte_flips", "truncation", "line_loss", "line_duplication", "nan_inf",
                                     "zero_negative", "huge_numbers", "degenerate_angles", "huge_atom_counts",
                                     "unicode", "binary", "long_lines"}
    first, again = fuzzing.make_mutants(5, 2), fuzzing.make_mutants(5, 2)
    assert first == again and len({m["text"] for m in first}) > len(first) * 0.9
    assert fuzzing.impossible_cell(fuzzing.degenerate_angles(__import__("random").Random(1), fuzzing.source_cifs(1)[0]))


def test_fuzzed_library_calls_never_crash_hang_or_escape():
    mutants = fuzzing.make_mutants(seed=11, per_family=3)
    records = fuzzing.run_mutants(mutants, pythonpath=str(REPO))
    summary = fuzzing.summarize(records)
    assert summary["calls"] == len(mutants) * len(fuzzing.TARGETS)
    assert summary["failures"] == [], summary["failures"][:5]
    assert set(summary["outcomes"]) <= {"ok", "error"}
    assert summary["slowest"]["seconds"] < FEW_SECONDS, summary["slowest"]
    assert summary["impossible_valid"] == []


def test_the_harness_sees_a_real_segfault(tmp_path):
    """With the pre-checks switched off (a sitecustomize in the child), NaN cells reach
    spglib again and the harness must report the crash, attributed to its mutant."""
    (tmp_path / "sitecustomize.py").write_text(
        "import crystalforge.cif.preprocess as p\n"
        "p.check_cif_text = lambda cif: None\n"
        "p.check_structure = lambda structure: None\n")
    cif = fuzzing.source_cifs(1)[0]
    mutants = [{"id": "nan-cell", "family": "nan_inf", "text": fuzzing._set_field(cif, "_cell_length_a", "nan")},
               {"id": "good", "family": "none", "text": cif}]
    records = fuzzing.run_mutants(mutants, ("preprocess",), pythonpath=f"{tmp_path}{os.pathsep}{REPO}")
    outcomes = {r["id"]: r["outcome"] for r in records}
    assert outcomes == {"nan-cell": "crash", "good": "ok"}
    assert [r["detail"] for r in records if r["id"] == "nan-cell"] == ["exit code -11"]


def _cli(*args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "crystalforge", *args], capture_output=True, text=True,
                            timeout=timeout, env=env, cwd=REPO)
    return result, time.monotonic() - start


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory):
    """One mutant per family plus two untouched CIFs, as files (bytes as a user would have them)."""
    folder = tmp_path_factory.mktemp("fuzz") / "cifs"
    folder.mkdir()
    mutants = fuzzing.make_mutants(seed=23, per_family=1)
    for mutant in mutants:
        (folder / f"{mutant['id']}.cif").write_bytes(mutant["text"].encode("utf-8", "surrogatepass"))
    for i, cif in enumerate(fuzzing.source_cifs(1)):
        (folder / f"good{i}.cif").write_text(cif)
    return folder, mutants


def test_fuzzed_files_through_preprocess_validate_and_evaluate_clis(fuzz_folder, tmp_path):
    folder, mutants = fuzz_folder
    names = sorted(p.stem for p in folder.iterdir())
    out = tmp_path / "prep"
    result, seconds = _cli("preprocess", str(folder), str(out), "-j", "2", "--no-progress")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    written = sorted(p.stem for p in out.iterdir()) if out.exists() else []
    failures_csv = tmp_path / "prep_failures.csv"
    failed = [line.split(",", 1)[0] for line in failures_csv.read_text().splitlines()[1:]] if failures_csv.exists() else []
    assert sorted(written + failed) == names and {"good0", "good1"} <= set(written)
    assert "crashed" not in (failures_csv.read_text() if failures_csv.exists() else "")

    result, seconds = _cli("validate", str(folder), "-j", "2", "--json", "--no-progress")
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    rows = {row["name"]: row for row in json.loads(result.stdout)["results"]}
    assert sorted(rows) == names
    texts = {m["id"]: m["text"] for m in mutants}
    assert not [n for n, row in rows.items() if row.get("is_valid") and fuzzing.impossible_cell(texts.get(n, ""))]
    errors = [row["error"] for row in rows.values() if "error" in row]
    assert all(error.startswith("not a CIF") for error in errors), errors  # no worker crashed
    assert result.returncode == (1 if errors else 0)  # files that are not CIFs fail the command

    result, seconds = _cli("evaluate", str(folder), "-j", "2", "--json", "--quiet", "-o", str(tmp_path / "e.csv"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["n_cifs"] == len(names)
    assert "crashed" not in (tmp_path / "e.csv").read_text()
