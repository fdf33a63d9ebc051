"""One way to run per-clip work over CPU cores with a progress bar."""

from __future__ import annotations

import os
from multiprocessing import get_context
from typing import Callable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def imap_progress(fn: Callable[[T], R], items: list[T], workers: int = 0, desc: str = "", progress: bool = True
                  ) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in completion order, over ``workers`` processes (0: all cores).

    Results stream back as they finish, so the caller can persist each one at once and an
    interrupted run loses at most the items in flight.
    """
    workers = workers or default_workers()
    bar = tqdm(total=len(items), desc=desc, disable=not progress or not items, unit="clip", dynamic_ncols=True)
    try:
        if workers == 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        # spawn: safe with torch/OpenCV threads in the parent; fork can deadlock them
        with get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(fn, items, chunksize=1):
                yield result
                bar.update()
    finally:
        bar.close()
