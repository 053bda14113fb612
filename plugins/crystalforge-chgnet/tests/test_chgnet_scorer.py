"""The chgnet scorer: real pretrained CHGNet on real Perov-5 structures, through the real
entry point, in-process and behind ``crystalforge scorer serve``."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("chgnet")

from crystalforge_chgnet.scorer import CHGNetScorer, load_chgnet  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
# the first rows of the Perov-5 benchmark, kept in crystalforge's own test data
PEROV_CSV = REPO / "tests" / "data" / "perov_5_head200.csv"
csv.field_size_limit(2**31 - 1)


@pytest.fixture(scope="module")
def perov_cifs() -> list[str]:
    """Three raw Perov-5 CIFs (P1, 5 atoms each)."""
    if not PEROV_CSV.exists():
        pytest.skip(f"benchmark data not found at {PEROV_CSV}")
    with open(PEROV_CSV, newline="") as handle:
        rows = [row["cif"] for _, row in zip(range(3), csv.DictReader(handle))]
    return rows


@pytest.fixture(scope="module")
def scorer():
    return CHGNetScorer()


def test_energy_per_atom_is_finite_and_plausible(scorer, perov_cifs):
    energies = scorer.score_many(perov_cifs)
    assert all(math.isfinite(e) for e in energies)
    assert all(-15.0 < e < 0.0 for e in energies)  # eV/atom for bound solids
    assert scorer.score(perov_cifs[0]) == pytest.approx(energies[0], abs=1e-5)
    assert scorer.lower_is_better is True


def test_unscorable_input_is_nan(scorer, perov_cifs):
    assert math.isnan(scorer.score("this is not a CIF"))
    assert math.isnan(scorer.score(""))
    assert math.isnan(scorer.score(perov_cifs[0][: len(perov_cifs[0]) // 3]))  # truncated
    mixed = scorer.score_many(["garbage", perov_cifs[1]])
    assert math.isnan(mixed[0]) and math.isfinite(mixed[1])
    assert math.isnan(CHGNetScorer(max_atoms=2).score(perov_cifs[0]))  # 5 atoms > 2


@pytest.mark.slow
def test_quick_relaxation_scores_the_relaxed_cell_and_keeps_both_energies(scorer, perov_cifs):
    from pymatgen.core import Structure

    relaxing = CHGNetScorer(relax=True, relax_steps=5)
    assert relaxing.unit == scorer.unit == "eV/atom"
    [result, bad] = relaxing.score_details([perov_cifs[0], "garbage"])
    assert math.isfinite(result.value) and -15.0 < result.value < 0.0
    assert result.value == result.extras["energy_relaxed"]
    assert result.extras["energy_unrelaxed"] == pytest.approx(scorer.score(perov_cifs[0]), abs=1e-5)
    assert result.extras["energy_relaxed"] <= result.extras["energy_unrelaxed"] + 1e-3  # FIRE goes downhill
    original = Structure.from_str(perov_cifs[0], fmt="cif")
    assert isinstance(result.structure, Structure) and result.structure.composition == original.composition
    assert result.structure.lattice != original.lattice or result.structure.frac_coords.tolist() != \
        original.frac_coords.tolist()  # it moved
    assert math.isnan(bad.value) and bad.structure is None
    plain = scorer.score_details([perov_cifs[0]])[0]  # without relax: the score only
    assert plain.extras == {} and plain.structure is None


def test_model_is_loaded_once():
    assert load_chgnet("0.3.0", "cpu") is load_chgnet("0.3.0", "cpu")


def test_registered_through_the_real_entry_point(monkeypatch):
    from click.testing import CliRunner

    from crystalforge.cli import cli
    from crystalforge.plugins import make_plugin_manager

    monkeypatch.delenv("CRYSTALFORGE_BLOCK_PLUGINS", raising=False)
    manager = make_plugin_manager(entry_points=True)
    component = manager.registry("scorer").get("chgnet")
    assert component.plugin == "chgnet"
    assert {o.name for o in component.options} >= {"relax", "relax_steps", "device"}
    scorer = manager.registry("scorer").create("chgnet", relax="true", relax_steps="4", device="cpu")
    assert scorer.relax is True and scorer.relax_steps == 4
    result = CliRunner().invoke(cli, ["plugins", "--json"], obj={"plugin_manager": manager})
    assert result.exit_code == 0
    info = next(i for i in json.loads(result.output) if i["name"] == "chgnet")
    assert info["status"] == "ok" and info["provides"] == {"scorer": ["chgnet"]}


@pytest.mark.slow
def test_behind_scorer_serve(scorer, perov_cifs):
    from crystalforge.scoring.zmq_client import ZMQScorer

    proc = subprocess.Popen(
        [sys.executable, "-m", "crystalforge", "scorer", "serve", "--scorer", "chgnet", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        line = proc.stderr.readline()
        match = re.search(r"tcp://127\.0\.0\.1:(\d+)", line)
        assert match, line
        client = ZMQScorer(port=int(match.group(1)), timeout=60)
        try:
            remote = client.score(perov_cifs[0])
            assert remote == pytest.approx(scorer.score(perov_cifs[0]), abs=1e-4)
            assert math.isnan(client.score("garbage"))
        finally:
            client.close()
        proc.terminate()
        assert proc.wait(20) == 0
        assert proc.stdout.read() == ""  # CHGNet's banner does not leak onto stdout
    finally:
        if proc.poll() is None:
            proc.kill()
