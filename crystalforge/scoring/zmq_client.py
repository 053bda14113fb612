"""Score CIFs with a remote server over ZeroMQ REQ/REP (CrystaLLM's scoring protocol).

One request is one CIF sent as a UTF-8 string; the reply is the score as a string float,
``nan`` when the server could not score it. Timeouts are the client's job: a REQ socket
whose request timed out is stuck in its send/receive state machine, so it is closed
(linger 0, nothing queued survives) and a fresh one is connected for the next request.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import attrs

from ..errors import OptionError
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
