"""A template crystalforge plugin: one validator, ``template_min_distance``.

Copy this package, rename it (package name, module name, entry point, component name) and
replace the validator with your own component. The hook implementation at the bottom is
all crystalforge needs: it is found through the ``crystalforge`` entry point declared in
``pyproject.toml``.
"""

from __future__ import annotations

import attrs

from crystalforge import hookimpl

__version__ = "0.1.0"

NAME = "template_min_distance"


@attrs.define
class MinDistance:
    """No two atoms closer than ``min_distance`` Angstrom (periodic images included).

    Options are the attrs fields: their type, default and ``metadata["help"]`` are what
    ``crystalforge list validator`` shows and what
    ``--validator-opt template_min_distance.min_distance=1.2`` converts to.
    """

    min_distance: float = attrs.field(
        default=0.5, metadata={"help": "smallest allowed distance between two atoms, in Angstrom"}
    )

    def check(self, cif: str, context):
        """Return a ``CheckResult``: passed when every interatomic distance >= min_distance.

        ``context.structure`` is the pymatgen Structure parsed once for all validators
        (``None`` when the CIF could not be parsed; ``context.parse_error`` says why).
        A validator never raises on a bad CIF: it fails with a message instead.
        """
        from crystalforge.validation.report import CheckResult

        structure = context.structure
        if structure is None:
            return CheckResult(name=NAME, passed=False, score=None,
                               message=f"cannot check distances: {context.parse_error}",
                               required=False)
        if len(structure) < 2:
            # a single atom's nearest neighbour is its own periodic image
            shortest = min(structure.lattice.abc)
        else:
            matrix = structure.distance_matrix
            shortest = min(
                matrix[i][j] for i in range(len(structure)) for j in range(i + 1, len(structure))
            )
            shortest = min(shortest, min(structure.lattice.abc))
        passed = shortest >= self.min_distance
        message = "" if passed else (
            f"atoms {shortest:.3f} A apart, closer than {self.min_distance} A"
        )
        return CheckResult(name=NAME, passed=passed, score=None, message=message, required=False)


@hookimpl
def register_validators(register):
    """Register the template's validator (reported, not required for is_valid)."""
    register(NAME, MinDistance, required=False,
             description="no two atoms closer than min_distance Angstrom (periodic images included)")
