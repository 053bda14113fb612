"""Tests of the template plugin, using the fixtures crystalforge ships (crystalforge.testing)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import crystalforge as cf
import crystalforge_template

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

SQUASHED = """data_C2
_symmetry_space_group_name_H-M   'P 1'
_cell_length_a   5.0
_cell_length_b   5.0
_cell_length_c   5.0
_cell_angle_alpha   90.0
_cell_angle_beta   90.0
_cell_angle_gamma   90.0
_symmetry_Int_Tables_number   1
_chemical_formula_structural   C
_chemical_formula_sum   C2
_cell_volume   125.0
_cell_formula_units_Z   2
loop_
 _symmetry_equiv_pos_site_id
 _symmetry_equiv_pos_as_xyz
  1  'x, y, z'
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_symmetry_multiplicity
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  C  C0  1  0.0  0.0  0.0  1
  C  C1  1  0.02  0.0  0.0  1
"""


def test_hook_registers_the_validator(cf_register):
    manager = cf_register(crystalforge_template, name="template")
    component = manager.registry("validator").get("template_min_distance")
    assert component.plugin == "template"
    assert component.metadata["required"] is False
    assert [o.name for o in component.options] == ["min_distance"]


def test_real_structures_pass(cf_register, cf_sample_cifs_postprocessed):
    manager = cf_register(crystalforge_template, name="template")
    for name, cif in cf_sample_cifs_postprocessed:
        report = cf.validate(cif, plugin_manager=manager)
        assert report.checks["template_min_distance"].passed, (name, report.checks["template_min_distance"])


def test_squashed_atoms_fail_with_a_message(cf_register):
    manager = cf_register(crystalforge_template, name="template")
    report = cf.validate(SQUASHED, plugin_manager=manager)
    result = report.checks["template_min_distance"]
    assert not result.passed
    assert "closer than 0.5 A" in result.message


def test_option_changes_the_threshold(cf_plugin_manager, cf_register, cf_sample_cifs_postprocessed):
    cf_register(crystalforge_template, name="template")
    strict = cf_plugin_manager.registry("validator").create("template_min_distance", min_distance="100")
    from crystalforge.validation.report import ValidationContext

    _, cif = cf_sample_cifs_postprocessed[0]
    assert not strict.check(cif, ValidationContext(cif)).passed


def test_entry_point_is_declared():
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["crystalforge"]
    assert entry_points == {"template": "crystalforge_template"}
