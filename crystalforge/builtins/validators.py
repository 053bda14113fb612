"""Built-in validators: the CrystaLLM validity checks plus cell sanity."""

from ..hookspecs import hookimpl

VALIDATORS = {
    # name: (class, required for is_valid, description)
    "formula_consistency": ("FormulaConsistency", True,
                            "data_ line, formula sum and structural formula agree"),
    "site_multiplicity": ("SiteMultiplicityConsistency", True,
                          "site multiplicities add up to the formula's counts"),
    "bond_length": ("BondLengthReasonableness", True,
                    "CrystalNN bond lengths within 32% of expected (score in [0, 1])"),
    "space_group": ("SpaceGroupConsistency", True,
                    "stated space group equals the one detected at symprec 0.1"),
    "cell_sanity": ("CellSanity", False,
                    "cell lengths within 0.5-1000 A, angles within 10-170 degrees"),
}


@hookimpl
def register_validators(register):
    for name, (cls, required, description) in VALIDATORS.items():
        register(name, f"crystalforge.validation.checks:{cls}", description=description,
                 required=required)
