"""psfmatch inside a user's own parallel code: ThreadPoolExecutor / ProcessPoolExecutor around ModelPsfMatchTask.run.

Review of hidden shared state (caches, BLAS thread counts, the shared pool, the warning filters),
per-run metadata, failures in one thread, memory over many runs, frozen configs, pickling to
worker processes and $PSFMATCH_NUM_THREADS.  Tests whose docstring says "Was a defect" pin fixes.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import pickle
import threading
import tracemalloc
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch import parallel, solve
from psfmatch.errors import InvalidConfigError, InvalidInputError, KernelQualityWarning, NoKernelCandidatesError
from psfmatch.psf import GaussianPsf, VariableGaussianPsf

threadpoolctl = pytest.importorskip("threadpoolctl")

REF_SIGMA = 2.6


def make_exposure(i, size=128):
    """Even i: a constant Gaussian PSF; odd i: a varying, slightly elliptical one."""
    rng = np.random.default_rng(i)
    bbox = Box2I((0, 0), (size, size))
    if i % 2:
        psf = VariableGaussianPsf(15, 15, bbox, sigma=[1.4 + 0.05 * i, -0.1, 0.05], e1=[0.02 * (i % 3), 0.01, 0.0])
    else:
        psf = GaussianPsf(15, 15, 1.5 + 0.05 * i)
    img = rng.normal(size=(size, size)).astype(np.float32)
    return Exposure(img, variance=np.full((size, size), 1.0, np.float32), psf=psf, metadata={"i": i})


def small_cells_config(**kw):
    cfg = ModelPsfMatchConfig()
    cfg.kernel.active.sizeCellX = cfg.kernel.active.sizeCellY = 64
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def quiet_run(task, exposure, ref, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return task.run(exposure, ref, **kw)


def md_diff(a, b, path=""):
    """Differences between two metadata trees, ignoring timings."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            if "time" in str(k).lower():
                continue
            out += md_diff(a.get(k), b.get(k), f"{path}/{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += md_diff(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not np.array_equal(a, b, equal_nan=True):
            out.append(path)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        out.append((path, a, b))
    return out


def assert_same_result(a, b):
    ea, eb = a.psfMatchedExposure, b.psfMatchedExposure
    np.testing.assert_array_equal(ea.image, eb.image)
    np.testing.assert_array_equal(ea.variance, eb.variance)
    np.testing.assert_array_equal(ea.mask, eb.mask)
    for p in ((0, 0), (30, 70), (127, 127)):
        np.testing.assert_array_equal(a.psfMatchingKernel.computeImage(p), b.psfMatchingKernel.computeImage(p))
    assert md_diff(a.metadata, b.metadata) == []


def kernel_sigma2(kernel_image):
    """Mean of the kernel's x and y second central moments (pixels^2)."""
    k = np.asarray(kernel_image, float)
    y, x = np.mgrid[:k.shape[0], :k.shape[1]]
    s = k.sum()
    cx, cy = (k * x).sum() / s, (k * y).sum() / s
    return 0.5 * ((k * (x - cx) ** 2).sum() + (k * (y - cy) ** 2).sum()) / s


# ---------------------------------------------------------------------------------------------------------
# threads: the serial results, bit for bit


@pytest.mark.parametrize("nthreads", [4, 8])
def test_threads_sharing_one_task_give_the_serial_results_bit_for_bit_with_pinned_blas(nthreads):
    # the documented recipe (README, "No side effects"): BLAS pinned to one thread -> bitwise, default autoKernel,
    # metadata (autoKernel trials, QA, flags, notes) included; submission order reversed too
    ref = GaussianPsf(21, 21, REF_SIGMA)
    task = ModelPsfMatchTask(config=small_cells_config())
    exposures = [make_exposure(i) for i in range(6)]
    with threadpoolctl.threadpool_limits(1):
        serial = [quiet_run(task, e, ref) for e in exposures]
        for order in (range(6), range(5, -1, -1)):
            with ThreadPoolExecutor(nthreads) as ex:
                futs = {i: ex.submit(quiet_run, task, exposures[i], ref) for i in order}
                threaded = [futs[i].result() for i in range(6)]
            for a, b in zip(serial, threaded):
                assert_same_result(a, b)
    # physics in the threads' results: sigma_k^2 = sigma_ref^2 - sigma_sci^2 for the constant Gaussians
    for i in (0, 2, 4):
        s = 1.5 + 0.05 * i
        k = threaded[i].psfMatchingKernel.computeImage((64, 64))
        assert k.sum() == pytest.approx(1.0, abs=1e-9)
        assert kernel_sigma2(k) == pytest.approx(REF_SIGMA ** 2 - s ** 2, rel=0.02)


def test_threads_with_their_own_tasks_and_default_blas_bitwise_without_autokernel():
    # autoKernel off: no large (>= 400 unknowns) delta-function trial, so the default BLAS is bitwise too
    ref = GaussianPsf(21, 21, REF_SIGMA)
    cfg = small_cells_config(autoKernel=False)
    exposures = [make_exposure(i) for i in range(8)]
    serial = [quiet_run(ModelPsfMatchTask(config=cfg), e, ref) for e in exposures]
    with ThreadPoolExecutor(8) as ex:
        threaded = list(ex.map(lambda e: quiet_run(ModelPsfMatchTask(config=cfg), e, ref), exposures))
    for a, b in zip(serial, threaded):
        assert_same_result(a, b)
    assert not cfg._frozen and cfg.kernel.active.sizeCellX == 64


def test_flags_notes_and_warnings_stay_with_their_own_run_in_threads():
    # one 128 px cell: the varying PSFs (odd i) get KernelQualityWarnings and flags, the constant ones none
    logging.disable(logging.CRITICAL)
    try:
        ref = GaussianPsf(21, 21, REF_SIGMA)
        task = ModelPsfMatchTask()
        exposures = [make_exposure(i) for i in range(8)]
        with threadpoolctl.threadpool_limits(1):
            with warnings.catch_warnings(record=True) as ws:
                warnings.simplefilter("always")
                serial = [task.run(e, ref) for e in exposures]
            with warnings.catch_warnings(record=True) as wt:
                warnings.simplefilter("always")
                with ThreadPoolExecutor(8) as ex:
                    threaded = list(ex.map(lambda e: task.run(e, ref), exposures))
    finally:
        logging.disable(logging.NOTSET)
    flags = [r.metadata["qa"]["flags"] for r in serial]
    assert [bool(f) for f in flags] == [bool(i % 2) for i in range(8)]
    assert [r.metadata["qa"]["flags"] for r in threaded] == flags
    assert [r.metadata.get("notes") for r in threaded] == [r.metadata.get("notes") for r in serial]
    assert sorted(str(w.message) for w in wt) == sorted(str(w.message) for w in ws)
    assert len(ws) >= 4 and all(w.category is KernelQualityWarning for w in ws)
    # every warning points to the line that called run(), in this file, in the threads as serially
    assert {os.path.basename(w.filename) for w in wt} == {os.path.basename(__file__)}


def test_a_read_in_another_thread_does_not_swallow_a_runs_warning(tmp_path, monkeypatch):
    """Was a defect (fixed): a reader's catch_warnings('ignore') (io.fits._wcs) in one thread silently dropped the
    KernelQualityWarning of a run() in another thread (Python's warning filters are the whole process's); psfmatch's
    own warnings recorded during such a section are now shown again when it ends."""
    import astropy.wcs
    from astropy.wcs import WCS

    from psfmatch.io import read_exposure

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [10, 20], [64, 64], [-5e-5, 5e-5]
    on_disk = make_exposure(0)
    on_disk.setWcs(w)
    on_disk.writeFits(tmp_path / "e.fits")

    entered, done = threading.Event(), threading.Event()

    class SlowWCS(WCS):  # a slow header parse (large header, slow disk): psfmatch's read holds its filter meanwhile
        def __init__(self, *a, **k):
            entered.set()
            done.wait(20)
            super().__init__(*a, **k)

    ref = GaussianPsf(21, 21, REF_SIGMA)
    task = ModelPsfMatchTask()
    warned = make_exposure(1)  # one 128 px cell, a varying PSF: KernelQualityWarning (see the test above)
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monkeypatch.setattr(astropy.wcs, "WCS", SlowWCS)
            reader = threading.Thread(target=read_exposure, args=(tmp_path / "e.fits",))
            reader.start()
            assert entered.wait(20)
            monkeypatch.setattr(astropy.wcs, "WCS", WCS)
            result = task.run(warned, ref)
            done.set()
            reader.join(20)
    finally:
        done.set()
        logging.disable(logging.NOTSET)
    assert result.metadata["qa"]["flags"]  # the run did flag it...
    assert any(issubclass(c.category, KernelQualityWarning) for c in caught)  # ...and the user must see it


# ---------------------------------------------------------------------------------------------------------
# failures in one thread


class FailsAfter:
    """A user PSF (e.g. backed by a file or a service) that raises after ``n_ok`` evaluations."""

    def __init__(self, good, n_ok):
        self.good, self.n_ok, self.n, self.lock = good, n_ok, 0, threading.Lock()

    def computeKernelImage(self, position):
        with self.lock:
            self.n += 1
            if self.n > self.n_ok:
                raise RuntimeError("PSF service went away")
        return self.good.computeKernelImage(position)


def test_failing_runs_in_threads_leave_the_others_and_the_process_state_intact():
    ref = GaussianPsf(21, 21, REF_SIGMA)
    task = ModelPsfMatchTask(config=small_cells_config())
    exposures = [make_exposure(i) for i in range(6)]
    blas_before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    serial = [quiet_run(task, e, ref) for e in exposures]
    dead = make_exposure(3)
    dead.setPsf(FailsAfter(dead.getPsf(), 0))

    def job(j):
        if j == "kernelSum":
            return quiet_run(task, exposures[0], ref, kernelSum=-1.0)
        if j == "dead":
            return quiet_run(task, dead, ref)
        return quiet_run(task, exposures[j], ref)

    with threadpoolctl.threadpool_limits(1):
        with ThreadPoolExecutor(4) as ex:
            futs = {j: ex.submit(job, j) for j in [0, "kernelSum", 1, "dead", 2, 3, 4, 5]}
    with pytest.raises(InvalidInputError, match=r"kernelSum must be positive and finite; got -1\.0"):
        futs["kernelSum"].result()
    with pytest.raises(NoKernelCandidatesError, match=r"science PSF could not be evaluated.*PSF service went away"):
        futs["dead"].result()
    for i in range(6):
        assert_same_result(serial[i], futs[i].result())
    # nothing left behind: BLAS count, open BLAS contexts, cache rooms; the shared pool still serves
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == blas_before
    assert solve._BLAS_STATE["depth"] == 0 and solve._SPECTRAL_CACHE_ROOMS == []
    assert parallel.shared_pool(2).submit(lambda: 6 * 7).result(timeout=10) == 42
    assert_same_result(serial[1], quiet_run(task, exposures[1], ref))


def test_a_psf_failing_between_the_candidates_is_reported():
    """Was a defect (fixed): a PSF that raises at the QA's held-out positions is dropped silently: qa['between'] =
    {'n': 0}, no note, no flag."""
    ref = GaussianPsf(21, 21, REF_SIGMA)
    task = ModelPsfMatchTask(config=small_cells_config())
    e = make_exposure(1)
    e.setPsf(FailsAfter(e.getPsf(), 5))  # the survey's hint and the 4 candidates evaluate; nothing after
    r = quiet_run(task, e, ref)
    assert r.metadata["nCandidatesUsed"] == 4
    assert e.getPsf().n > 5  # it was asked for more, and raised
    between = r.metadata["qa"]["between"]
    reported = (r.metadata["qa"]["flags"]
                or any("PSF service went away" in n or "held-out" in n for n in r.metadata.get("notes", [])))
    assert between["n"] > 0 or reported
    assert between["n"] == 0 and between["nUnevaluated"] >= 4
    assert any(n.startswith(f"the PSFs could not be evaluated at {between['nUnevaluated']} of the ") and
               "PSF service went away" in n and "checks none" in n for n in r.metadata["notes"])


# ---------------------------------------------------------------------------------------------------------
# memory, configs


def test_process_caches_stay_bounded_over_fifty_runs(monkeypatch):
    # 50 runs, each with another Alard-Lupton basis (a new entry of the spectral cache each time), the
    # cache's byte limit lowered to 4 MiB: the traced memory must stop growing
    monkeypatch.setattr(solve, "_SPECTRAL_CACHE_BYTES", 4 * 2 ** 20)
    ref = GaussianPsf(21, 21, REF_SIGMA)
    e = make_exposure(0)

    def run(i):
        cfg = ModelPsfMatchConfig()
        cfg.autoKernel = False
        cfg.kernel.active.kernelSize = 15
        cfg.kernel.active.alardSigGauss = [0.7 + 0.01 * i, 1.5, 3.0]
        quiet_run(ModelPsfMatchTask(config=cfg), e, ref)

    for i in range(5):
        run(100 + i)
    gc.collect()
    tracemalloc.start()
    try:
        marks = []
        for i in range(50):
            run(i)
            if i in (19, 49):
                gc.collect()
                marks.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    cache = sum(solve._entry_bytes(v) for v in solve._SPECTRAL_CACHE.values())
    assert cache <= 4 * 2 ** 20
    assert marks[1] - marks[0] < 2 * 2 ** 20, f"grew {(marks[1] - marks[0]) / 2 ** 20:.1f} MiB over 30 runs"


def test_a_users_config_edited_while_threads_run_changes_nothing_and_the_tasks_is_frozen():
    ref = GaussianPsf(21, 21, REF_SIGMA)
    cfg = small_cells_config(autoKernel=False)
    task = ModelPsfMatchTask(config=cfg)
    exposures = [make_exposure(i) for i in range(4)]
    serial = [quiet_run(task, e, ref) for e in exposures]
    started = threading.Barrier(5)

    def work(e):
        started.wait(10)
        return quiet_run(task, e, ref)

    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(work, e) for e in exposures]
        started.wait(10)
        cfg.kernel.active.kernelSize = 9  # the user's own object: the task took a copy
        cfg.kernel.active.sizeCellX = 32
        threaded = [f.result() for f in futs]
    for a, b in zip(serial, threaded):
        assert_same_result(a, b)
    assert task.config.kernel.active.kernelSize == 21 and threaded[0].metadata["kernelSize"] == 21
    with pytest.raises(InvalidConfigError, match=r"kernelSize: the config is frozen; copy it to change it"):
        task.config.kernel.active.kernelSize = 9
    with pytest.raises(InvalidConfigError, match="frozen"):
        task.config.autoKernel = True


# ---------------------------------------------------------------------------------------------------------
# pickling and processes


def _run_in_worker(task, exposure, ref):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return task.run(exposure, ref)


def test_objects_survive_pickling_and_give_the_same_results():
    ref = GaussianPsf(21, 21, REF_SIGMA)
    task = ModelPsfMatchTask(config=small_cells_config())
    e = make_exposure(1)
    r = quiet_run(task, e, ref)
    t2, e2, ref2, r2 = (pickle.loads(pickle.dumps(o)) for o in (task, e, ref, r))
    assert t2.config.to_dict() == task.config.to_dict()
    np.testing.assert_array_equal(e2.image, e.image)
    np.testing.assert_array_equal(e2.getPsf().computeKernelImage((10.0, 90.0)), e.getPsf().computeKernelImage((10.0, 90.0)))
    assert_same_result(r, r2)
    assert_same_result(r, quiet_run(t2, e2, ref2))


def test_a_frozen_config_stays_frozen_through_pickle():
    """Was a defect (fixed): Config.__reduce__ drops the frozen state: a frozen config comes back from pickle (a
    worker process) editable."""
    cfg = small_cells_config()
    cfg.freeze()
    c2 = pickle.loads(pickle.dumps(cfg))
    with pytest.raises(InvalidConfigError, match="frozen"):
        c2.kernel.active.kernelSize = 7


def test_an_unpickled_tasks_config_is_frozen_and_is_what_it_runs():
    """Was a defect (fixed): an unpickled ModelPsfMatchTask has an editable config detached from the kConfig run()
    uses: task.config says 7, the kernel is 21."""
    ref = GaussianPsf(21, 21, REF_SIGMA)
    t2 = pickle.loads(pickle.dumps(ModelPsfMatchTask(config=small_cells_config(autoKernel=False))))
    try:
        t2.config.kernel.active.kernelSize = 7  # must raise InvalidConfigError, as on the original task
    except InvalidConfigError:
        return
    r = quiet_run(t2, make_exposure(1), ref)
    assert r.metadata["kernelSize"] == t2.config.kernel.active.kernelSize  # at least: what it reports is what it ran


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_results_equal_the_parents(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method")
    ref = GaussianPsf(21, 21, REF_SIGMA)
    task = ModelPsfMatchTask(config=small_cells_config())
    exposures = [make_exposure(i) for i in range(4)]
    with threadpoolctl.threadpool_limits(1):
        serial = [quiet_run(task, e, ref) for e in exposures]
    with ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        remote = list(ex.map(_run_in_worker, [task] * 4, exposures, [ref] * 4))
    for a, b in zip(serial, remote):
        assert_same_result(a, b)
    assert remote[1].psfMatchedExposure.metadata["i"] == 1


# ---------------------------------------------------------------------------------------------------------
# $PSFMATCH_NUM_THREADS


def test_psfmatch_num_threads_values_give_the_same_results_and_junk_warns(monkeypatch):
    monkeypatch.setattr(parallel, "_BAD_ENV_SEEN", set())
    ref = GaussianPsf(21, 21, REF_SIGMA)
    cfg = ModelPsfMatchConfig()
    cfg.kernel.active.sizeCellX = cfg.kernel.active.sizeCellY = 32  # 16 cells: the loops have work to share
    e = make_exposure(3)
    out = {}
    with threadpoolctl.threadpool_limits(1):
        for value in ("1", "2", "4"):
            monkeypatch.setenv("PSFMATCH_NUM_THREADS", value)
            assert parallel.available_cores() == int(value)
            out[value] = quiet_run(ModelPsfMatchTask(config=cfg), e, ref)
        monkeypatch.setenv("PSFMATCH_NUM_THREADS", "two")
        ncores = len(os.sched_getaffinity(0))
        with pytest.warns(RuntimeWarning, match=rf"PSFMATCH_NUM_THREADS='two' is not a positive integer, so "
                                                rf"psfmatch uses all {ncores} cores"):
            task = ModelPsfMatchTask(config=cfg)
        out["two"] = quiet_run(task, e, ref)
    for value in ("2", "4", "two"):
        assert_same_result(out["1"], out[value])
