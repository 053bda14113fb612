"""The ZMQ scorer client and server, over real sockets on 127.0.0.1 and real processes."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import zmq
from click.testing import CliRunner

from crystalforge.cli import cli
from crystalforge.errors import ScorerError
from crystalforge.scoring.base import Scorer
from crystalforge.scoring.random import RandomScorer
from crystalforge.scoring.server import ScorerServer
from crystalforge.scoring.zmq_client import ZMQScorer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowOnRequest(Scorer):
    """Sleeps on CIFs containing 'slow' (to outlast a client timeout), else scores their length."""

    def score(self, cif: str) -> float:
        if "slow" in cif:
            time.sleep(0.6)
        if "boom" in cif:
            raise RuntimeError("scorer crashed")
        return float(len(cif))


class RawReplyServer:
    """A bare REP socket answering every request with a fixed reply (a misbehaving server)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REP)
        self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            if self.socket.poll(50):
                self.socket.recv()
                self.socket.send(self.reply)
        self.socket.close(linger=0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.context.term()


def test_client_against_in_process_server(perov_raw):
    cif = perov_raw[0][1]
    with ScorerServer(RandomScorer(seed=3), port=0) as server:
        client = ZMQScorer(port=server.port, timeout=5)
        try:
            assert client.score(cif) == RandomScorer(seed=3).score(cif)
            assert client.score_many([cif, cif]) == [client.score(cif)] * 2
        finally:
            client.close()
    assert server.requests == 4


def test_dead_server_times_out_then_socket_is_rebuilt():
    port = free_port()
    client = ZMQScorer(port=port, timeout=0.2, retries=1)
    try:
        start = time.monotonic()
        assert math.isnan(client.score("anything"))
        assert time.monotonic() - start < 3
        assert client.stats["timeouts"] == 2  # the first try and one retry
        # the server comes up on that port: the rebuilt socket gets a real answer
        with ScorerServer(RandomScorer(), port=port):
            client.timeout = 5
            assert 0 <= client.score("anything") < 1
    finally:
        client.close()


def test_slow_server_late_reply_is_not_mistaken_for_the_next_one():
    with ScorerServer(SlowOnRequest(), port=0) as server:
        client = ZMQScorer(port=server.port, timeout=0.2)
        try:
            assert math.isnan(client.score("slow one"))
            client.timeout = 5
            assert client.score("abc") == 3.0  # not the late answer to "slow one"
        finally:
            client.close()


def test_garbage_and_nan_replies_score_nan():
    for reply, counter in ((b"hello", "unparsable"), (b"nan", "nan")):
        server = RawReplyServer(reply)
        client = ZMQScorer(port=server.port, timeout=2)
        try:
            assert math.isnan(client.score("x"))
            assert client.stats[counter] == 1 and client.stats["timeouts"] == 0
        finally:
            client.close()
            server.close()


def test_client_gives_up_after_max_failures():
    client = ZMQScorer(port=free_port(), timeout=0.1, max_failures=2)
    try:
        client.score("a"), client.score("b")
        assert client.server_down
        start = time.monotonic()
        assert math.isnan(client.score("c"))
        assert time.monotonic() - start < 0.05
        assert client.stats["requests"] == 2
    finally:
        client.close()


def test_client_option_errors(plugin_manager):
    registry = plugin_manager.registry("scorer")
    with pytest.raises(Exception, match="timeout"):
        registry.create("zmq", timeout="0")
    with pytest.raises(Exception, match="port"):
        registry.create("zmq", port="70000")
    client = registry.create("zmq", port="6000", timeout="1.5")
    assert client.endpoint == "tcp://127.0.0.1:6000" and client.lower_is_better is True


def test_server_answers_bad_messages_with_nan_and_stays_up():
    with ScorerServer(SlowOnRequest(), port=0, max_bytes=100) as server:
        context = zmq.Context()
        try:
            def ask(*frames: bytes) -> bytes:
                sock = context.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(f"tcp://127.0.0.1:{server.port}")
                try:
                    sock.send_multipart(list(frames))
                    assert sock.poll(5000), "server did not answer"
                    return sock.recv()
                finally:
                    sock.close()

            assert ask(b"\xff\xfe not utf-8") == b"nan"
            assert ask(b"part one", b"part two") == b"nan"
            assert ask(b"x" * 101) == b"nan"
            assert ask(b"boom") == b"nan"  # the scorer raised
            # a DEALER without the REQ envelope: REP drops it, the server goes on
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(f"tcp://127.0.0.1:{server.port}")
            dealer.send(b"no envelope")
            dealer.close()
            assert ask("abcé".encode()) == b"4.0"
        finally:
            context.term()
    assert server.failures == 4


def test_server_port_in_use_is_one_clear_error():
    with ScorerServer(RandomScorer(), port=0) as server:
        with pytest.raises(ScorerError, match="Cannot listen on .*choose another --port"):
            ScorerServer(RandomScorer(), port=server.port).start()


def test_cli_serve_bad_input_is_one_line(plugin_manager):
    runner = CliRunner()
    obj = {"plugin_manager": plugin_manager}
    result = runner.invoke(cli, ["scorer", "serve", "--scorer", "randon"], obj=obj)
    assert result.exit_code == 1 and "Unknown scorer 'randon'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["scorer", "serve", "--scorer", "random", "--scorer-opt", "seed"], obj=obj)
    assert result.exit_code == 1 and "is not KEY=VALUE" in result.output
    with ScorerServer(RandomScorer(), port=0) as busy:
        result = runner.invoke(cli, ["scorer", "serve", "--scorer", "random", "--port", str(busy.port)], obj=obj)
    assert result.exit_code == 1 and "Cannot listen on" in result.output
    assert "Serving" not in result.output and "Traceback" not in result.output


def test_cli_score_files(plugin_manager, perov_raw, tmp_path):
    import json

    for name, cif in perov_raw[:2]:
        (tmp_path / f"{name}.cif").write_text(cif)
    result = CliRunner().invoke(cli, ["scorer", "score", str(tmp_path), "--scorer", "random", "--json"],
                                obj={"plugin_manager": plugin_manager})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 2 and all(0 <= r["score"] < 1 for r in rows)


def start_server_process(*args: str) -> tuple[subprocess.Popen, int]:
    """Start ``crystalforge scorer serve`` on a free port; return it and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crystalforge", "scorer", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    line = proc.stderr.readline()
    match = re.search(r"tcp://127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()}")
    return proc, int(match.group(1))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serve_process_answers_and_stops_on_signal(sig):
    proc, port = start_server_process("--scorer", "random", "--scorer-opt", "seed=5")
    try:
        client = ZMQScorer(port=port, timeout=10)
        assert client.score("some cif") == RandomScorer(seed=5).score("some cif")
        client.close()
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert "Stopped after 1 requests" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
