"""Multi-process map with a progress bar; one bad item, even one that kills its process,
fails alone instead of aborting or hanging the run.

Items run in worker processes this module starts and watches itself (a pipe and the
process sentinel per worker), one item in flight per worker. So when a worker dies --
SIGSEGV inside C code, the OOM killer, ``os._exit`` -- the item it held is known exactly:
it is reported failed (``"crashed the CIF parser, signal 11 (SIGSEGV)"``), a fresh worker
takes its place and the other items go on. ``multiprocessing.Pool`` cannot do this: it
waits for ever on a task whose worker died. An item that runs past ``timeout`` seconds
has its worker killed the same way.

``workers=1`` still runs the items in one child process (``isolate=True``, the default):
the pre-checks in :mod:`crystalforge.cif.safety` refuse every crashing input found so far,
but they are a list of known dangers, and a crash in the caller's own process would lose
the whole run. Passing items over a pipe costs well under a millisecond, small against
parsing a CIF. ``isolate=False`` keeps the old in-process loop for cheap, safe functions.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

#: completed results kept waiting for a slower earlier item, per worker, before the
#: parent stops handing out work (bounds memory; results are yielded in input order)
_REORDER_WINDOW_PER_WORKER = 16


def default_workers() -> int:
    """Return the number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


#: fewest items per worker process when the number of workers is chosen automatically:
#: starting a process costs about as much as validating a few CIFs
MIN_ITEMS_PER_WORKER = 4


def auto_workers(items: int, requested: int | None = None) -> int:
    """Return how many worker processes to use for ``items`` items of work.

    ``requested`` (a user's ``--workers``) is used as given, capped at the item count.
    ``None`` picks every CPU this process may use (shared out among the ranks of a
    ``torchrun`` on this node, ``LOCAL_WORLD_SIZE``), but no more than one worker per
    :data:`MIN_ITEMS_PER_WORKER` items: small jobs start one worker, or none where the
    caller runs a lone worker's items in-process.
    """
    if requested is not None:
        return max(1, min(int(requested), max(1, items)))
    cpus = default_workers()
    try:
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        ranks = 1
    cpus = max(1, cpus // max(1, ranks))
    return max(1, min(cpus, items // MIN_ITEMS_PER_WORKER))


def _call(args: tuple[Callable[[Any], Any], Any]) -> tuple[bool, Any]:
    function, item = args
    try:
        return True, function(item)
    except Exception as exc:  # one bad item must not end the run
        return False, f"{type(exc).__name__}: {exc}"


def describe_exit(exitcode: int | None, label: str = "the worker") -> str:
    """Return why a worker process ended, e.g. ``"crashed the worker, signal 11 (SIGSEGV)"``."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"crashed {label}, signal {-exitcode} ({name})"
    return f"crashed {label}, exit code {exitcode}"


def imap_progress(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    total: int | None = None,
    description: str = "",
    progress: bool = True,
    chunksize: int = 8,
    isolate: bool = True,
    timeout: float | None = None,
    crash_label: str = "the worker",
) -> Iterator[tuple[bool, R | str]]:
    """Yield ``(ok, result_or_error_message)`` for each item, in input order.

    An exception in one item becomes ``(False, "ExcType: message")``; a worker process
    that dies on an item gives ``(False, "crashed <crash_label>, signal 11 (SIGSEGV)")``;
    an item still running after ``timeout`` seconds gives ``(False, "timed out after N s")``.
    In every case the run goes on with a fresh worker and nothing waits for ever.

    Args:
        function: called once per item; inherited by forked workers (must be picklable,
            a module-level function, when ``CRYSTALFORGE_SPAWN`` asks for spawned ones).
        workers: worker processes (at least one when ``isolate``).
        isolate: run even a single worker in a child process (see the module docstring);
            ``False`` with ``workers <= 1`` runs in this process, where a crash is fatal.
        timeout: seconds one item may run before its worker is killed; ``None``: no limit.
        chunksize: accepted for compatibility; items go one at a time so that a crash or
            a timeout is pinned to its own item.
        crash_label: what a dead worker is said to have crashed (``"the CIF parser"``).

    Items and results cross a pipe, so both must be picklable. Worker processes use one
    torch/BLAS thread each so they do not oversubscribe CPUs.
    """
    del chunksize
    bar = tqdm(total=total, desc=description, unit="item", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 and not isolate:
            for item in items:
                yield _call((function, item))
                bar.update(1)
            return
        count = max(1, workers)
        if total is not None:
            count = max(1, min(count, total))
        for result in _WorkerPool(function, count, timeout, crash_label).run(items):
            yield result
            bar.update(1)
    finally:
        bar.close()


class _Worker:
    """One child process, its end of the pipe, and the item it holds (if any)."""

    def __init__(self, context, function: Callable[[Any], Any]) -> None:
        parent_end, child_end = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_end, function), daemon=True)
        self.process.start()
        child_end.close()
        self.connection = parent_end
        self.index: int | None = None
        self.started = 0.0

    def stop(self, kill: bool = False) -> None:
        if not kill and self.process.is_alive():
            try:
                self.connection.send(None)
            except (OSError, ValueError):
                kill = True
        if kill and self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=None if kill else 2.0)
        if self.process.is_alive():  # did not take the hint
            self.process.kill()
            self.process.join()
        self.connection.close()


class _WorkerPool:
    def __init__(self, function, count: int, timeout: float | None, crash_label: str) -> None:
        method = "spawn" if os.environ.get("CRYSTALFORGE_SPAWN") else "fork"
        self.context = multiprocessing.get_context(method)
        self.function = function
        self.count = count
        self.timeout = timeout
        self.crash_label = crash_label

    def run(self, items: Iterable[Any]) -> Iterator[tuple[bool, Any]]:
        source = enumerate(items)
        workers: list[_Worker] = []
        done: dict[int, tuple[bool, Any]] = {}
        next_out = 0
        exhausted = False
        window = _REORDER_WINDOW_PER_WORKER * self.count
        try:
            while True:
                # hand out work while there is some and the reorder window has room
                while not exhausted and len(done) < window:
                    idle = next((w for w in workers if w.index is None), None)
                    if idle is None and len(workers) < self.count:
                        idle = _Worker(self.context, self.function)
                        workers.append(idle)
                    if idle is None:
                        break
                    try:
                        index, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    self._send(idle, index, item, done, workers)
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                busy = [w for w in workers if w.index is not None]
                if not busy:
                    if exhausted:
                        return
                    continue
                self._collect(busy, done, workers)
        finally:
            for worker in workers:
                worker.stop(kill=worker.index is not None)

    def _send(self, worker: _Worker, index: int, item: Any, done: dict, workers: list[_Worker]) -> None:
        try:
            worker.connection.send((index, item))
        except (OSError, EOFError):  # the worker died while idle: replace it, try once more
            self._replace(worker, workers)
            worker = workers[-1]
            try:
                worker.connection.send((index, item))
            except (OSError, EOFError) as exc:
                done[index] = (False, f"could not reach a worker process: {exc}")
                return
        except Exception as exc:  # noqa: BLE001 - the item cannot be pickled
            done[index] = (False, f"item could not be sent to a worker: {type(exc).__name__}: {exc}")
            return
        worker.index = index
        worker.started = time.monotonic()

    def _collect(self, busy: list[_Worker], done: dict, workers: list[_Worker]) -> None:
        wait_for = None
        if self.timeout is not None:
            deadline = min(w.started for w in busy) + self.timeout
            wait_for = max(0.0, deadline - time.monotonic())
        handles = [w.connection for w in busy] + [w.process.sentinel for w in busy]
        ready = set(wait(handles, timeout=wait_for))
        for worker in busy:
            if worker.connection in ready or worker.process.sentinel in ready:
                message = None
                try:
                    if worker.connection.poll():
                        message = worker.connection.recv()
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    index, ok, value = message
                    done[index] = (ok, value)
                    worker.index = None
                    continue
                worker.process.join(timeout=5.0)
                done[worker.index] = (False, describe_exit(worker.process.exitcode, self.crash_label))
                self._replace(worker, workers)
            elif self.timeout is not None and time.monotonic() - worker.started >= self.timeout:
                done[worker.index] = (False, f"timed out after {self.timeout:g} s")
                self._replace(worker, workers)

    def _replace(self, worker: _Worker, workers: list[_Worker]) -> None:
        worker.stop(kill=True)
        workers.remove(worker)
        workers.append(_Worker(self.context, self.function))


def _worker_main(connection, function: Callable[[Any], Any]) -> None:
    """A worker's loop: receive ``(index, item)``, send ``(index, ok, value)``; ``None`` ends it."""
    _limit_threads()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, item = message
        try:
            ok, value = True, function(item)
        except BaseException as exc:  # noqa: BLE001 - SystemExit in an item fails that item only
            ok, value = False, f"{type(exc).__name__}: {exc}"
        try:
            connection.send((index, ok, value))
        except Exception as exc:  # noqa: BLE001 - a result that cannot be pickled
            connection.send((index, False, f"result could not be sent back: {type(exc).__name__}: {exc}"))


def _limit_threads() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")  # only when the parent already imported it
    if torch is not None:
        torch.set_num_threads(1)
