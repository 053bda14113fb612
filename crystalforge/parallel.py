"""Multi-process map with a progress bar, failures kept per item instead of aborting."""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any, Callable, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Return the number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _call(args: tuple[Callable[[Any], Any], Any]) -> tuple[bool, Any]:
    function, item = args
    try:
        return True, function(item)
    except Exception as exc:  # one bad item must not end the run
        return False, f"{type(exc).__name__}: {exc}"


def imap_progress(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    total: int | None = None,
    description: str = "",
    progress: bool = True,
    chunksize: int = 8,
) -> Iterator[tuple[bool, R | str]]:
    """Yield ``(ok, result_or_error_message)`` for each item, in input order.

    ``function`` must be picklable (a module-level function) when ``workers > 1``. An
    exception in one item becomes ``(False, "ExcType: message")`` and the run goes on.
    Worker processes use one torch/BLAS thread each so they do not oversubscribe CPUs.
    """
    bar = tqdm(total=total, desc=description, unit="item", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1:
            for item in items:
                yield _call((function, item))
                bar.update(1)
            return
        context = multiprocessing.get_context("spawn" if os.environ.get("CRYSTALFORGE_SPAWN") else "fork")
        with context.Pool(workers, initializer=_limit_threads) as pool:
            for result in pool.imap(_call, ((function, item) for item in items), chunksize=chunksize):
                yield result
                bar.update(1)
    finally:
        bar.close()


def _limit_threads() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")  # only when the parent already imported it
    if torch is not None:
        torch.set_num_threads(1)
