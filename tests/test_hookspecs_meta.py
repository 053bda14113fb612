"""Meta tests that keep the plugin contract, its documentation and its tests in step.

- every hookspec has a ``## name(args)`` heading in docs/hooks.md whose argument list
  matches the spec's signature (fails when a hook lacks its section or the spec drifts);
- docs/hooks.md documents no hook that does not exist;
- every hook has a test named ``test_hook_<name>`` somewhere under tests/.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from crystalforge import hookspecs
from crystalforge.registry import KINDS

REPO = Path(__file__).resolve().parent.parent
HOOKS_MD = REPO / "docs" / "hooks.md"
HEADING_RE = re.compile(r"^##\s+`?(?P<name>\w+)\((?P<args>[^)]*)\)`?\s*$", re.M)


def hookspec_functions() -> dict[str, object]:
    """Return every function of crystalforge.hookspecs marked as a hook specification."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: func
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(func, marker)
    }


def documented_hooks(text: str | None = None) -> dict[str, list[str]]:
    """Return ``{hook name: [argument names]}`` from the level-2 headings of docs/hooks.md."""
    if text is None:
        text = HOOKS_MD.read_text(encoding="utf-8")
    return {
        m["name"]: [a.strip() for a in m["args"].split(",") if a.strip()]
        for m in HEADING_RE.finditer(text)
    }


def doc_problems(text: str) -> list[str]:
    """Return what is wrong with a hook reference text: missing, drifted or unknown hooks."""
    documented = documented_hooks(text)
    problems = []
    for hook, func in sorted(hookspec_functions().items()):
        spec_args = list(inspect.signature(func).parameters)
        if hook not in documented:
            problems.append(f"docs/hooks.md lacks a '## {hook}({', '.join(spec_args)})' section")
        elif documented[hook] != spec_args:
            problems.append(f"docs/hooks.md documents {hook}({', '.join(documented[hook])}) but the "
                            f"spec is {hook}({', '.join(spec_args)})")
    for hook in sorted(set(documented) - set(hookspec_functions())):
        problems.append(f"docs/hooks.md documents {hook}, which is not a hook")
    return problems


HOOKS = sorted(hookspec_functions())


def test_hookspecs_are_found():
    # guards the marker lookup above: finding no hooks would make the tests below vacuous
    assert set(KINDS.values()) <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    problems = [p for p in doc_problems(HOOKS_MD.read_text(encoding="utf-8")) if f" {hook}(" in p]
    assert not problems, problems


def test_docs_document_no_unknown_hook():
    problems = [p for p in doc_problems(HOOKS_MD.read_text(encoding="utf-8")) if "not a hook" in p]
    assert not problems, problems


def test_drift_is_caught():
    """The check itself: a missing section, a changed signature and a stale hook are all reported."""
    text = HOOKS_MD.read_text(encoding="utf-8")
    assert doc_problems(text) == []
    missing = text.replace("## register_scorers(register)", "## Scorers")
    assert doc_problems(missing) == ["docs/hooks.md lacks a '## register_scorers(register)' section"]
    drifted = text.replace("## register_models(register)", "## register_models(register, config)")
    assert doc_problems(drifted) == [
        "docs/hooks.md documents register_models(register, config) but the spec is register_models(register)"]
    stale = text + "\n## register_exporters(register)\n"
    assert doc_problems(stale) == ["docs/hooks.md documents register_exporters, which is not a hook"]


def _test_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "tests").rglob("test_*.py")))


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    pattern = re.compile(rf"^\s*def test_hook_{hook}\b", re.M)
    assert pattern.search(_test_sources()), f"no test named test_hook_{hook} under tests/"


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.M | re.S)


def test_hook_reference_examples_register(monkeypatch):
    """Every example plugin in docs/hooks.md runs and registers through a real plugin manager."""
    import types

    from crystalforge.plugins import make_plugin_manager

    monkeypatch.setenv("CRYSTALFORGE_STRICT_PLUGINS", "1")  # a broken example must fail loudly
    blocks = [b for b in _python_blocks(HOOKS_MD.read_text(encoding="utf-8")) if "@hookimpl" in b]
    assert len(blocks) >= len(HOOKS) + 1  # the intro example plus one per hook
    covered = set()
    for number, code in enumerate(blocks):
        if "MyEnergyScorer" in code:  # the intro snippet names a class it does not define
            code = "MyEnergyScorer = dict\n" + code
        module = types.ModuleType(f"hooks_md_example_{number}")
        exec(compile(code, f"docs/hooks.md example {number}", "exec"), module.__dict__)
        manager = make_plugin_manager(entry_points=False)
        manager.register(module, name=f"example{number}")
        for kind, hook in KINDS.items():
            if hasattr(module, hook):
                names = [c.name for c in manager.registry(kind) if c.plugin == f"example{number}"]
                assert names, f"example {number} of docs/hooks.md registers no {kind}"
                covered.add(hook)
    assert covered == set(KINDS.values())


def test_hook_reference_validator_and_scorer_examples_work():
    """The validator and scorer examples of docs/hooks.md give sensible results on a real CIF."""
    import math
    import types

    from crystalforge.cif.postprocess import postprocess_cif
    from crystalforge.plugins import make_plugin_manager
    from crystalforge.testing import sample_cifs
    from crystalforge.validation.report import ValidationContext

    manager = make_plugin_manager(entry_points=False)
    for number, code in enumerate(_python_blocks(HOOKS_MD.read_text(encoding="utf-8"))):
        if "class MaxAtoms" in code or "class DensityScorer" in code:
            module = types.ModuleType(f"hooks_md_example_{number}")
            exec(compile(code, "docs/hooks.md", "exec"), module.__dict__)
            manager.register(module, name=f"example{number}")
    _, canonical = sample_cifs()[0]
    cif = postprocess_cif(canonical)  # Cd1Cu1N3, 5 atoms
    density = manager.registry("scorer").create("density")
    assert 1.0 < density.score(cif) < 20.0
    assert math.isnan(density.score("not a cif"))
    validators = manager.registry("validator")
    assert validators.create("max_atoms").check(cif, ValidationContext(cif)).passed
    result = validators.create("max_atoms", limit="2").check(cif, ValidationContext(cif))
    assert not result.passed and "5 atoms > 2" in result.message
