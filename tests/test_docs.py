"""The documentation builds and its generated parts cannot drift from the code."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", REPO / "scripts" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    expected = _load_generator().render()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == expected, "docs/cli.md is stale: run python scripts/gen_cli_reference.py --write"


def test_cli_reference_covers_every_command():
    from crystalforge.cli import COMMANDS

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    available = [name for name, target in COMMANDS.items()
                 if importlib.util.find_spec(f"crystalforge.cli.{target.split(':')[0]}") is not None]
    for name in available:
        assert f"## `crystalforge {name}`" in text, f"docs/cli.md lacks crystalforge {name}"


def test_every_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    missing = [p for p in pages if p not in nav]
    assert not missing, f"pages missing from mkdocs.yml nav: {missing}"


FENCED_RE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
SPAN_RE = re.compile(r"`([^`\n]+)`")
COMMAND_RE = re.compile(r"(?:^|\s|/)(?<!import )(?<!from )crystalforge ((?:--?\w[\w-]* )*)([a-z][\w-]*)", re.M)


def _code_of(markdown: str) -> list[str]:
    """Return the fenced code blocks and inline code spans of a Markdown text."""
    blocks = FENCED_RE.findall(markdown)
    prose = FENCED_RE.sub("", markdown)
    return blocks + SPAN_RE.findall(prose)


def test_docs_mention_no_unknown_command():
    # a command line in a code block or code span must name a real command (typos, renames)
    from crystalforge.cli import COMMANDS

    unknown = set()
    for page in DOCS.rglob("*.md"):
        for code in _code_of(page.read_text(encoding="utf-8")):
            for _, word in COMMAND_RE.findall(code):
                if word not in COMMANDS:
                    unknown.add((page.relative_to(DOCS).as_posix(), word))
    assert not unknown, f"docs mention unknown commands: {sorted(unknown)}"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (pip install -e .[docs])")
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
         "--config-file", str(REPO / "mkdocs.yml")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "index.html").exists()
    assert (site / "hooks" / "index.html").exists()
    shutil.rmtree(site)


def _files_of_walkthrough() -> dict[str, str]:
    """Return ``{path: code}`` for the blocks of the plugin author guide that start with a path comment."""
    text = (DOCS / "plugin-author-guide.md").read_text(encoding="utf-8")
    files = {}
    for block in FENCED_RE.findall(text):
        first = block.splitlines()[0] if block.strip() else ""
        match = re.match(r"#\s*([\w./-]+\.(?:py|toml))\s*$", first)
        if match:
            files[match.group(1)] = block
    return files


def test_walkthrough_declares_the_entry_point():
    import tomllib

    files = _files_of_walkthrough()
    assert {"crystalforge_density/scorer.py", "crystalforge_density/__init__.py",
            "tests/test_density.py", "pyproject.toml"} <= set(files)
    project = tomllib.loads(files["pyproject.toml"])["project"]
    assert project["entry-points"]["crystalforge"] == {"density": "crystalforge_density"}


@pytest.mark.slow
def test_walkthrough_plugin_passes_its_own_tests(tmp_path):
    """The plugin author guide's package, written out file by file, passes the tests it shows."""
    for path, code in _files_of_walkthrough().items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1",
           "CRYSTALFORGE_STRICT_PLUGINS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "tests/test_density.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
