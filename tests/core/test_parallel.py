"""``transfer.parallel.run_parallel``: results in call order from spawned single-thread workers,
errors raised in the caller, ``jobs=1`` in process."""
from __future__ import annotations

import os

import pytest

from transfer.errors import UserError
from transfer.parallel import run_parallel
from transfer.suggest import did_you_mean


def test_parallel_results_in_call_order_from_other_processes():
    # os.getpid and torch.get_num_threads are importable top-level callables: they run in the workers
    import torch

    calls = [(os.getpid, (), {}), (os.getpid, (), {}), (torch.get_num_threads, (), {})]
    pids = run_parallel(calls, jobs=2)
    assert os.getpid() not in pids[:2]
    assert pids[2] == max(1, (os.cpu_count() or 1) // 2)  # the workers split the cores
    # in order: a pure function of its argument, mapped over distinct inputs
    names = run_parallel([(did_you_mean, (w, ["alpha", "beta", "gamma"]), {}) for w in ("alpah", "betta", "gamme")], jobs=2)
    assert names == [did_you_mean(w, ["alpha", "beta", "gamma"]) for w in ("alpah", "betta", "gamme")]
    assert "alpha" in names[0] and "beta" in names[1] and "gamma" in names[2]


def test_parallel_error_reaches_the_caller_and_one_job_runs_here():
    from transfer.registry import Registry

    reg = Registry("thing")
    with pytest.raises(UserError, match="unknown thing 'x'"):
        run_parallel([(reg.get, ("x",), {}), (os.getpid, (), {})], jobs=2)
    assert run_parallel([(os.getpid, (), {}), (os.getpid, (), {})], jobs=1) == [os.getpid()] * 2
