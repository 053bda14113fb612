"""One option letter, one meaning: every short flag of every command (plugins' included)
means the same thing, and every option of that meaning carries the letter."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from crystalforge.cli import cli

#: short flag -> (the long names every option with it has, what it means)
MEANINGS: dict[str, tuple[frozenset[str], str]] = {
    "-o": (frozenset({"--out", "--output"}), "output file or folder"),
    "-O": (frozenset({"--search-opt"}), "search strategy option KEY=VALUE"),
    "-s": (frozenset({"--spacegroup"}), "space group"),
    "-n": (frozenset(), "candidates per prompt/reference"),
    "-j": (frozenset({"--workers"}), "worker processes"),
    "-r": (frozenset({"--require"}), "validator that must pass"),
    "-c": (frozenset({"--config"}), "config file"),
    "-h": (frozenset({"--help"}), "help"),
}


def all_options() -> list[tuple[str, click.Option]]:
    """Return ``(command path, option)`` for every option of every command, groups included."""
    found: list[tuple[str, click.Option]] = []

    def walk(command: click.Command, path: str, ctx: click.Context) -> None:
        for param in command.get_params(ctx):
            if isinstance(param, click.Option):
                found.append((path, param))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, f"{path} {name}", sub.make_context(name, [], parent=ctx, resilient_parsing=True))

    walk(cli, "crystalforge", cli.make_context("crystalforge", [], resilient_parsing=True))
    return found


def test_the_walk_sees_every_command():
    paths = {path for path, _ in all_options()}
    assert {"crystalforge run", "crystalforge prompt", "crystalforge validate", "crystalforge scorer serve",
            "crystalforge data tokenize", "crystalforge benchmark"} <= paths


def test_each_short_flag_means_one_thing_across_commands():
    problems = []
    for path, option in all_options():
        names = set(option.opts) | set(option.secondary_opts)
        for short in sorted(n for n in names if len(n) == 2):
            if short not in MEANINGS:
                problems.append(f"{path}: {short} is a new letter; give it one meaning in MEANINGS")
                continue
            longs, meaning = MEANINGS[short]
            if not longs <= names:
                problems.append(f"{path}: {short} should mean {meaning} ({'/'.join(sorted(longs))}), "
                                f"but is {'/'.join(sorted(names))}")
        if "-o" in names and not isinstance(option.type, click.Path):
            problems.append(f"{path}: -o is not a path")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("short", [s for s, (longs, _) in MEANINGS.items() if longs])
def test_every_option_of_a_meaning_carries_its_letter(short):
    longs, meaning = MEANINGS[short]
    missing = [f"{path}: {'/'.join(option.opts)}" for path, option in all_options()
               if set(option.opts) & longs and short not in option.opts + option.secondary_opts]
    assert not missing, f"options meaning {meaning} without {short}: {missing}"


def test_old_search_option_spelling_gets_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "CaTiO3", "-o", "top_k=5", "-n", "1"])
    assert result.exit_code == 2
    assert "'top_k=5' looks like a search option: write -O top_k=5 (--search-opt)" in result.output
    assert not any(tmp_path.iterdir())
