"""Host any scorer behind CrystaLLM's ZeroMQ REQ/REP string protocol.

:class:`ScorerServer` is a library class: ``serve()`` blocks (the CLI runs it in the main
thread and stops it from a signal handler), ``start()`` runs it in a background thread
(tests, notebooks). Every request gets exactly one reply, so a client is never left
hanging by a bad message: anything that cannot be scored (not UTF-8, multipart, over
``max_bytes``, unparsable CIF, scorer exception) is answered ``nan``.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import attrs

from ..errors import ScorerError

logger = logging.getLogger(__name__)

NAN_REPLY = b"nan"


def format_score(value: float) -> bytes:
    """Return the protocol reply for ``value``: its shortest round-trip string, ``nan`` if not finite-or-inf."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return NAN_REPLY
    if math.isnan(value):
        return NAN_REPLY
    return repr(value).encode()


@attrs.define
class ScorerServer:
    """Serve ``scorer`` on ``tcp://host:port`` (REP socket) until :meth:`stop`.

    ``port=0`` binds a free port; :attr:`port` holds the bound one once :attr:`ready` is set.
    """

    scorer: Any
    host: str = "127.0.0.1"
    port: int = 5555
    max_bytes: int = 10_000_000
    poll_ms: int = 100
    ready: threading.Event = attrs.field(factory=threading.Event, init=False)
    listening: bool = attrs.field(default=False, init=False)
    requests: int = attrs.field(default=0, init=False)
    failures: int = attrs.field(default=0, init=False)
    _stop: threading.Event = attrs.field(factory=threading.Event, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)
    _error: BaseException | None = attrs.field(default=None, init=False)

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def _bind(self, socket: Any) -> None:
        import zmq

        try:
            if self.port == 0:
                self.port = socket.bind_to_random_port(f"tcp://{self.host}")
            else:
                socket.bind(self.endpoint)
        except zmq.ZMQError as exc:
            raise ScorerError(
                f"Cannot listen on {self.endpoint}: {exc}; choose another --port or --host"
            ) from None

    def handle(self, frames: list[bytes]) -> bytes:
        """Return the reply to one request given as its message frames (never raises)."""
        if len(frames) != 1:
            logger.warning("refused a multipart request (%d frames)", len(frames))
            return NAN_REPLY
        payload = frames[0]
        if len(payload) > self.max_bytes:
            logger.warning("refused a %d-byte request (limit %d)", len(payload), self.max_bytes)
            return NAN_REPLY
        try:
            cif = payload.decode("utf-8")
        except UnicodeDecodeError:
            logger.warning("refused a request that is not UTF-8 text")
            return NAN_REPLY
        try:
            value = self.scorer.score(cif)
        except Exception as exc:  # the scorer's failure on one CIF must not stop the server
            logger.warning("scorer failed on a request: %s: %s", type(exc).__name__, exc)
            return NAN_REPLY
        return format_score(value)

    def serve(self) -> None:
        """Bind and answer requests until :meth:`stop` is called.

        Raises:
            ScorerError: the address cannot be bound.
        """
        import zmq

        context = zmq.Context()
        socket = context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            self._bind(socket)
            self.listening = True
            self.ready.set()
            logger.info("serving scorer on %s", self.endpoint)
            while not self._stop.is_set():
                if not socket.poll(self.poll_ms, zmq.POLLIN):
                    continue
                frames = socket.recv_multipart()
                self.requests += 1
                reply = self.handle(frames)
                if reply == NAN_REPLY:
                    self.failures += 1
                socket.send(reply)
        finally:
            self.listening = False
            socket.close(linger=0)
            context.term()
            self.ready.set()  # unblock start() if binding failed

    def start(self, timeout: float = 10.0) -> "ScorerServer":
        """Serve in a daemon thread; return once listening (``self.port`` is the bound port).

        Raises:
            ScorerError: the address cannot be bound or the thread did not start in time.
        """

        def run() -> None:
            try:
                self.serve()
            except BaseException as exc:  # reported to the starting thread
                self._error = exc

        self._stop.clear()
        self.ready.clear()
        self._thread = threading.Thread(target=run, name="crystalforge-scorer-server", daemon=True)
        self._thread.start()
        if not self.ready.wait(timeout):
            raise ScorerError(f"Scorer server on {self.endpoint} did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the serving loop to finish; join its thread when started with :meth:`start`."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "ScorerServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
