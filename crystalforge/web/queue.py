"""A bounded job queue: one generation at a time on the server's device, the rest waiting.

Submissions beyond ``max_queued`` waiting jobs are refused (:class:`QueueFull`, HTTP 429)
rather than piling up. A waiting job is cancelled at once; a running one stops after the
chunk it is generating (what it wrote stays in its run folder).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

import attrs

from ..errors import CrystalforgeError

logger = logging.getLogger(__name__)

#: job states; the last three are final
STATES = ("queued", "running", "done", "failed", "cancelled")


class QueueFull(CrystalforgeError):
    """Too many jobs are waiting."""


@attrs.define(eq=False)
class Job:
    """One submitted run: its id, state and live progress."""

    id: str
    total: int
    payload: Any = None
    status: str = "queued"
    error: str | None = None
    done: int = 0
    valid: int = 0
    submitted_at: float = attrs.field(factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cancel_event: threading.Event = attrs.field(factory=threading.Event)
    changed: int = 0  # bumped on every change, so watchers know when to send an event

    @property
    def final(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    def progress(self) -> dict[str, Any]:
        """Return structures done, valid so far and the rate (structures/s while running)."""
        end = self.finished_at or time.time()
        elapsed = (end - self.started_at) if self.started_at else 0.0
        return {"done": self.done, "total": self.total, "valid": self.valid,
                "rate": round(self.done / elapsed, 3) if elapsed > 0 and self.done else 0.0,
                "elapsed": round(elapsed, 2)}


class JobQueue:
    """Run jobs one at a time in a worker thread with ``execute(job)``; keep at most ``max_queued`` waiting."""

    def __init__(self, execute: Callable[[Job], None], max_queued: int = 8,
                 on_final: Callable[[Job], None] | None = None) -> None:
        self._execute = execute
        self._on_final = on_final
        self.max_queued = max_queued
        self._jobs: dict[str, Job] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._loop, name="crystalforge-jobs", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Job:
        """Queue ``job``.

        Raises:
            QueueFull: ``max_queued`` jobs are already waiting.
        """
        with self._lock:
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(f"the queue is full ({self.max_queued} runs waiting); try again when one has finished")
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """Return how many jobs wait before ``job`` (0: next), or None when it is not waiting."""
        with self._lock:
            for i, waiting in enumerate(self._waiting):
                if waiting is job:
                    return i
        return None

    def counts(self) -> dict[str, int]:
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.status == "running")
            return {"running": running, "queued": len(self._waiting), "max_queued": self.max_queued}

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a waiting or running job; return it (None when unknown). Final jobs stay as they are."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.final:
                return job
            job.cancel_event.set()
            if job.status == "queued":
                self._waiting.remove(job)
                job.status = "cancelled"
                job.finished_at = time.time()
                job.changed += 1
                finished = job
            else:
                finished = None
        if finished is not None and self._on_final is not None:
            self._on_final(finished)
        return job

    def update(self, job: Job, **changes: Any) -> None:
        """Set job fields under the lock and mark the job changed."""
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            job.changed += 1
            self._lock.notify_all()

    def wait_changed(self, job: Job, seen: int, timeout: float) -> int:
        """Block until ``job.changed`` differs from ``seen`` (or ``timeout``); return the current value."""
        with self._lock:
            self._lock.wait_for(lambda: job.changed != seen or self._stopping, timeout=timeout)
            return job.changed

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the worker (the running job stops after its chunk)."""
        with self._lock:
            self._stopping = True
            for job in list(self._waiting):
                job.cancel_event.set()
            for job in self._jobs.values():
                job.cancel_event.set()
            self._lock.notify_all()
        self._worker.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._waiting or self._stopping)
                if self._stopping:
                    return
                job = self._waiting.popleft()
                job.status = "running"
                job.started_at = time.time()
                job.changed += 1
                self._lock.notify_all()
            try:
                self._execute(job)
                status, error = "done", None
            except CrystalforgeError as exc:
                status = "cancelled" if job.cancel_event.is_set() else "failed"
                error = None if status == "cancelled" else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - one job's bug must not stop the server
                logger.exception("job %s failed", job.id)
                status, error = "failed", f"unexpected {type(exc).__name__}: {exc}".splitlines()[0][:300]
            self.update(job, status=status, error=error, finished_at=time.time())
            if self._on_final is not None:
                try:
                    self._on_final(job)
                except Exception:  # noqa: BLE001
                    logger.exception("recording the end of job %s failed", job.id)
