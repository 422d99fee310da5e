"""Independent evaluations side by side on a small machine.

Small-batch CPU work (fine-tuning a detector at 112 px with 4 images a step, probing one feature
set) keeps two intra-op threads poorly busy; two such jobs in two single-thread processes finish
sooner than one after the other with two threads each. :func:`run_parallel` runs a list of calls
in a ``spawn`` process pool whose workers split the cores (``torch.set_num_threads``), returning the
results in call order; an exception in a call is raised here. ``jobs <= 1`` runs them in this
process, one after the other, exactly as before.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch

Call = Tuple[Callable[..., Any], Tuple[Any, ...], Dict[str, Any]]


def default_jobs() -> int:
    """Two workers where there are at least two cores, else one."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_parallel(calls: Sequence[Call], jobs: int) -> List[Any]:
    if jobs <= 1 or len(calls) <= 1:
        return [fn(*args, **kw) for fn, args, kw in calls]
    workers = min(jobs, len(calls))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, *args, **kw) for fn, args, kw in calls]
        return [f.result() for f in futures]
