"""No side effects (issue 8): inputs are never modified, and the task is safe to run from several threads.

Inputs compared before and after: the exposure's planes, mask plane names,
origin, metadata, WCS and PSF; the PSF objects (every kind, as science and as
reference, including user objects that hand out their own arrays); the
config; the kernel and exposures given to the writers.

Threads: 8 threads run one shared task (and one shared reference PSF, config
and science PSF object) on 8 different exposures and must give the serial
results.  Exactly, when BLAS runs single-threaded: with a multi-threaded
OpenBLAS the floating-point rounding of the linear algebra depends on how many
threads call it at once (a property of the BLAS, not a data race: with
``threadpool_limits(1)`` the results are bit-identical), so the default-BLAS
test compares to a tolerance.  The lead's ``test_robustness_core`` compares
exactly and can fail on a loaded machine for that reason.
"""

from __future__ import annotations

import copy
import threading
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, Point2D, PsfEvaluationError
from psfmatch.io import read_exposure, write_exposure, write_kernel
from psfmatch.psf import GaussianPsf, ImagePsf, PsfexPsf, VariableGaussianPsf, read_psfex

POSITIONS = [(0.0, 0.0), (40.5, 77.25), (127.0, 127.0)]


def small_config(order=1, cell=64, kernel_size=11):
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = kernel_size
    config.kernel.active.spatialKernelOrder = order
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = cell
    return config


def run_quietly(task, exposure, reference, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        return task.run(exposure, reference, **kwargs)


def gauss(n=15, sigma=1.6, e=0.0):
    y, x = np.mgrid[0:n, 0:n].astype(float) - n // 2
    return np.exp(-(x * x * (1 - e) + y * y * (1 + e)) / (2 * sigma ** 2))


class OwnArrayPsf:
    """A user PSF that returns its own (writeable) array: psfmatch must not write into it."""

    def __init__(self, array):
        self.array = array

    def computeKernelImage(self, position):
        return self.array


class ReadOnlyPsf:
    """A user PSF that returns a read-only array: psfmatch must not need to write into it."""

    def __init__(self, array):
        self.array = array.copy()
        self.array.setflags(write=False)

    def computeKernelImage(self, position):
        return self.array


def psfex_model(sigma=1.6):
    y, x = np.mgrid[-7:8, -7:8].astype(float)
    g = np.exp(-(x * x + y * y) / (2 * sigma ** 2))
    basis = np.array([g, 0.02 * x * g, 0.01 * g, 0.02 * y * g, 0.0 * g, 0.01 * g])
    return PsfexPsf(basis, degree=2, polzero=(64.5, 64.5), polscal=(128.0, 128.0), psf_samp=1.0)


def fingerprint(psf):
    """What a PSF object is, as far as a user can see: its repr, its arrays and its images at a few positions."""
    out = [repr(psf)]
    for name in ("array", "basis", "_array", "_basis"):
        value = getattr(psf, name, None)
        if isinstance(value, np.ndarray):
            out.append(value.copy())
    for p in POSITIONS + [(1040.0, 2070.0)]:
        try:
            out.append(np.array(psf.computeKernelImage(Point2D(*p)), copy=True))
        except PsfEvaluationError as exc:  # outside a model's domain: the same error each time
            out.append(str(exc))
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def snapshot(exposure):
    return {"image": exposure.image.copy(), "mask": exposure.mask.copy(), "variance": exposure.variance.copy(),
            "planes": exposure.getMask().getMaskPlaneDict(), "xy0": exposure.getXY0(),
            "metadata": copy.deepcopy(exposure.metadata), "psf": exposure.getPsf(), "wcs": exposure.getWcs(),
            "wcs_header": None if exposure.getWcs() is None else exposure.getWcs().to_header().tostring(),
            "flags": (exposure.image.flags.writeable, exposure.variance.flags.writeable)}


def assert_unchanged(exposure, snap):
    np.testing.assert_array_equal(exposure.image, snap["image"])  # NaNs compare equal here
    np.testing.assert_array_equal(exposure.mask, snap["mask"])
    np.testing.assert_array_equal(exposure.variance, snap["variance"])
    assert exposure.getMask().getMaskPlaneDict() == snap["planes"]
    assert exposure.getXY0() == snap["xy0"]
    assert exposure.metadata == snap["metadata"]
    assert exposure.getPsf() is snap["psf"] and exposure.getWcs() is snap["wcs"]
    if snap["wcs_header"] is not None:
        assert exposure.getWcs().to_header().tostring() == snap["wcs_header"]
    assert (exposure.image.flags.writeable, exposure.variance.flags.writeable) == snap["flags"]


def rich_exposure(psf, n=128, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, n)).astype(np.float32)
    img[10, 20] = np.nan
    var = np.ones((n, n), np.float32)
    var[50, 60] = np.nan
    exposure = Exposure(img, variance=var, psf=psf, xy0=(1000, 2000),
                        metadata={"id": 7, "nested": {"list": [1, 2, {"x": 3.5}]}, "filter": "r"})
    exposure.getMask().addMaskPlane("MYPLANE")
    exposure.mask[5, 5] = exposure.getMask().getPlaneBitMask("MYPLANE")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [64.0, 64.0]
    wcs.wcs.cdelt = [-5e-5, 5e-5]
    exposure.setWcs(wcs)
    return exposure


SCIENCE_PSFS = {
    "gaussian": lambda: GaussianPsf(15, 15, 1.6),
    "variable": lambda: VariableGaussianPsf(15, 15, Box2I((1000, 2000), (128, 128)), sigma=[1.6, 0.1, 0.05],
                                            e1=[0.02, 0.01, 0.0], e2=[0.0]),
    "image": lambda: ImagePsf(gauss(15, 1.6, 0.1)),
    "psfex": psfex_model,
    "user, own array": lambda: OwnArrayPsf(gauss(15, 1.6, 0.1)),
    "user, read-only array": lambda: ReadOnlyPsf(gauss(15, 1.6)),
}
REFERENCE_PSFS = {
    "gaussian": lambda: GaussianPsf(21, 21, 2.4),
    "image": lambda: ImagePsf(gauss(21, 2.4)),
    "user, own array": lambda: OwnArrayPsf(gauss(21, 2.4)),
    "user, read-only array": lambda: ReadOnlyPsf(gauss(21, 2.4)),
    "psfex": lambda: psfex_model(2.4).resized(21, 21),
}


@pytest.mark.parametrize("kind", SCIENCE_PSFS)
def test_science_psf_exposure_and_config_are_not_modified(kind):
    psf = SCIENCE_PSFS[kind]()
    exposure = rich_exposure(psf)
    config = small_config()
    config_before = (config.to_dict(), config._explicit_state())
    psf_before, snap = fingerprint(psf), snapshot(exposure)
    ref = GaussianPsf(21, 21, 2.4)
    ref_before = fingerprint(ref)
    result = run_quietly(ModelPsfMatchTask(config=config), exposure, ref)
    assert_unchanged(exposure, snap)
    assert_same(fingerprint(psf), psf_before)
    assert_same(fingerprint(ref), ref_before)
    assert (config.to_dict(), config._explicit_state()) == config_before
    config.kernel.active.kernelSize = 13  # the caller's config is not frozen by the task
    out = result.psfMatchedExposure
    assert not np.shares_memory(out.image, exposure.image) and not np.shares_memory(out.mask, exposure.mask)
    assert out.metadata == exposure.metadata and out.metadata is not exposure.metadata
    out.metadata["nested"]["list"].append(99)  # the output's metadata is a deep copy
    assert exposure.metadata["nested"]["list"] == [1, 2, {"x": 3.5}]


@pytest.mark.parametrize("kind", REFERENCE_PSFS)
def test_reference_psf_is_not_modified(kind):
    ref = REFERENCE_PSFS[kind]()
    before = fingerprint(ref)
    exposure = Exposure(np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    result = run_quietly(ModelPsfMatchTask(config=small_config()), exposure, ref)
    assert_same(fingerprint(ref), before)
    # the matched exposure's PSF is a separate object: using it does not touch the reference
    result.psfMatchedExposure.getPsf().computeKernelImage((3, 3))
    assert_same(fingerprint(ref), before)


def test_fit_kernel_and_writers_do_not_modify_their_inputs(tmp_path):
    psf = psfex_model()
    exposure = rich_exposure(psf)
    snap = snapshot(exposure)
    task = ModelPsfMatchTask(config=small_config())
    bbox = exposure.getBBox()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = task.fitKernel(psf, GaussianPsf(21, 21, 2.4), bbox)
    assert bbox == Box2I((1000, 2000), (128, 128))
    coeffs = fit.kernel.coefficients.copy()
    write_kernel(fit.kernel, tmp_path / "k.fits")
    np.testing.assert_array_equal(fit.kernel.coefficients, coeffs)
    exposure.metadata["fitsHeader"] = fits.Header([("OBSERVER", "me")])
    snap["metadata"] = copy.deepcopy(exposure.metadata)
    write_exposure(exposure, tmp_path / "e.fits")
    assert_unchanged(exposure, snap)
    ref_psf = GaussianPsf(15, 15, 1.6)
    read_exposure(tmp_path / "e.fits", psf=ref_psf)
    assert ref_psf == GaussianPsf(15, 15, 1.6)


def test_a_refused_run_leaves_everything_as_it_was():
    psf = OwnArrayPsf(gauss(15, 1.6))
    exposure = rich_exposure(psf)
    exposure.variance[3, 3] = -1.0  # refused: negative variance
    snap, before = snapshot(exposure), fingerprint(psf)
    config = small_config()
    with pytest.raises(ValueError, match="negative pixel"):
        ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(21, 21, 2.4))
    assert_unchanged(exposure, snap)
    assert_same(fingerprint(psf), before)


# ---------------------------------------------------------------------------
# threads


def _exposures(n=8, size=128):
    bbox = Box2I((0, 0), (size, size))
    shared = VariableGaussianPsf(15, 15, bbox, sigma=[1.7, 0.1, 0.05])
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        psf = shared if i % 2 else VariableGaussianPsf(15, 15, bbox, sigma=[1.4 + 0.05 * i, -0.1, 0.0],
                                                       e1=[0.03 * (i % 3), 0.01, 0.0])
        img = rng.normal(size=(size, size)).astype(np.float32)
        img[rng.integers(0, size, 3), rng.integers(0, size, 3)] = np.nan
        out.append(Exposure(img, variance=np.full((size, size), 1.5, np.float32), psf=psf, metadata={"i": i}))
    return out, shared


def _run_in_threads(task_for, exposures, reference):
    results, errors = [None] * len(exposures), []
    barrier = threading.Barrier(len(exposures))

    def work(i):
        try:
            barrier.wait()  # start together
            results[i] = run_quietly(task_for(i), exposures[i], reference)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append((i, exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(exposures))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    assert not errors, errors
    return results


def _compare(serial, threaded, exact):
    for a, b in zip(serial, threaded):
        ea, eb = a.psfMatchedExposure, b.psfMatchedExposure
        np.testing.assert_array_equal(ea.mask, eb.mask)
        np.testing.assert_array_equal(np.isnan(ea.image), np.isnan(eb.image))
        assert ea.metadata == eb.metadata
        assert a.metadata["nCandidatesUsed"] == b.metadata["nCandidatesUsed"]
        if exact:
            np.testing.assert_array_equal(ea.image, eb.image)
            np.testing.assert_array_equal(ea.variance, eb.variance)
            np.testing.assert_array_equal(a.psfMatchingKernel.coefficients, b.psfMatchingKernel.coefficients)
        else:
            scale = np.nanmax(np.abs(ea.image))
            np.testing.assert_allclose(ea.image, eb.image, rtol=0, atol=1e-4 * scale)
            np.testing.assert_allclose(ea.variance, eb.variance, rtol=1e-4)
            np.testing.assert_allclose(a.psfMatchingKernel.computeImage((64, 64)),
                                       b.psfMatchingKernel.computeImage((64, 64)), rtol=0, atol=1e-5)


def test_eight_threads_give_the_serial_results_exactly_with_single_threaded_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    exposures, shared = _exposures()
    reference = GaussianPsf(21, 21, 2.4)
    config = small_config()
    task = ModelPsfMatchTask(config=config)
    snaps = [snapshot(e) for e in exposures]
    shared_before, config_before = fingerprint(shared), config.to_dict()
    with threadpoolctl.threadpool_limits(1):
        serial = [run_quietly(task, e, reference) for e in exposures]
        threaded = _run_in_threads(lambda i: task, exposures, reference)
    _compare(serial, threaded, exact=True)
    for e, s in zip(exposures, snaps):
        assert_unchanged(e, s)
    assert_same(fingerprint(shared), shared_before)
    assert config.to_dict() == config_before


def test_eight_threads_with_their_own_tasks_and_default_blas():
    # the fits' one-thread BLAS holds in the user's threads as on the main one: bit for bit the serial results
    exposures, _ = _exposures()
    reference = ImagePsf(gauss(21, 2.4))
    config = small_config(order=2)
    serial = [run_quietly(ModelPsfMatchTask(config=config), e, reference) for e in exposures]
    before = fingerprint(reference)
    threaded = _run_in_threads(lambda i: ModelPsfMatchTask(config=config), exposures, reference)
    _compare(serial, threaded, exact=True)
    assert_same(fingerprint(reference), before)
    assert not config._frozen


def test_readers_in_threads(tmp_path):
    exposure = rich_exposure(psfex_model())
    exposure.writeFits(tmp_path / "e.fits")
    fits.HDUList([fits.PrimaryHDU(), psfex_model().to_hdu()]).writeto(tmp_path / "m.psf")
    serial = (read_exposure(tmp_path / "e.fits"), read_psfex(tmp_path / "m.psf"))
    results, errors = [], []

    def work():
        try:
            results.append((read_exposure(tmp_path / "e.fits"), read_psfex(tmp_path / "m.psf")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 8
    for e, m in results:
        np.testing.assert_array_equal(e.image, serial[0].image)
        np.testing.assert_array_equal(e.mask, serial[0].mask)
        assert e.metadata["nested"] == serial[0].metadata["nested"]
        np.testing.assert_array_equal(m.computeKernelImage((5, 9)), serial[1].computeKernelImage((5, 9)))
