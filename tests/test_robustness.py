"""No input crashes or hangs anything: C-crashing CIF values refused in Python, batch
commands that survive a worker killed by SIGSEGV, checks under a time limit, and
compositions refused before any work (issue 11, point 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner

from crystalforge.cli import cli
from crystalforge.cif.io import write_cifs
from crystalforge.errors import CIFError, CompositionError
from crystalforge.parallel import imap_progress

from conftest import PEROV_CSV, REPO, read_csv_slice

RAW = read_csv_slice(PEROV_CSV, 0, 4)


def _set(cif: str, key: str, value: str) -> str:
    import re

    return re.sub(rf"({key}\s+)\S+", lambda m: m.group(1) + value, cif, count=1)


def _python(code: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


# -- values that crashed spglib are refused before pymatgen runs ----------------------------

CRASHERS = {
    "nan length": (lambda c: _set(c, "_cell_length_a", "nan"), "not a number"),
    "infinite length": (lambda c: _set(c, "_cell_length_b", "inf"), "not a number"),
    "zero angle": (lambda c: _set(c, "_cell_angle_alpha", "0"), "strictly between 0 and 180"),
    "straight angle": (lambda c: _set(c, "_cell_angle_gamma", "180"), "strictly between 0 and 180"),
    "negative angle": (lambda c: _set(c, "_cell_angle_beta", "-90"), "strictly between 0 and 180"),
    "flat cell": (lambda c: _set(_set(_set(c, "_cell_angle_alpha", "120"), "_cell_angle_beta", "120"),
                                 "_cell_angle_gamma", "120"), "zero volume"),
    "400 digits": (lambda c: _set(c, "_cell_length_c", "9" * 400), "400 digits"),
    "nan coordinate": (lambda c: c.replace("0.00159044", "nan", 1), "not a number"),
    "huge coordinate": (lambda c: c.replace("0.00159044", "1e300", 1), "beyond"),
    "180k-character line": (lambda c: c.replace("  Cu  Cu0", "  Cu  Cu0" + " 1" * 90000, 1), "180,0"),
    "too big": (lambda c: c + "#" * 1_000_001, "characters, more than"),
}


def test_values_that_crash_the_c_code_are_refused_in_python():
    """In a subprocess: before the pre-checks, the first of these killed it with SIGSEGV."""
    cases = {label: mutate(RAW[0][1]) for label, (mutate, _) in CRASHERS.items()}
    result = _python("""
        import json, sys, time
        from crystalforge.cif.preprocess import preprocess_cif
        out = {}
        for label, cif in json.loads(sys.stdin.read()).items():
            start = time.monotonic()
            try:
                preprocess_cif(cif)
                out[label] = ["accepted", 0]
            except Exception as exc:
                out[label] = [f"{type(exc).__name__}: {exc}", time.monotonic() - start]
        print(json.dumps(out))
    """, stdin=json.dumps(cases))
    assert result.returncode == 0, f"process died (rc {result.returncode}): {result.stderr[-500:]}"
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    for label, (_, expected) in CRASHERS.items():
        message, seconds = outcome[label]
        assert message.startswith("CIFError: ") and expected in message, (label, message)
        assert "\n" not in message and seconds < 2.0, (label, seconds)


def test_real_cifs_pass_the_pre_checks():
    from crystalforge.cif.safety import check_cif_text

    for _, cif in read_csv_slice(PEROV_CSV, 0, 50):
        check_cif_text(cif)


def test_a_parsed_structure_with_an_absurd_cell_is_not_handed_to_spglib():
    from pymatgen.core import Lattice, Structure

    from crystalforge.cif.preprocess import structure_to_canonical

    huge = Structure(Lattice.cubic(1e6), ["Na"], [[0, 0, 0]])
    with pytest.raises(CIFError, match="beyond"):
        structure_to_canonical(huge)


# -- the parallel map survives dead and hung workers ----------------------------------------

def _task(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 5:
        raise ValueError("bad item")
    if x == 6:
        sys.exit(2)
    if x == 7:
        time.sleep(60)
    return x * x


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_imap_progress_survives_a_segfault_a_hang_and_sys_exit(workers):
    start = time.monotonic()
    results = list(imap_progress(_task, range(10), workers=workers, progress=False, timeout=1.5,
                                 crash_label="the CIF parser"))
    assert time.monotonic() - start < 10
    assert [ok for ok, _ in results] == [True, True, True, False, True, False, False, False, True, True]
    assert [value for ok, value in results if ok] == [0, 1, 4, 16, 64, 81]
    assert results[3][1] == "crashed the CIF parser, signal 11 (SIGSEGV)"
    assert results[5][1] == "ValueError: bad item"
    assert results[6][1].startswith("SystemExit")
    assert results[7][1] == "timed out after 1.5 s"


def test_imap_progress_many_items_in_order_and_workers_are_gone_after():
    import multiprocessing

    assert [v for _, v in imap_progress(abs, range(-300, 0), workers=2, progress=False)] == list(range(300, 0, -1))
    assert multiprocessing.active_children() == []
    stream = imap_progress(_task, [1, 7, 2], workers=2, progress=False)
    assert next(stream) == (True, 1)
    stream.close()  # stop early while a worker sleeps: it is killed, nothing waits
    assert multiprocessing.active_children() == []


def test_unpicklable_result_fails_that_item_only():
    results = list(imap_progress(lambda x: (lambda: x) if x == 1 else x, range(3), workers=1, progress=False))
    assert results[0] == (True, 0) and results[2] == (True, 2)
    assert results[1][0] is False and "could not be sent back" in results[1][1]


# -- batch commands: one file that kills the parser does not take the rest with it ----------

@pytest.fixture
def crash_folder(tmp_path, monkeypatch):
    """Three good CIFs and one with a NaN cell, with the pre-checks switched off, so the
    NaN really reaches spglib and kills the worker with SIGSEGV (as before the fix)."""
    import crystalforge.cif.preprocess as preprocess

    monkeypatch.setattr(preprocess, "check_cif_text", lambda cif: None)
    monkeypatch.setattr(preprocess, "check_structure", lambda structure: None)
    folder = tmp_path / "raw"
    write_cifs(folder, [(f"good{i}", cif) for i, (_, cif) in enumerate(RAW[:3])]
               + [("nan_cell", _set(RAW[0][1], "_cell_length_a", "nan"))])
    return folder


@pytest.mark.parametrize("workers", ["1", "2"])
def test_preprocess_cli_survives_a_worker_killed_by_sigsegv(crash_folder, tmp_path, workers):
    out = tmp_path / f"out{workers}"
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["preprocess", str(crash_folder), str(out), "-j", workers, "--no-progress"])
    assert time.monotonic() - start < 60
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["good0.cif", "good1.cif", "good2.cif"]
    failures = (tmp_path / f"out{workers}_failures.csv").read_text()
    assert "nan_cell,\"crashed the CIF parser, signal 11 (SIGSEGV)\"" in failures


def test_data_prepare_preprocess_step_survives_a_worker_killed_by_sigsegv(crash_folder):
    from crystalforge.data.pipeline import preprocess_items

    items = [(p.stem, p.read_text()) for p in sorted(crash_folder.iterdir())]
    step = preprocess_items(items, workers=2, progress=False)
    assert [name for name, _ in step.items] == ["good0", "good1", "good2"]
    assert [(f.name, f.error) for f in step.failures] == [("nan_cell", "crashed the CIF parser, signal 11 (SIGSEGV)")]


class _Segfaulting:
    """A validator that kills its process on one CIF (stands in for a crash in C code)."""

    def check(self, cif, context):
        if "Cd" in cif:
            os.kill(os.getpid(), signal.SIGSEGV)
        return True


class _Hanging:
    """A validator that never returns (until the test releases it)."""

    release = threading.Event()

    def check(self, cif, context):
        while not self.release.wait(0.05):
            pass
        return True


def _register(plugin_manager, name, factory):
    from crystalforge import hookimpl

    class _Plugin:
        @staticmethod
        @hookimpl
        def register_validators(register):
            register(name, factory, description=f"test validator {name}")

    plugin_manager.register(_Plugin(), name=f"{name}-plugin")
    return plugin_manager


@pytest.mark.slow
def test_validate_and_evaluate_cli_survive_a_worker_killed_by_sigsegv(tmp_path, plugin_manager):
    from crystalforge.cif.postprocess import postprocess_cif
    from crystalforge.cif.preprocess import preprocess_cif

    _register(plugin_manager, "segfaulting", _Segfaulting)
    cifs = [(name, postprocess_cif(preprocess_cif(cif))) for name, cif in RAW[:2]]
    assert sum("Cd" in cif for _, cif in cifs) == 1
    write_cifs(tmp_path / "cifs", cifs)
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(tmp_path / "cifs"), "-j", "2", "--json", "--no-progress"],
                           obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)["results"]}
    crashed = [row for row in rows.values() if "error" in row]
    assert len(rows) == 2 and len(crashed) == 1
    assert crashed[0]["error"] == "crashed the CIF parser, signal 11 (SIGSEGV)"
    assert sum("segfaulting" in row for row in rows.values()) == 1
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "cifs"), "-o", str(tmp_path / "e.csv"), "--quiet"],
                           obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    assert "CIFs evaluated:                2" in result.output
    assert (tmp_path / "e.csv").read_text().count("crashed the CIF parser, signal 11") == 1


def test_evaluate_survives_a_nan_cell(tmp_path, plugin_manager):
    from crystalforge.evaluation.evaluate import evaluate_source

    write_cifs(tmp_path / "cifs", [("good", RAW[1][1]), ("nan", _set(RAW[0][1], "_cell_angle_alpha", "nan"))])
    result = evaluate_source(tmp_path / "cifs", plugin_manager=plugin_manager, progress=False)
    rows = {row["name"]: row for row in result.rows}
    assert rows["good"]["parsed"] is True
    assert rows["nan"]["parsed"] is False and "not a number" in rows["nan"]["error"]
    assert rows["nan"]["is_valid"] is False


# -- checks under a time limit --------------------------------------------------------------

def test_a_hanging_check_times_out_and_the_report_goes_on(plugin_manager):
    from crystalforge.validation.report import validate

    _register(plugin_manager, "hanging", _Hanging)
    _Hanging.release.clear()
    cif = RAW[1][1]
    try:
        start = time.monotonic()
        report = validate(cif, plugin_manager=plugin_manager, timeout=0.5)
        assert time.monotonic() - start < 20
        assert report.checks["hanging"].passed is False
        assert report.checks["hanging"].message == "timed out after 0.5 s"
        assert report.checks["cell_sanity"].passed is True  # the other checks ran
        start = time.monotonic()
        again = validate(cif, plugin_manager=plugin_manager, timeout=0.5)
        assert time.monotonic() - start < 20
        assert "timed out" in again.checks["hanging"].message
    finally:
        _Hanging.release.set()


def test_validate_cli_with_a_hanging_plugin_finishes(tmp_path, plugin_manager):
    _register(plugin_manager, "hanging", _Hanging)
    _Hanging.release.clear()
    write_cifs(tmp_path / "cifs", RAW[:3])
    try:
        start = time.monotonic()
        result = CliRunner().invoke(cli, ["validate", str(tmp_path / "cifs"), "--check-timeout", "0.5",
                                          "--require", "hanging", "--no-progress"],
                                    obj={"plugin_manager": plugin_manager})
        assert time.monotonic() - start < 60
    finally:
        _Hanging.release.set()
    assert result.exit_code == 0, result.output
    assert "0/3 valid" in result.output and "hanging: timed out after 0.5 s" in result.output


# -- compositions -----------------------------------------------------------------------------

@pytest.mark.parametrize("composition, expected", [
    ("Ca1e9Ti", "exponent notation"),
    ("CaTi1E3O3", "exponent notation"),
    ("Ca0Ti1O3", "zero count of Ca"),
    ("Fe0.5O", "fractional count of Fe"),
    ("Ca1000TiO3", "more than the 1,000"),
    ("Ca9999999", "more than the 1,000"),
    ("Ca(OH)0", "zero count"),
    ("2CaO", "follows no element"),
    ("Ca)O(", "cannot read composition"),
    ("Ca-1O", "malformed"),
    ("", "empty composition"),
])
def test_bad_compositions_are_refused_before_work(composition, expected):
    from crystalforge.cif.prompt import make_prompt
    from crystalforge.generation.prompts import make_spec

    with pytest.raises(CompositionError, match=expected):
        make_prompt(composition)
    with pytest.raises(CompositionError, match=expected):
        make_spec(composition, "Pm-3m")
    result = CliRunner().invoke(cli, ["prompt", composition])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1


def test_good_compositions_and_z_bound():
    from crystalforge.cif.prompt import make_prompt

    assert make_prompt("Ca(OH)2") == "data_Ca1H2O2\n"
    assert make_prompt("Sr2 Ti2 O6") == "data_Sr2Ti2O6\n"
    assert make_prompt("NaCl2.0") == "data_Na1Cl2\n"
    assert make_prompt("NaCl", z=4) == "data_Na4Cl4\n"
    with pytest.raises(CompositionError, match="2,000,000 atoms"):
        make_prompt("NaCl", z=10**6)


# -- checkpoints are judged from their shapes before anything is allocated -------------------

def _tiny_checkpoint(path, **claims):
    import torch

    from crystalforge.model.gpt import GPT, GPTConfig

    config = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=371)
    args = dict(config.to_dict(), **claims)
    torch.save({"model": GPT(config).state_dict(), "model_args": args}, path)
    return path


HUGE_CLAIMS = [
    ({"n_layer": 4000, "n_embd": 4096, "n_head": 32}, "claim 4,000 layers, its weights hold 1"),
    ({"n_embd": 65536, "n_head": 2}, "has shape (371, 8), model_args imply (371, 65536)"),
    ({"block_size": 10**9}, "transformer.wpe.weight has shape (8, 8)"),
]


def test_a_checkpoint_claiming_a_huge_model_is_refused_before_allocation(tmp_path):
    """In a subprocess capped at 4 GiB of address space beyond what it has: building the
    claimed model first (the old order) dies with an allocation error, not CheckpointError."""
    paths = [str(_tiny_checkpoint(tmp_path / f"ckpt{i}.pt", **claims)) for i, (claims, _) in enumerate(HUGE_CLAIMS)]
    result = _python("""
        import json, resource, sys, time
        import torch
        from crystalforge.model.checkpoint import load_model
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 4 * 2**30, resource.RLIM_INFINITY))
        for path in json.loads(sys.stdin.read()):
            start = time.monotonic()
            try:
                load_model(path)
                print("LOADED")
            except BaseException as exc:
                text = str(exc).splitlines()[0] if str(exc) else ""
                print(type(exc).__name__, "|", text, "|", time.monotonic() - start)
    """, stdin=json.dumps(paths))
    assert result.returncode == 0, result.stderr[-500:]
    lines = result.stdout.strip().splitlines()[-len(HUGE_CLAIMS):]
    for line, (_, expected) in zip(lines, HUGE_CLAIMS):
        kind, message, seconds = line.split(" | ")
        assert kind == "CheckpointError" and expected in message, line
        assert float(seconds) < 5


# -- temp files left by kill -9 are removed when a run folder is resumed ---------------------

def _killed_mid_write(folder) -> None:
    """A real process killed with SIGKILL inside the atomic writer, as ``kill -9`` would."""
    result = _python(f"""
        import os, signal
        from crystalforge.cif.io import atomic_writer
        with atomic_writer({str(folder / "Na1Cl1_any_0.cif")!r}) as handle:
            handle.write(b"half a CIF")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert result.returncode == -signal.SIGKILL


def test_temp_files_of_a_killed_writer_are_recognizable_and_removed(tmp_path):
    from crystalforge.cif.io import TEMP_SUFFIX, remove_stale_temp_files

    _killed_mid_write(tmp_path)
    (tmp_path / ".user-notes.tmp").write_text("not ours")
    left = [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert len(left) == 1 and left[0].name.startswith(".Na1Cl1_any_0.cif.")
    assert remove_stale_temp_files(tmp_path) == left
    assert sorted(p.name for p in tmp_path.iterdir()) == [".user-notes.tmp"]


def test_temp_files_of_a_live_writer_stay(tmp_path):
    """A writer still at work (here: this process, as the web server's status thread) keeps its file."""
    from crystalforge.cif.io import atomic_writer, remove_stale_temp_files

    with atomic_writer(tmp_path / "web.json") as handle:
        handle.write(b"{}")
        assert remove_stale_temp_files(tmp_path) == []
    assert (tmp_path / "web.json").read_bytes() == b"{}"


def test_resumed_run_removes_temp_files_left_by_kill_9(cf_tiny_model, plugin_manager, tmp_path):
    from crystalforge.cif.io import TEMP_SUFFIX

    out = tmp_path / "out"
    args = ["run", "NaCl", "-n", "1", "--model", str(cf_tiny_model), "--out", str(out), "--device", "cpu",
            "--no-progress", "-O", "max_new_tokens=40"]
    assert CliRunner().invoke(cli, args, obj={"plugin_manager": plugin_manager}).exit_code == 0
    _killed_mid_write(out)
    assert any(p.name.endswith(TEMP_SUFFIX) for p in out.iterdir())
    result = CliRunner().invoke(cli, [*args[:3], "2", *args[4:]], obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    assert not any(p.name.endswith(TEMP_SUFFIX) for p in out.iterdir())
    assert (out / "Na1Cl1_any_1.cif").is_file()


# -- a ZMQ scorer with no server is reported within seconds ----------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zmq_scorer_without_a_server_fails_fast_with_one_clear_error():
    from crystalforge.errors import ScorerError
    from crystalforge.scoring.zmq_client import ZMQScorer

    client = ZMQScorer(port=_free_port())  # the default 30 s per request
    try:
        start = time.monotonic()
        with pytest.raises(ScorerError, match=r"no scoring server at tcp://127.0.0.1:\d+ \(connection refused\)"):
            client.score_many(["data_x\n"])
        assert time.monotonic() - start < 7
        assert client.stats["requests"] == 0
    finally:
        client.close()


def test_zmq_probe_sees_a_plain_tcp_listener_is_no_zmq_server():
    import socket

    from crystalforge.errors import ScorerError
    from crystalforge.scoring.zmq_client import ZMQScorer

    with socket.socket() as listener:  # accepts connections but never speaks ZeroMQ
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = ZMQScorer(port=listener.getsockname()[1], probe_timeout=1.0)
        try:
            start = time.monotonic()
            with pytest.raises(ScorerError, match="no ZeroMQ handshake within 1 s"):
                client.check_alive()
            assert time.monotonic() - start < 4
        finally:
            client.close()


def test_zmq_probe_passes_with_a_live_server_and_sends_nothing():
    from crystalforge.scoring.random import RandomScorer
    from crystalforge.scoring.server import ScorerServer
    from crystalforge.scoring.zmq_client import ZMQScorer

    with ScorerServer(RandomScorer(seed=1), port=0) as server:
        client = ZMQScorer(port=server.port, timeout=5)
        try:
            client.check_alive()
            assert server.requests == 0
            assert len(client.score_many(["a", "b"])) == 2 and server.requests == 2
        finally:
            client.close()


def test_run_with_a_dead_zmq_scorer_stops_before_generating(cf_tiny_model, plugin_manager, tmp_path):
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["run", "NaCl", "-n", "2", "--model", str(cf_tiny_model), "--out",
                                      str(tmp_path / "out"), "--device", "cpu", "--no-progress", "--scorer", "zmq",
                                      "--scorer-opt", f"port={_free_port()}"], obj={"plugin_manager": plugin_manager})
    assert time.monotonic() - start < 15
    assert result.exit_code == 1
    assert "no scoring server at tcp://127.0.0.1" in result.output and len(result.output.strip().splitlines()) == 1


class _AlwaysSegfaulting:
    """A validator whose every call kills its process (a crash in C code on every CIF)."""

    def check(self, cif, context):
        os.kill(os.getpid(), signal.SIGSEGV)


class _HangingAlways:
    """A validator plugin whose check never returns (until the test releases it)."""

    release = threading.Event()

    def check(self, cif, context):
        self.release.wait()
        return True


def test_run_validation_workers_survive_a_segfault(cf_tiny_model, plugin_manager):
    from crystalforge import generate

    _register(plugin_manager, "segv", _AlwaysSegfaulting)
    start = time.monotonic()
    candidates = generate("NaCl", n=3, model=str(cf_tiny_model), plugin_manager=plugin_manager, workers=2,
                          search_options={"max_new_tokens": 40})
    assert time.monotonic() - start < 120
    assert len(candidates) == 3
    for candidate in candidates:
        assert candidate.report.checks["segv"].message == "crashed the CIF parser, signal 11 (SIGSEGV)"
        assert not candidate.is_valid


def test_run_with_a_hanging_validator_goes_on(cf_tiny_model, plugin_manager, monkeypatch):
    from crystalforge import generate

    monkeypatch.setenv("CRYSTALFORGE_CHECK_TIMEOUT", "0.5")
    _register(plugin_manager, "stuck", _HangingAlways)
    _HangingAlways.release.clear()
    try:
        start = time.monotonic()
        candidates = generate("NaCl", n=3, model=str(cf_tiny_model), plugin_manager=plugin_manager,
                              search_options={"max_new_tokens": 40})
        assert time.monotonic() - start < 60
    finally:
        _HangingAlways.release.set()
    messages = [c.report.checks["stuck"].message for c in candidates]
    assert len(messages) == 3 and messages[0] == "timed out after 0.5 s"
    assert all("timed out" in m for m in messages)  # later ones: the abandoned call still runs
    assert all(c.report.checks["formula_consistency"].message for c in candidates)  # the rest ran


def test_an_oversized_file_is_not_read_and_fails_alone(tmp_path):
    from crystalforge.cif.io import iter_cifs, read_text_file
    from crystalforge.cif.safety import MAX_CIF_CHARS

    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "good.cif").write_text(RAW[0][1])
    with open(folder / "huge.cif", "wb") as handle:  # sparse: 4 MB + 1 of zeros on disk for free
        handle.truncate(4 * MAX_CIF_CHARS + 1)
    with pytest.raises(CIFError, match="more than a CIF may be"):
        read_text_file(folder / "huge.cif")
    assert [(name, bool(text)) for name, text in iter_cifs(folder)] == [("good", True), ("huge", False)]
