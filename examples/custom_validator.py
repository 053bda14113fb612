#!/usr/bin/env python
"""Add your own validity check in-process, through the register_validators hook.

No package, no entry point: a plugin is any object with @hookimpl functions, registered on
a plugin manager. The check then joins every candidate's validity report, and with
require=[...] it decides is_valid. (To ship it to others, put it in a package with an entry
point: see plugins/crystalforge-template.)

    python examples/custom_validator.py
    python examples/custom_validator.py --model out/tiny -n 4 --max-atoms 6
"""

from __future__ import annotations

import argparse
import functools
import sys
import types

import attrs

import crystalforge as cf
from crystalforge import hookimpl
from crystalforge.testing import sample_cifs
from crystalforge.validation.report import CheckResult


@attrs.define
class MaxAtoms:
    """At most `limit` atoms in the unit cell (keeps follow-up DFT affordable)."""

    limit: int = attrs.field(default=20, metadata={"help": "largest allowed number of atoms"})

    def check(self, cif: str, context) -> CheckResult:
        # context.structure: the pymatgen Structure, parsed once for all validators
        if context.structure is None:
            return CheckResult("max_atoms", False, None, f"unparsable: {context.parse_error}", False)
        count = len(context.structure)
        passed = count <= self.limit
        message = "" if passed else f"{count} atoms in the cell, more than {self.limit}"
        return CheckResult("max_atoms", passed, None, message, False)


def make_plugin(limit: int) -> types.SimpleNamespace:
    """Return a plugin object whose hook registers MaxAtoms with ``limit``.

    Registering the class itself (``register("max_atoms", MaxAtoms)``) is the usual way;
    its attrs fields become options. Here a partial fixes the limit from the command line.
    """

    @hookimpl
    def register_validators(register):
        register("max_atoms", functools.partial(MaxAtoms, limit=limit),
                 description=f"at most {limit} atoms in the cell", required=False)

    return types.SimpleNamespace(register_validators=register_validators)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("-n", type=int, default=4, help="candidates to generate")
    parser.add_argument("--max-new-tokens", type=int, default=1000, help="stop after this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-atoms", type=int, default=20, help="the check's limit")
    args = parser.parse_args(argv)

    pm = cf.make_plugin_manager()
    pm.register(make_plugin(args.max_atoms), name="my-checks")
    component = pm.registry("validator").get("max_atoms")
    print(f"registered validator '{component.name}' from plugin '{component.plugin}'")

    # 1. on real structures shipped with crystalforge (Perov-5 and Carbon-24). They are
    #    stored in the canonical training form: validate the post-processed CIF, which has
    #    the full symmetry operators (the space-group check needs them).
    for name, canonical in sample_cifs():
        report = cf.validate(cf.postprocess_cif(canonical), plugin_manager=pm, require=["max_atoms"])
        check = report.checks["max_atoms"]
        print(f"{name}: max_atoms={'pass' if check.passed else 'fail'}; {report.summary()}")

    # 2. on generated candidates: the check is required, so it decides is_valid
    candidates = cf.generate("Ca2Ti2O6", n=args.n, model=args.model, seed=args.seed,
                             search_options={"max_new_tokens": args.max_new_tokens},
                             plugin_manager=pm, require=["max_atoms"])
    for c in candidates:
        check = c.report.checks["max_atoms"]
        print(f"{c.name}: max_atoms={'pass' if check.passed else 'fail'}"
              f"{' (' + check.message + ')' if check.message else ''}; {c.report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
