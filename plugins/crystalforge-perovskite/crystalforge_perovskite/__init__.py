"""crystalforge plugin: perovskite validators (Goldschmidt tolerance factor, octahedral factor).

Installed, it registers two optional validators through the ``crystalforge`` entry point:
``tolerance_factor`` and ``octahedral_factor``. They join every validity report; make one
decide validity with ``--require tolerance_factor`` (CLI) or ``require=[...]`` (API).
"""

from __future__ import annotations

from crystalforge import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_validators(register):
    register("tolerance_factor", "crystalforge_perovskite.validators:ToleranceFactor",
             description="ABX3: Goldschmidt tolerance factor 0.8 < t < 1.1 (Shannon radii)", required=False)
    register("octahedral_factor", "crystalforge_perovskite.validators:OctahedralFactor",
             description="ABX3: octahedral factor 0.41 <= r_B/r_X <= 0.90 (Shannon radii)", required=False)
