"""What this machine gives two processes: the ceiling for every "2 workers vs 1" target.

Two workloads, each run once by one process and then by two processes at the same
time (the work per process fixed), timed in the same run as the benchmark that
quotes them, since the machine is shared and its neighbours vary:

* compute: a numba loop over a 64 KiB array that stays in the core's own cache;
* memory: numpy adds of 64 MiB arrays, far larger than any cache (the stage kernels
  sit between the two: a 2048² float32 frame is 16 MiB).

ceiling = 2 · t(one process) / t(two processes): 2.0 on two idle cores of their own;
less when the two vCPUs share a physical core, the memory bus, or a busy host.

    python bench/ceiling.py
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np

COMPUTE_SECONDS = 1.5       # one process' work, roughly
MEMORY_PASSES = 40


def _compute(passes: int) -> float:
    from numba import njit

    @njit(cache=False, nogil=True)
    def churn(x, passes):
        acc = 0.0
        for _ in range(passes):
            for i in range(x.size):
                acc += np.sqrt(x[i] * acc + 1.0)
        return acc

    x = np.linspace(0.0, 1.0, 8192)
    churn(x, 1)                                # compile outside the clock
    t = time.perf_counter()
    churn(x, passes)
    return time.perf_counter() - t


def _memory(passes: int) -> float:
    a = np.ones(16 * 2**20, dtype=np.float32)
    b = np.ones_like(a)
    out = np.empty_like(a)
    np.add(a, b, out=out)
    t = time.perf_counter()
    for _ in range(passes):
        np.add(a, b, out=out)
    return time.perf_counter() - t


def _timed(args):
    fn, passes, start = args
    start.wait()
    return fn(passes)


def _together(fn, passes: int, n: int) -> float:
    """Wall time of n processes each doing ``passes``, started together."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            return max(pool.map(_timed, [(fn, passes, start)] * n))


def scaling_ceiling() -> dict:
    """{"compute": ceiling, "memory": ceiling} for 2 processes vs 1."""
    probe = _together(_compute, 200, 1)
    passes = max(1, int(200 * COMPUTE_SECONDS / max(probe, 1e-3)))
    out = {}
    for name, fn, n_pass in (("compute", _compute, passes), ("memory", _memory, MEMORY_PASSES)):
        one = _together(fn, n_pass, 1)
        two = _together(fn, n_pass, 2)
        out[name] = 2.0 * one / two
    return out


def describe(ceiling: dict) -> str:
    return (f"this machine, 2 processes vs 1: compute-bound {ceiling['compute']:.2f}x, "
            f"memory-bound {ceiling['memory']:.2f}x (2.00 = two free cores)")


if __name__ == "__main__":
    print(describe(scaling_ceiling()))
