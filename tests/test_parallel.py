"""psfmatch.parallel: the thread count and the shared pool its loops run on."""

import os
import threading

import pytest

from psfmatch.parallel import available_cores, shared_pool


def test_available_cores_honours_the_environment(monkeypatch):
    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "3")
    assert available_cores() == 3
    for bad in ("0", "-2", "many", ""):
        monkeypatch.setenv("PSFMATCH_NUM_THREADS", bad)
        assert available_cores() == len(os.sched_getaffinity(0))


def test_shared_pool_is_started_once_and_never_nested():
    assert shared_pool(1) is None and shared_pool(0) is None
    pool = shared_pool(2)
    assert pool is shared_pool(2) and pool is not shared_pool(3)
    # from one of its own threads it declines (a task waiting on the same pool could deadlock it)
    inner = pool.submit(lambda: (threading.current_thread().name, shared_pool(2))).result()
    assert inner[0].startswith("psfmatch-worker") and inner[1] is None
    assert sorted(pool.map(lambda v: v * v, range(5))) == [0, 1, 4, 9, 16]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool():
    parent = shared_pool(2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's threads do not exist here
        try:
            child = shared_pool(2)
            ok = child is not parent and child.submit(lambda: 41 + 1).result(timeout=10) == 42
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"1"


def test_single_threaded_blas_restores_the_count_whatever_order_contexts_close():
    from threadpoolctl import threadpool_info

    from psfmatch.solve import single_threaded_blas

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    a, b = single_threaded_blas(), single_threaded_blas()
    a.__enter__()
    b.__enter__()  # as two fits running in two threads
    assert all(n == 1 for n in blas_threads())
    a.__exit__(None, None, None)  # the first to open closes first: the other is still running
    assert all(n == 1 for n in blas_threads())
    b.__exit__(None, None, None)
    assert blas_threads() == before
