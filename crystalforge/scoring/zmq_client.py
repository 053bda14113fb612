"""Score CIFs with a remote server over ZeroMQ REQ/REP (CrystaLLM's scoring protocol).

One request is one CIF sent as a UTF-8 string; the reply is the score as a string float,
``nan`` when the server could not score it. Timeouts are the client's job: a REQ socket
whose request timed out is stuck in its send/receive state machine, so it is closed
(linger 0, nothing queued survives) and a fresh one is connected for the next request.

A REQ socket connects lazily, so a server that is not there looks like a slow one: each
request would wait its full ``timeout``. :meth:`ZMQScorer.check_alive` (called by
``generate``/``run`` before any work, and by :meth:`ZMQScorer.score_many` on first use)
watches the connection's ZeroMQ handshake for ``probe_timeout`` seconds without sending
a request, and raises :class:`ScorerError` when no ZeroMQ server answers.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import attrs

from ..errors import OptionError, ScorerError
from .base import Scorer, parse_score

logger = logging.getLogger(__name__)


@attrs.define
class ZMQScorer(Scorer):
    """Ask a ZeroMQ REP server for each CIF's score (e.g. CrystaLLM's ALIGNN server).

    Never raises on a dead, slow or garbage-answering server: a timeout, a ``nan`` reply
    or an unparsable reply scores ``nan`` (logged). After ``max_failures`` consecutive
    timeouts the server is considered down and later calls return ``nan`` at once.
    """

    host: str = attrs.field(default="127.0.0.1", metadata={"help": "server host"})
    port: int = attrs.field(default=5555, metadata={"help": "server port"})
    timeout: float = attrs.field(default=30.0, metadata={"help": "seconds to wait for each reply"})
    retries: int = attrs.field(default=0, metadata={"help": "extra attempts after a timeout"})
    max_failures: int = attrs.field(
        default=10,
        metadata={"help": "consecutive timeouts after which the server is deemed down (0: never)"},
    )
    lower_is_better: bool = attrs.field(
        default=True, metadata={"help": "whether lower scores are better (energies: true)"}
    )
    unit: str = attrs.field(
        default="", metadata={"help": "unit of the server's scores, shown beside them (CrystaLLM's ALIGNN server: "
                                      "eV/atom, formation energy per atom); the protocol cannot say"},
    )
    probe_timeout: float = attrs.field(
        default=5.0, metadata={"help": "seconds a server has to complete the ZeroMQ handshake on first use (0: no check)"},
    )
    _alive: bool = attrs.field(default=False, init=False, repr=False)
    _context: Any = attrs.field(default=None, init=False, repr=False)
    _socket: Any = attrs.field(default=None, init=False, repr=False)
    _consecutive_timeouts: int = attrs.field(default=0, init=False, repr=False)
    #: counters for reports: requests sent, timeouts, nan/garbage replies
    stats: dict[str, int] = attrs.field(
        factory=lambda: {"requests": 0, "timeouts": 0, "nan": 0, "unparsable": 0},
        init=False, metadata={"option": False},
    )

    def __attrs_post_init__(self) -> None:
        if self.timeout <= 0:
            raise OptionError(f"Option 'timeout' must be positive seconds, got {self.timeout}")
        if self.retries < 0:
            raise OptionError(f"Option 'retries' must be >= 0, got {self.retries}")
        if not 0 < self.port < 65536:
            raise OptionError(f"Option 'port' must be in 1..65535, got {self.port}")
        if self.probe_timeout < 0:
            raise OptionError(f"Option 'probe_timeout' must be >= 0 seconds, got {self.probe_timeout}")

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def server_down(self) -> bool:
        """Whether ``max_failures`` consecutive timeouts made the client stop asking."""
        return 0 < self.max_failures <= self._consecutive_timeouts

    def _connect(self) -> Any:
        import zmq

        if self._context is None:
            self._context = zmq.Context()
        if self._socket is None:
            socket = self._context.socket(zmq.REQ)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(self.endpoint)
            self._socket = socket
        return self._socket

    def check_alive(self) -> None:
        """Raise :class:`ScorerError` unless a ZeroMQ server at :attr:`endpoint` completes the
        connection handshake within ``probe_timeout`` seconds (no request is sent, so the
        server scores nothing). Succeeds at once after one success, or when the timeout is 0.
        """
        if self._alive or self.probe_timeout == 0:
            return
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        if self._context is None:
            self._context = zmq.Context()
        probe = self._context.socket(zmq.REQ)
        probe.setsockopt(zmq.LINGER, 0)
        events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CLOSED
        monitor = probe.get_monitor_socket(events)
        refused = False
        try:
            probe.connect(self.endpoint)
            deadline = time.monotonic() + self.probe_timeout
            while (remaining := deadline - time.monotonic()) > 0:
                if not monitor.poll(max(1, int(remaining * 1000))):
                    break
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._alive = True
                    return
                refused = refused or event == zmq.EVENT_CONNECT_RETRIED
        finally:
            probe.disable_monitor()
            monitor.close(linger=0)
            probe.close(linger=0)
        why = "connection refused" if refused else f"no ZeroMQ handshake within {self.probe_timeout:g} s"
        raise ScorerError(f"no scoring server at {self.endpoint} ({why}); start one with "
                          f"`crystalforge scorer serve --port {self.port}` or fix --scorer-opt host/port")

    def score_many(self, cifs) -> list[float]:
        """Return one score per CIF, in order; checks first that the server is there.

        Raises:
            ScorerError: no server answered the liveness check (:meth:`check_alive`).
        """
        self.check_alive()
        return [self.score(cif) for cif in cifs]

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _request(self, cif: str) -> str | None:
        """Send one request; return the reply text, or ``None`` on timeout."""
        import zmq

        socket = self._connect()
        self.stats["requests"] += 1
        try:
            socket.send(cif.encode("utf-8", "replace"), flags=zmq.NOBLOCK)
        except zmq.Again:
            self._drop_socket()
            return None
        deadline = time.monotonic() + self.timeout
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if socket.poll(remaining_ms, zmq.POLLIN):
                frames = socket.recv_multipart()
                return b"".join(frames).decode("utf-8", "replace")
            if time.monotonic() >= deadline:
                self._drop_socket()  # a REQ socket that timed out cannot send again
                return None

    def score(self, cif: str) -> float:
        """Return the server's score for ``cif``; ``nan`` on timeout, ``nan`` or garbage reply."""
        if self.server_down:
            return math.nan
        for attempt in range(self.retries + 1):
            reply = self._request(cif)
            if reply is None:
                self.stats["timeouts"] += 1
                self._consecutive_timeouts += 1
                logger.warning(
                    "scorer server %s did not answer within %.3g s (attempt %d of %d)",
                    self.endpoint, self.timeout, attempt + 1, self.retries + 1,
                )
                if self.server_down:
                    logger.error(
                        "scorer server %s timed out %d times in a row: treating it as down, "
                        "remaining candidates score nan", self.endpoint, self._consecutive_timeouts,
                    )
                    return math.nan
                continue
            self._consecutive_timeouts = 0
            value = parse_score(reply)
            if math.isnan(value):
                if reply.strip().lower() == "nan":
                    self.stats["nan"] += 1
                    logger.info("scorer server %s could not score a CIF (nan)", self.endpoint)
                else:
                    self.stats["unparsable"] += 1
                    logger.warning(
                        "scorer server %s sent an unparsable reply %r", self.endpoint, reply[:80]
                    )
            return value
        return math.nan

    def close(self) -> None:
        """Close the socket and the ZeroMQ context (idempotent)."""
        self._drop_socket()
        if self._context is not None:
            self._context.term()
            self._context = None

    def __del__(self) -> None:  # best effort: do not leave sockets behind
        try:
            self.close()
        except Exception:
            pass
