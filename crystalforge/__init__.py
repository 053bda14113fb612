"""crystalforge: generate crystal structures with a GPT trained on CIF files.

The public API (names kept stable)::

    import crystalforge as cf
    pm = cf.make_plugin_manager()
    tok = cf.load_tokenizer()
    cf.preprocess_cif(raw_cif); cf.postprocess_cif(generated); cf.make_prompt("CaTiO3", spacegroup="Pm-3m")
    report = cf.validate(cif_text)
    model = cf.load_model()                     # embedded default model
    candidates = cf.generate("CaTiO3", spacegroup="Pm-3m", n=10, search="top-k", seed=0)

A plugin imports its contract from here: ``cf.Tokenizer``, ``cf.LanguageModel``,
``cf.SearchStrategy``, ``cf.Scorer``, ``cf.Validator`` and the result types ``cf.Sample``,
``cf.CheckResult`` (see :mod:`crystalforge.contracts`).

Heavy modules (torch, pymatgen) are imported on first use of the names that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import CrystalforgeError
from .hookspecs import hookimpl

__version__ = "0.1.0"

# public name -> "module:attribute", resolved on first access
_LAZY: dict[str, str] = {
    "make_plugin_manager": "crystalforge.plugins:make_plugin_manager",
    "load_tokenizer": "crystalforge.api:load_tokenizer",
    "preprocess_cif": "crystalforge.cif.preprocess:preprocess_cif",
    "postprocess_cif": "crystalforge.cif.postprocess:postprocess_cif",
    "make_prompt": "crystalforge.cif.prompt:make_prompt",
    "validate": "crystalforge.validation.report:validate",
    "load_model": "crystalforge.model.checkpoint:load_model",
    "generate": "crystalforge.generation.api:generate",
    "Candidate": "crystalforge.generation.candidate:Candidate",
    "FROM_STRUCTURE": "crystalforge.generation.inputs:FROM_STRUCTURE",
    # the plugin contracts (crystalforge.contracts): what a plugin of each kind implements
    "Tokenizer": "crystalforge.contracts:Tokenizer",
    "LanguageModel": "crystalforge.contracts:LanguageModel",
    "KVCache": "crystalforge.contracts:KVCache",
    "SearchStrategy": "crystalforge.contracts:SearchStrategy",
    "Scorer": "crystalforge.contracts:Scorer",
    "Validator": "crystalforge.contracts:Validator",
    "Sample": "crystalforge.contracts:Sample",
    "CheckResult": "crystalforge.contracts:CheckResult",
    "ValidationContext": "crystalforge.contracts:ValidationContext",
    "ValidityReport": "crystalforge.contracts:ValidityReport",
    "Option": "crystalforge.registry:Option",
}

__all__ = ["CrystalforgeError", "hookimpl", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'crystalforge' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
