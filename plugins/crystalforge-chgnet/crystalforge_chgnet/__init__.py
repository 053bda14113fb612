"""crystalforge plugin: the ``chgnet`` scorer (energy per atom from pretrained CHGNet)."""

from __future__ import annotations

from crystalforge import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_scorers(register):
    register(
        "chgnet",
        "crystalforge_chgnet.scorer:CHGNetScorer",
        description="energy per atom (eV/atom) from the pretrained CHGNet potential (lower is better); "
                    "relax=true scores the relaxed cell and writes it beside the generated one",
    )
