"""Property-based tests of the task (issue 8), beyond ``test_robustness_core``.

The lead's property test varies Gaussian sizes, ``e1``, square stamps, kernel
sizes, spatial orders, shapes, basis, padding and ``kernelSum``.  These add:
``e2`` and non-square stamps, exposures with an origin far from (0, 0), cell
sizes, the spatial model type, the fit region, PSFEx science PSFs with
``PSF_SAMP`` != 1 and a polynomial variation, and the NO_DATA bookkeeping of
non-finite pixels.  Every example must succeed with a finite kernel whose sum is
``kernelSum`` and an output that is NaN exactly where it is flagged NO_DATA, or
raise a :class:`~psfmatch.PsfMatchError`: never another exception, a NaN
kernel, or a hang (an alarm stops an example after 60 s).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, PsfMatchError
from psfmatch.psf import GaussianPsf, PsfexPsf, VariableGaussianPsf

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# the alarm-based time limit of the fuzz script (one implementation for both)
_spec = importlib.util.spec_from_file_location("psfmatch_fuzz_readers_props",
                                               Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_readers.py")
_fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fuzz)
Hang = _fuzz.Hang


def time_limit(seconds=60):
    """Raise :class:`Hang` after ``seconds`` (Unix, main thread)."""
    return _fuzz.time_limit(seconds)


def run_or_typed_error(config, exposure, reference, kernel_sum=1.0):
    """The result, or None when the task refused with a typed error."""
    with time_limit(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ModelPsfMatchTask(config=config).run(exposure, reference, kernelSum=kernel_sum)
        except PsfMatchError:
            return None


def check_result(result, exposure, kernel_sum, rng):
    kernel = result.psfMatchingKernel
    box = exposure.getBBox()
    xs = rng.uniform(box.getMinX(), box.getMaxX(), 4)
    ys = rng.uniform(box.getMinY(), box.getMaxY(), 4)
    images = kernel.computeImages(xs, ys)
    assert np.all(np.isfinite(images))
    np.testing.assert_allclose(images.sum(axis=(1, 2)), kernel_sum, rtol=1e-7, atol=1e-9)
    out = result.psfMatchedExposure
    no_data = (out.mask & out.getMask().getPlaneBitMask("NO_DATA")) != 0
    np.testing.assert_array_equal(np.isnan(out.image), no_data)
    assert np.all(np.isfinite(out.variance[~no_data])) and np.all(np.isposinf(out.variance[no_data]))
    assert out.getBBox() == box


odd = st.integers(1, 12).map(lambda v: 2 * v + 1)


@settings(max_examples=40, **SETTINGS)
@given(
    sigma_sci=st.floats(0.7, 3.0), sigma_ref=st.floats(0.7, 4.0), e1=st.floats(-0.3, 0.3), e2=st.floats(-0.3, 0.3),
    width=odd, height=odd, ref_stamp=st.sampled_from([9, 15, 21, 31]), kernel_size=st.sampled_from([3, 5, 7, 11]),
    order=st.integers(0, 3), spatial=st.sampled_from(["chebyshev1", "polynomial"]),
    region=st.sampled_from(["full", "stamp", "valid"]), basis=st.sampled_from(["AL", "DF"]),
    cell=st.integers(16, 96), shape=st.tuples(st.integers(24, 160), st.integers(24, 160)),
    xy0=st.tuples(st.integers(-500, 5000), st.integers(-500, 5000)), kernel_sum=st.floats(0.1, 10.0),
    seed=st.integers(0, 2 ** 16),
)
def test_task_on_varying_elliptical_psfs(sigma_sci, sigma_ref, e1, e2, width, height, ref_stamp, kernel_size, order,
                                         spatial, region, basis, cell, shape, xy0, kernel_sum, seed):
    h, w = shape
    bbox = Box2I(xy0, (w, h))
    psf = VariableGaussianPsf(width, height, bbox, sigma=[sigma_sci, 0.1 * sigma_sci, 0.0], e1=[e1], e2=[e2])
    config = ModelPsfMatchConfig()
    config.kernel.name = basis
    kc = config.kernel.active
    kc.kernelSize = kernel_size
    kc.spatialKernelOrder = order
    kc.spatialModelType = spatial
    kc.fitRegion = region
    kc.sizeCellX = kc.sizeCellY = cell
    rng = np.random.default_rng(seed)
    exposure = Exposure(rng.normal(size=(h, w)).astype(np.float32), variance=np.ones((h, w), np.float32), psf=psf,
                        xy0=xy0)
    result = run_or_typed_error(config, exposure, GaussianPsf(ref_stamp, ref_stamp, sigma_ref), kernel_sum)
    if result is not None:
        check_result(result, exposure, kernel_sum, rng)


@settings(max_examples=20, **SETTINGS)
@given(
    samp=st.floats(0.5, 1.6), degree=st.integers(0, 2), sigma=st.floats(0.8, 2.0),
    variation=st.floats(0.0, 0.3), sigma_ref=st.floats(1.5, 4.0), order=st.integers(0, 2),
    shape=st.tuples(st.integers(48, 128), st.integers(48, 128)), seed=st.integers(0, 2 ** 16),
)
def test_task_on_psfex_models(samp, degree, sigma, variation, sigma_ref, order, shape, seed):
    rng = np.random.default_rng(seed)
    n = 21
    y, x = np.mgrid[0:n, 0:n].astype(float) - n // 2
    g = np.exp(-(x * x + y * y) / (2 * (sigma / samp) ** 2))
    nterms = (degree + 1) * (degree + 2) // 2
    basis = [g] + [variation * rng.normal() * g * (x / n) ** (k % 2) * (y / n) ** (k // 2 % 2)
                   for k in range(1, nterms)]
    h, w = shape
    psf = PsfexPsf(np.array(basis), degree=degree, polzero=(w / 2 + 1, h / 2 + 1), polscal=(w, h), psf_samp=samp)
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = 11
    config.kernel.active.spatialKernelOrder = order
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    exposure = Exposure(rng.normal(size=(h, w)).astype(np.float32), variance=np.ones((h, w), np.float32), psf=psf)
    result = run_or_typed_error(config, exposure, GaussianPsf(25, 25, sigma_ref))
    if result is not None:
        check_result(result, exposure, 1.0, rng)


@settings(max_examples=20, **SETTINGS)
@given(
    shape=st.tuples(st.integers(40, 96), st.integers(40, 96)), kernel_size=st.sampled_from([3, 5, 7, 11]),
    bad=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True),
                           st.sampled_from(["image nan", "image +inf", "image -inf", "variance nan",
                                            "variance inf", "NO_DATA"])), min_size=0, max_size=6),
)
def test_non_finite_pixels_never_spread_silently(shape, kernel_size, bad):
    """NO_DATA in the output is exactly the border plus the kernel footprint around every unusable input pixel."""
    h, w = shape
    assume(min(h, w) > kernel_size)
    half = kernel_size // 2
    rng = np.random.default_rng(h * 1000 + w)
    img = rng.normal(size=(h, w)).astype(np.float32)
    var = np.ones((h, w), np.float32)
    exposure = Exposure(img, variance=var, psf=GaussianPsf(9, 9, 1.3))
    bit = exposure.getMask().getPlaneBitMask("NO_DATA")
    expected = np.zeros((h, w), bool)
    expected[:half], expected[h - half:], expected[:, :half], expected[:, w - half:] = True, True, True, True
    for fy, fx, kind in bad:
        y, x = int(fy * h), int(fx * w)
        plane, what = kind.split(" ") if " " in kind else ("mask", kind)
        if plane == "image":
            exposure.image[y, x] = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}[what]
        elif plane == "variance":
            exposure.variance[y, x] = {"nan": np.nan, "inf": np.inf}[what]
        else:
            exposure.mask[y, x] |= bit
        expected[max(y - half, 0):y + half + 1, max(x - half, 0):x + half + 1] = True
    before = (exposure.image.copy(), exposure.variance.copy(), exposure.mask.copy())
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = kernel_size
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    result = run_or_typed_error(config, exposure, GaussianPsf(15, 15, 2.0))
    assert result is not None
    out = result.psfMatchedExposure
    np.testing.assert_array_equal((out.mask & bit) != 0, expected)
    assert np.all(np.isnan(out.image[expected])) and np.all(np.isfinite(out.image[~expected]))
    assert np.all(np.isposinf(out.variance[expected])) and np.all(np.isfinite(out.variance[~expected]))
    for a, b in zip(before, (exposure.image, exposure.variance, exposure.mask)):
        np.testing.assert_array_equal(a, b)


def test_time_limit_stops_a_hang():
    import time

    with pytest.raises(Hang):
        with time_limit(0.2):
            time.sleep(5)
