"""psfmatch.parallel: the thread count and the shared pool its loops run on."""

import os
import re
import threading
import warnings

import pytest

from psfmatch import parallel
from psfmatch.parallel import available_cores, shared_pool


def blas_threads():
    """The BLAS libraries' thread counts (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_available_cores_honours_the_environment(monkeypatch):
    monkeypatch.setattr(parallel, "_BAD_ENV_SEEN", set())
    monkeypatch.setenv("PSFMATCH_NUM_THREADS", " 3 ")
    assert available_cores() == 3
    ncores = len(os.sched_getaffinity(0))
    for bad in ("0", "-2", "many", "2.5"):
        monkeypatch.setenv("PSFMATCH_NUM_THREADS", bad)
        with pytest.warns(RuntimeWarning, match=rf"PSFMATCH_NUM_THREADS='{re.escape(bad)}' is not a positive "
                                                rf"integer, so psfmatch uses all {ncores} cores.*or unset it"):
            assert available_cores() == ncores
        with warnings.catch_warnings():  # once per value: the loops ask for the count on every call
            warnings.simplefilter("error")
            assert available_cores() == ncores
    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "")  # empty is unset
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert available_cores() == ncores


def test_shared_pool_is_started_once_and_never_nested():
    assert shared_pool(1) is None and shared_pool(0) is None
    pool = shared_pool(2)
    assert pool is shared_pool(2) and pool is not shared_pool(3)
    # from one of its own threads it declines (a task waiting on the same pool could deadlock it)
    inner = pool.submit(lambda: (threading.current_thread().name, shared_pool(2))).result()
    assert inner[0].startswith("psfmatch-worker") and inner[1] is None
    assert sorted(pool.map(lambda v: v * v, range(5))) == [0, 1, 4, 9, 16]


def _in_forked_child(check) -> bool:
    """Fork, run ``check()`` in the child and return its truth value (the child only reports it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    return got == b"1"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool():
    parent = shared_pool(2)

    def check():  # in the child: the parent's threads do not exist there
        child = shared_pool(2)
        return child is not parent and child.submit(lambda: 41 + 1).result(timeout=10) == 42

    assert _in_forked_child(check)


def test_single_threaded_blas_restores_the_count_whatever_order_contexts_close():
    from psfmatch.solve import single_threaded_blas

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


def test_one_thread_blas_holds_in_a_thread_other_than_the_main_one():
    """OpenBLAS ignores ``openblas_set_num_threads`` from a thread other than the main one once the main one has
    called it; a fit in a user's thread must still run its BLAS on one thread, and sum as on the main thread."""
    import numpy as np

    from psfmatch import Box2I, ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.demo import demo_psf, demo_reference_psf
    from psfmatch.solve import single_threaded_blas

    with single_threaded_blas():  # the main thread sets (and restores) the count first
        pass
    before, seen = blas_threads(), {}

    def work():
        with single_threaded_blas():
            seen["inside"] = blas_threads()
        seen["after"] = blas_threads()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert all(n == 1 for n in seen["inside"]) and seen["after"] == before == blas_threads()
    # a fit whose products are large enough for OpenBLAS to use its threads: the same coefficients
    bbox = Box2I((0, 0), (1024, 1024))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    fit = lambda: ModelPsfMatchTask(config=config).fitKernel(demo_psf(bbox), demo_reference_psf(), bbox)
    on_main = fit().kernel.coefficients
    out = []
    t = threading.Thread(target=lambda: out.append(fit().kernel.coefficients))
    t.start()
    t.join()
    np.testing.assert_array_equal(out[0], on_main)


def test_a_large_system_uses_every_core_inside_a_one_thread_fit_and_gives_the_count_back(monkeypatch):
    """solve_gram decomposes a large system with all cores' BLAS, then returns to the fit's one thread."""
    import numpy as np

    import psfmatch.solve as solve_mod

    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "2")
    seen = []
    real_eigh = solve_mod._eigh
    monkeypatch.setattr(solve_mod, "_eigh", lambda A, **kw: seen.append(blas_threads()) or real_eigh(A, **kw))
    rng = np.random.default_rng(3)
    N = solve_mod._LARGE_SYSTEM + 20
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    w = np.concatenate([np.geomspace(1.0, 1e-4, N - 30), np.full(30, 1e-20)])  # a null space of 30: the
    # pseudo-inverse is needed, and the kept part is well determined (condition 1e4)
    M = (Q * w) @ Q.T
    b = M @ rng.standard_normal(N)
    before = blas_threads()
    with solve_mod.single_threaded_blas():
        x, rank, cond = solve_mod.solve_gram(M, b, 1e-6)
        assert all(n == 1 for n in blas_threads())  # back to the fit's one thread
    assert blas_threads() == before
    assert seen and all(n == 2 for n in seen[0])
    # the same minimum-norm solution as the small-system path gives (eigen-decomposition of the scaled Gram)
    d = np.sqrt(np.diagonal(M))
    ws, V = np.linalg.eigh(M / np.outer(d, d))
    s = np.sqrt(np.clip(ws, 0, None))
    keep = s > max(1e-6, np.sqrt(N * np.finfo(float).eps)) * s.max()
    x_ref = V[:, keep] @ ((V[:, keep].T @ (b / d)) / ws[keep]) / d
    assert rank == keep.sum() < N
    np.testing.assert_allclose(x, x_ref, rtol=1e-8, atol=1e-10 * np.abs(x_ref).max())


def test_a_callers_blas_limit_holds_for_the_large_solve(monkeypatch):
    """Inside threadpool_limits(1) the large solve stays on one thread, so its result does not depend on the
    core count (the README's recipe for reproducible delta-function fits)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    import psfmatch.solve as solve_mod

    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "2")
    seen = []
    real_eigh = solve_mod._eigh
    monkeypatch.setattr(solve_mod, "_eigh", lambda A, **kw: seen.append(blas_threads()) or real_eigh(A, **kw))
    rng = np.random.default_rng(5)
    N = solve_mod._LARGE_SYSTEM + 20
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    M = (Q * np.concatenate([np.geomspace(1.0, 1e-4, N - 30), np.full(30, 1e-20)])) @ Q.T  # (the eigen path)
    with threadpool_limits(1, user_api="blas"):
        with solve_mod.single_threaded_blas():
            solve_mod.solve_gram(M, M @ rng.standard_normal(N), 1e-6)
    assert seen and all(n == 1 for n in seen[0])


def test_non_ascii_digits_in_the_thread_count_are_refused_like_other_bad_values(monkeypatch):
    monkeypatch.setattr(parallel, "_BAD_ENV_SEEN", set())
    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "\u00b2")  # '²'.isdigit() is True, int('²') raises
    with pytest.warns(RuntimeWarning, match="is not a positive integer"):
        assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_inside_a_fit_starts_with_the_parents_blas_count():
    import psfmatch.solve as solve_mod

    before = blas_threads()
    with solve_mod.single_threaded_blas():  # as another thread's fit would be at the moment of the fork
        assert _in_forked_child(lambda: solve_mod._BLAS_STATE["depth"] == 0 and blas_threads() == before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("module", ["moments", "debug"])
def test_a_child_forked_while_another_thread_holds_a_module_lock_can_take_it(module):
    """A fork taken while another thread was inside the stamp-moments memo's (or the debug switches') locked
    section copied the lock held: every fit in the child waited on it for good."""
    import importlib
    import signal

    from psfmatch.psf import GaussianPsf

    mod = importlib.import_module(f"psfmatch.{module}")
    name = {"moments": "_STAMP_MOMENTS_LOCK", "debug": "_lock"}[module]
    stamp = GaussianPsf(9, 9, 1.7).computeKernelImage((0, 0))
    expected = float(importlib.import_module("psfmatch.moments").adaptive_moments(stamp[None])[0][0])
    held, release = threading.Event(), threading.Event()

    def holder():  # another thread of the parent, inside the locked section at the fork
        with getattr(mod, name):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(10)

    def check():  # in the child: the lock is free, and what takes it works
        signal.alarm(20)  # (a child that hangs all the same is killed: it reports nothing, the test fails)
        from psfmatch import debug, moments

        if not getattr(mod, name).acquire(timeout=5):
            return False
        getattr(mod, name).release()
        debug.Info("psfmatch.solve").displayKernelBasis = False
        return float(moments.stamp_moments(stamp)[0][0]) == expected

    try:
        assert _in_forked_child(check)
    finally:
        release.set()
        t.join(10)


def test_psfmatchs_warning_sections_leave_the_filters_as_they_were_across_threads():
    """catch_warnings restores the list it saw on entry: overlapping sections in two threads left an 'ignore'
    behind for good. psfmatch's sections take turns."""
    from concurrent.futures import ThreadPoolExecutor

    before = list(warnings.filters)

    def section(i):
        for _ in range(300):
            with parallel.catch_warnings("ignore" if i % 2 else "always", record=not i % 2):
                warnings.warn("inside", UserWarning)
        return True

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(section, range(16)))
    assert warnings.filters == before


def test_the_stamp_moments_memo_is_shared_under_a_lock(monkeypatch):
    """Threads evicting from the memo at once popped the same oldest key (a KeyError escaped a fit): every read
    and write of the memo takes its lock, and many threads measuring more stamps than it holds never fail."""
    import numpy as np

    from psfmatch import moments
    from psfmatch.psf import GaussianPsf

    monkeypatch.setattr(moments, "_STAMP_MOMENTS", {})
    stamps = [GaussianPsf(9, 9, 1.5 + 0.01 * i).computeKernelImage((0, 0)) for i in range(24)]
    done = threading.Event()
    with moments._STAMP_MOMENTS_LOCK:
        t = threading.Thread(target=lambda: (moments.stamp_moments(stamps[0]), done.set()))
        t.start()
        assert not done.wait(0.2)  # it waits for the lock
    t.join(10)
    assert done.is_set()
    expected = [float(moments.adaptive_moments(s[None])[0][0]) for s in stamps]
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(400):
                i = int(rng.integers(len(stamps)))
                assert moments.stamp_moments(stamps[i])[0][0] == expected[i]
        except Exception as exc:  # pragma: no cover - the failure being tested
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(moments._STAMP_MOMENTS) <= moments._STAMP_MOMENTS_SIZE
