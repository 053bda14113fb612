"""The README works as written, in order: every command of its code blocks runs, as a new
user would type it, in one fresh folder (only the repository's ``tests/data`` and
``configs`` are there, as in a clone). Each command's wall time is printed, a transcript
the docs can quote (``pytest -s tests/test_readme.py``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: commands not run, and why
SKIPPED = {
    "make run": "sets up .venv and installs everything: done before the tests run",
    "make test": "runs this very test suite",
    "source .venv/bin/activate": "the test runs the interpreter the tests run in",
}
#: commands that serve until stopped: started, checked to answer, then stopped
SERVERS = {"crystalforge serve": "http://127.0.0.1:8000/api/runs"}
#: per command (the CPU of a busy CI machine)
COMMAND_TIMEOUT = 1800


def readme_blocks() -> list[tuple[str, str]]:
    """Return ``(language, text)`` of every fenced code block of the README, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", README.read_text(), re.S | re.M)]


def readme_steps() -> list[tuple[str, str]]:
    """Return the README's steps in order: ``("shell", command)`` or ``("python", code)``."""
    steps = []
    for language, text in readme_blocks():
        if language == "python":
            steps.append(("python", text))
        elif language in ("bash", "sh", "console", ""):
            for line in text.splitlines():
                command = re.split(r"\s+#", " " + line, maxsplit=1)[0].strip()
                if command:
                    steps.append(("shell", command))
    return steps


def test_readme_has_the_steps_this_test_expects():
    commands = [text for kind, text in readme_steps() if kind == "shell"]
    assert commands[:2] == ["make run", "make test"]
    assert any(c.endswith("&") for c in commands) and "kill %1" in commands  # the served scorer is stopped
    assert sum(kind == "python" for kind, _ in readme_steps()) >= 2
    for command in commands:
        assert command in SKIPPED or command.startswith("crystalforge ") or command == "kill %1", command
    # every MCTS line runs with a scorer it can reach: a local one, or the one served just before
    served = False
    for command in commands:
        served = served or command.startswith("crystalforge scorer serve")
        served = served and command != "kill %1"
        if "--search puct" in command or "--search uct" in command:
            assert "--scorer random" in command or ("--scorer zmq" in command and served), command


def _shell(command: str) -> str:
    return re.sub(r"^crystalforge\b", f"{shlex.quote(sys.executable)} -m crystalforge", command)


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """Return the server's first stderr line holding ``needle`` (fail after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return line
    pytest.fail(f"server never said {needle!r}: {''.join(seen)[-2000:]}")


def _wait_for_url(url: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} never answered")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_every_readme_command_runs_in_order_in_a_fresh_folder(tmp_path):
    for shared in ("tests/data", "configs"):
        (tmp_path / shared).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / shared).symlink_to(REPO / shared, target_is_directory=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    transcript: list[tuple[str, float, str]] = []
    background: list[subprocess.Popen] = []
    try:
        for kind, text in readme_steps():
            shown = text if kind == "shell" else "python: " + text.strip().splitlines()[-1][:60]
            if kind == "shell" and text in SKIPPED:
                transcript.append((shown, 0.0, f"skipped: {SKIPPED[text]}"))
                continue
            start = time.monotonic()
            if kind == "shell" and text.endswith("&"):
                proc = subprocess.Popen(["bash", "-c", "exec " + _shell(text[:-1].strip())], cwd=tmp_path, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                background.append(proc)
                line = _wait_for_line(proc, "Serving", 120)
                transcript.append((shown, time.monotonic() - start, line.strip()))
                continue
            if kind == "shell" and text == "kill %1":
                _stop(background.pop(0))
                transcript.append((shown, time.monotonic() - start, "stopped"))
                continue
            server = next((url for prefix, url in SERVERS.items() if text.startswith(prefix + " ")), None)
            if kind == "shell" and server is not None:
                proc = subprocess.Popen(["bash", "-c", "exec " + _shell(text)], cwd=tmp_path, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                try:
                    body = _wait_for_url(server, proc, 120)
                finally:
                    _stop(proc)
                transcript.append((shown, time.monotonic() - start, f"answered {server}: {body[:80]}"))
                continue
            args = ["bash", "-c", _shell(text)] if kind == "shell" else [sys.executable, "-c", text]
            result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=COMMAND_TIMEOUT)
            seconds = time.monotonic() - start
            last = (result.stdout.strip().splitlines() or [""])[-1]
            transcript.append((shown, seconds, f"exit {result.returncode}: {last[:100]}"))
            assert result.returncode == 0, f"{text}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, result.stderr[-3000:]
    finally:
        for proc in background:
            _stop(proc)
        print("\nREADME transcript (wall seconds, command, last line):")
        for shown, seconds, outcome in transcript:
            print(f"{seconds:8.1f}s  {shown}\n           -> {outcome}")
    assert (tmp_path / "out" / "perovskites" / "summary.csv").is_file()
    assert (tmp_path / "out" / "tiny" / "ckpt.pt").is_file()
    assert len(list((tmp_path / "generated").iterdir())) >= 5  # each run without -o got its own folder
