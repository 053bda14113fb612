"""``crystalforge run``: outputs, resume, bad input, and a 2-process torchrun shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import attrs
import pytest

from crystalforge import hookimpl
from cli_helpers import invoke, read_summary

REPO = Path(__file__).resolve().parents[1]

FAST = ["-O", "max_new_tokens=40"]


def cif_files(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.cif"))}


def test_run_writes_candidates_summary_and_table(cf_tiny_model, plugin_manager, tmp_path):
    # Na1Cl1 (CsCl type) fits Pm-3m's one-fold sites; Na2Cl2 cannot (tests/test_reach.py)
    out = tmp_path / "out"
    result = invoke(plugin_manager, ["run", "CaTiO3", "Na1Cl1", "-s", "Pm-3m", "-n", "3", "--model",
                                     str(cf_tiny_model), "--out", str(out), "--device", "cpu", "--scorer", "random",
                                     "--batch-size", "4", "--no-progress", *FAST])
    assert result.exit_code == 0, result.output
    assert sorted(cif_files(out)) == sorted(f"{f}_Pm-3m_{i}.cif" for f in ("Ca1Ti1O3", "Na1Cl1") for i in range(3))
    rows = read_summary(out)
    assert len(rows) == 6
    for column in ("composition", "spacegroup_asked", "spacegroup_found", "formula_consistency",
                   "site_multiplicity", "bond_length", "space_group", "cell_sanity", "is_valid", "score",
                   "volume", "n_tokens", "file"):
        assert column in rows[0], column
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)  # none valid, random scorer is lower-is-better
    assert "6 candidates (6 generated, 0 kept from before), 0 valid" in result.output
    assert "Ca1Ti1O3_Pm-3m_" in result.output

    as_json = invoke(plugin_manager, ["run", "CaTiO3", "Na1Cl1", "-s", "Pm-3m", "-n", "3", "--model",
                                      str(cf_tiny_model), "--out", str(out), "--device", "cpu", "--scorer", "random",
                                      "--json", *FAST])
    data = json.loads(as_json.output)
    assert data["generated"] == 0 and data["resumed"] == 6 and len(data["rows"]) == 6


def test_resume_keeps_files_and_makes_only_missing(cf_tiny_model, plugin_manager, tmp_path):
    out = tmp_path / "out"
    args = ["run", "NaCl", "-n", "3", "--model", str(cf_tiny_model), "--out", str(out), "--device", "cpu",
            "--no-progress", "--seed", "11", *FAST]
    assert invoke(plugin_manager, args).exit_code == 0
    first = cif_files(out)
    (out / "Na1Cl1_any_1.cif").unlink()
    (out / "Na1Cl1_any_2.cif").write_text("edited by hand")  # kept: resume never rewrites what is there
    result = invoke(plugin_manager, [*args[:3], "5", *args[4:], "--json"])
    data = json.loads(result.output)
    assert (data["generated"], data["resumed"], len(data["rows"])) == (3, 2, 5)
    second = cif_files(out)
    assert second["Na1Cl1_any_1.cif"] == first["Na1Cl1_any_1.cif"]  # same seed, same index: same text
    assert second["Na1Cl1_any_2.cif"] == "edited by hand"
    assert len(read_summary(out)) == 5


@attrs.define
class InterruptingCheck:
    """Stands in for a Ctrl-C: interrupts the run at its fifth candidate while armed."""

    armed: typing.ClassVar[bool] = True
    calls: int = 0

    def check(self, cif, context):
        from crystalforge.validation.report import CheckResult

        self.calls += 1
        if self.armed and self.calls == 5:
            raise KeyboardInterrupt
        return CheckResult("interrupt", True, None, "not interrupted")


class InterruptPlugin:
    @staticmethod
    @hookimpl
    def register_validators(register):
        register("interrupt", InterruptingCheck)


def test_resume_after_an_interrupted_run_matches_an_uninterrupted_one(cf_tiny_model, plugin_manager, tmp_path,
                                                                     monkeypatch):
    plugin_manager.register(InterruptPlugin, name="interrupt-plugin")
    common = ["-n", "4", "--model", str(cf_tiny_model), "--device", "cpu", "--batch-size", "2", "--no-progress",
              "--seed", "3", *FAST]
    broken = invoke(plugin_manager, ["run", "KBr", "LiF", "--out", str(tmp_path / "a"), *common])
    assert broken.exit_code != 0
    assert len(cif_files(tmp_path / "a")) == 4 and not (tmp_path / "a" / "summary.csv").exists()
    monkeypatch.setattr(InterruptingCheck, "armed", False)
    resumed = invoke(plugin_manager, ["run", "KBr", "LiF", "--out", str(tmp_path / "a"), "--json", *common])
    data = json.loads(resumed.output)
    assert (data["generated"], data["resumed"]) == (4, 4)
    clean = invoke(plugin_manager, ["run", "KBr", "LiF", "--out", str(tmp_path / "b"), *common])
    assert clean.exit_code == 0
    assert cif_files(tmp_path / "a") == cif_files(tmp_path / "b")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["CaXx3"], "Error: composition 'CaXx3' names an unknown element 'Xx'"),
        (["Ca(TiO3"], "Error: cannot read composition"),
        (["CaTiO3", "-s", "Pq-9"], "Error:"),
        (["CaTiO3", "--search", "top-kk"], "Did you mean 'top-k'?"),
        (["CaTiO3", "-O", "top_k"], "Error: -O expects KEY=VALUE"),
        (["CaTiO3", "-O", "top_k=many"], "Error: Option 'top_k' expects int"),
        ([], "Error: no composition given"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(plugin_manager, tmp_path, args, message):
    result = invoke(plugin_manager, ["run", *args, "--model", str(tmp_path / "missing.pt"),
                                     "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # nothing was done


def test_bad_prompts_file_names_the_line(plugin_manager, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("CaTiO3 Pm-3m\nNaCl P99\n")
    result = invoke(plugin_manager, ["run", "--prompts", str(prompts), "--model", str(tmp_path / "m.pt")])
    assert result.exit_code == 1 and "p.txt line 2" in result.output


def test_other_settings_do_not_mix_into_an_old_folder(cf_tiny_model, plugin_manager, tmp_path):
    args = ["run", "NaCl", "-n", "1", "--model", str(cf_tiny_model), "--out", str(tmp_path), "--device", "cpu",
            "--no-progress", *FAST]
    assert invoke(plugin_manager, args).exit_code == 0
    result = invoke(plugin_manager, [*args, "--seed", "9"])
    assert result.exit_code == 1 and "seed=0" in result.output and "another --out" in result.output


@pytest.mark.slow
def test_torchrun_two_processes_shard_and_merge(cf_tiny_model, plugin_manager, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("CaTiO3 Pm-3m\nNaCl\nKBr Fm-3m\n")
    common = ["--prompts", str(prompts), "-n", "3", "--model", str(cf_tiny_model), "--device", "cpu",
              "--batch-size", "2", "--no-progress", "--seed", "5", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CRYSTALFORGE_BLOCK_PLUGINS": ""}
    torchrun = Path(sys.executable).with_name("torchrun")
    sharded = tmp_path / "sharded"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "crystalforge", "run", *common, "--out",
         str(sharded), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)  # only rank 0 prints
    assert data["generated"] == 9 and len(data["rows"]) == 9
    assert sorted(p.name for p in sharded.glob("candidates.rank*.jsonl")) == [
        "candidates.rank0.jsonl", "candidates.rank1.jsonl"]
    rows = read_summary(sharded)
    assert len(rows) == 9 and len({r["file"] for r in rows}) == 9
    single = tmp_path / "single"
    assert invoke(plugin_manager, ["run", *common, "--out", str(single)]).exit_code == 0
    assert cif_files(sharded) == cif_files(single)  # same candidates whichever process made them
