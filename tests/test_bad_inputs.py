"""The catalogue of bad inputs (issue 8): every one gets a specific, typed, actionable error.

Each test asserts the exception type and its message.  Every typed error is a
:class:`psfmatch.PsfMatchError` and also the builtin a generic ``except``
expects (``ValueError``, ``RuntimeError``, ``OSError``, ``FileNotFoundError``,
``MemoryError``); :func:`raises` checks both.

Sections (the issue's list, in order):

1. PSF stamps: NaN/inf, zero or negative sum, even or non-square sizes, empty
   arrays, wrong dimensionality (and a sum that overflows).
2. A PSF model that raises at some positions: candidates skipped and recorded,
   ``NoKernelCandidatesError`` only when none remains.
3. Exposures: smaller than a cell or than the kernel, planes of different
   shapes, negative or NaN variance, non-finite pixels (NO_DATA, never spread
   silently), not an exposure, no PSF.
4. Configuration values out of range or of the wrong type (the field is named).
5. A reference broader than its stamp (a warning).
6. Corrupt, truncated or wrong-type FITS files, for exposures, PSFEx models,
   PSF images and kernel files (the file and the HDU are named).
7. Huge sizes: a memory estimate and a clear error before allocating, naming
   the setting that raises the limit.

Policy on missing files: :class:`~psfmatch.errors.MissingFileError`, which is
both a PsfMatchError and a ``FileNotFoundError``, with the path in the message.
"""

from __future__ import annotations

import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import (Box2I, Exposure, LinearCombinationKernel, MaskedImage, ModelPsfMatchConfig, ModelPsfMatchTask,
                      PsfMatchError)
from psfmatch.convolve import convolve_masked_image
from psfmatch.geom import Box2D, Point2D
from psfmatch.errors import (CorruptFileError, InvalidConfigError, InvalidInputError, KernelQualityWarning,
                             MemoryLimitError, MissingFileError, MissingPsfError, NoKernelCandidatesError,
                             PsfEvaluationError, TruncatedPsfWarning, UnsupportedFormatError)
from psfmatch.psf import GaussianPsf, ImagePsf, VariableGaussianPsf, as_psf, read_image_psf, read_psf, read_psfex
from psfmatch.psf.psfex import MAX_STAMP_SIZE


def raises(error, match):
    """``pytest.raises`` that also checks the error is a PsfMatchError."""
    assert issubclass(error, PsfMatchError)
    return pytest.raises(error, match=match)


def small_config(order=0, cell=64, kernel_size=11, **top):
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = kernel_size
    config.kernel.active.spatialKernelOrder = order
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = cell
    for key, value in top.items():
        setattr(config, key, value)
    return config


def run_quietly(task, exposure, reference, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        return task.run(exposure, reference, **kwargs)


def gauss_stamp(n=15, sigma=1.6, m=None):
    m = n if m is None else m
    y, x = np.mgrid[0:n, 0:m].astype(float)
    return np.exp(-((x - m // 2) ** 2 + (y - n // 2) ** 2) / (2 * sigma ** 2))


class StampPsf:
    """A user PSF (only ``computeKernelImage``) returning ``stamp(position)``."""

    def __init__(self, stamp):
        self.stamp = stamp
        self.calls = 0

    def computeKernelImage(self, position):
        self.calls += 1
        return self.stamp(position) if callable(self.stamp) else self.stamp


# ---------------------------------------------------------------------------
# 1. PSF stamps


@pytest.mark.parametrize("stamp, match", [
    (np.where(gauss_stamp() > 0.5, np.nan, gauss_stamp()), r"kernel image at \(3, 4\) contains NaN or inf values"),
    (np.where(gauss_stamp() > 0.5, np.inf, gauss_stamp()), "contains NaN or inf values"),
    (np.zeros((15, 15)), "has non-positive sum 0; a PSF needs positive flux"),
    (-gauss_stamp(), "has non-positive sum -"),
    (gauss_stamp(20), "has even size 20x20; kernel images must be odd-sized"),
    (gauss_stamp(21, m=20), "has even size 20x21"),
    (np.zeros((0, 0)), r"is empty \(shape \(0, 0\)\)"),
    (np.zeros((0, 15)), "is empty"),
    (gauss_stamp()[7], r"must be 2-d; got shape \(15,\)"),
    (gauss_stamp()[None], r"must be 2-d; got shape \(1, 15, 15\)"),
    (np.array([["a", "b"], ["c", "d"]]), "is not a numeric array"),
    (np.full((3, 3), 1e308), "has a sum that overflows"),
])
def test_bad_psf_stamps_are_refused_with_the_position(stamp, match):
    with raises(PsfEvaluationError, match):
        as_psf(StampPsf(stamp)).computeKernelImage((3, 4))
    assert issubclass(PsfEvaluationError, RuntimeError)


def test_odd_non_square_stamps_are_valid():
    # SPEC 2: odd width and height, not necessarily equal; the task pads them to a square
    psf = StampPsf(gauss_stamp(15, m=11))
    exposure = Exposure(np.ones((128, 128), np.float32), psf=psf)
    result = run_quietly(ModelPsfMatchTask(config=small_config()), exposure, GaussianPsf(21, 21, 2.4))
    assert np.isfinite(result.psfMatchingKernel.computeImage((64, 64))).all()


@pytest.mark.parametrize("array, match", [
    (np.full((5, 5), np.nan), "ImagePsf array holds 25 NaN or inf values"),
    (np.zeros((5, 5)), "ImagePsf array has non-positive sum 0"),
    (np.zeros((0, 5)), r"ImagePsf needs a non-empty array; got shape \(0, 5\)"),
    (np.ones((2, 3, 3)), "ImagePsf needs a 2-d array; got 3 dimension"),
    (np.ones(5), "ImagePsf needs a 2-d array; got 1 dimension"),
    (np.full((3, 3), 1e308), "ImagePsf array's sum overflows"),
])
def test_bad_psf_image_arrays(array, match):
    with raises(InvalidInputError, match):
        ImagePsf(array)


def test_bad_science_stamps_everywhere_leave_no_candidate():
    psf = StampPsf(np.full((15, 15), np.nan))
    exposure = Exposure(np.ones((128, 128), np.float32), psf=psf)
    with raises(NoKernelCandidatesError, r"the science PSF could not be evaluated at any of the 4 cell centres, so "
                                         r"no candidate constrains the kernel \(4 of 4 candidates rejected; first: "
                                         r"candidate 0 at \(\d+\.?\d*, \d+\.?\d*\): science PSF: .*contains NaN or inf"):
        run_quietly(ModelPsfMatchTask(config=small_config()), exposure, GaussianPsf(21, 21, 2.4))


def test_bad_reference_stamp_is_named():
    exposure = Exposure(np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    with raises(PsfEvaluationError, r"StampPsf kernel image at \(63.5, 63.5\) has even size 20x20"):
        run_quietly(ModelPsfMatchTask(config=small_config()), exposure, StampPsf(gauss_stamp(20, 2.4)))


# ---------------------------------------------------------------------------
# 2. a PSF model that raises at some positions


def partial_psf(fails):
    def stamp(position):
        if fails(position.x, position.y):
            raise ValueError(f"no stars near ({position.x:.0f}, {position.y:.0f})")
        return gauss_stamp()
    return StampPsf(stamp)


def test_failing_candidates_are_skipped_recorded_and_the_model_held():
    # 3 x 3 cells; the model fails right of x = 50: one column of candidates remains, which
    # constrains the variation along y only (the rule: fit what the candidates determine rather than fail)
    exposure = Exposure(np.ones((192, 192), np.float32), psf=partial_psf(lambda x, y: x > 50))
    result = run_quietly(ModelPsfMatchTask(config=small_config(order=2)), exposure, GaussianPsf(21, 21, 2.4))
    md = result.metadata
    assert md["nCandidatesRejected"] == 6 and md["nCandidatesUsed"] == 3
    assert md["spatialKernelOrderRequested"] == 2 and md["spatialKernelOrder"] == 2
    rejected = md["rejectedCandidates"]
    assert [c["id"] for c in rejected] == [1, 2, 4, 5, 7, 8]
    assert all(c["status"] == "BAD" and "science PSF" in c["reason"] and "no stars near" in c["reason"]
               for c in rejected)
    note = next(n for n in md["notes"] if "fitted with degree" in n)
    assert re.search(r"the order-2 spatial model is fitted with degree at most 0 along x: the candidates lie on 1 "
                     r"distinct column\(s\) and 3 row\(s\) of the 3x3 grid.*; 6 of 9 candidates rejected; first: "
                     r"candidate 1 at \(95.5, \d+\.?\d*\): science PSF: .*ValueError: no stars near \(96, \d+\)", note)
    bad = [c for c in result.kernelCellSet.candidates() if c.status.value == "BAD"]
    assert len(bad) == 6
    kernel = result.psfMatchingKernel  # constant along x, where no candidate survived
    np.testing.assert_allclose(kernel.computeImages([0.0], [100.0])[0], kernel.computeImages([191.0], [100.0])[0],
                               rtol=0, atol=1e-12)


def test_reference_failing_at_some_candidates():
    reference = partial_psf(lambda x, y: x < 60)
    exposure = Exposure(np.ones((192, 192), np.float32), psf=GaussianPsf(15, 15, 1.6))
    result = run_quietly(ModelPsfMatchTask(config=small_config(order=1)), exposure, reference)
    reasons = [c["reason"] for c in result.metadata["rejectedCandidates"]]
    assert len(reasons) == 3 and all(r.startswith("reference PSF: ") for r in reasons)
    assert result.metadata["spatialKernelOrder"] == 1  # six candidates in two columns still constrain order 1


def test_model_failing_everywhere_raises_with_count_position_and_reason():
    exposure = Exposure(np.ones((192, 192), np.float32), psf=partial_psf(lambda x, y: True))
    with raises(NoKernelCandidatesError, r"could not be evaluated at any of the 9 cell centres.*9 of 9 candidates "
                                         r"rejected; first: candidate 0 at \(\d+\.?\d*, \d+\.?\d*\): science PSF: .*no "
                                         r"stars near \(\d+, \d+\)\); check that the PSF model covers the exposure's "
                                         r"box"):
        run_quietly(ModelPsfMatchTask(config=small_config(order=2)), exposure, GaussianPsf(21, 21, 2.4))
    assert issubclass(NoKernelCandidatesError, RuntimeError)


def test_reference_failing_at_every_candidate_raises():
    # the reference works only at the box centre (where its size is read), not at any cell centre
    reference = partial_psf(lambda x, y: abs(x - 63.5) > 1 or abs(y - 63.5) > 1)
    exposure = Exposure(np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    with raises(NoKernelCandidatesError, r"the reference PSF could not be evaluated at any of the 4 cell centres "
                                         r"where the science PSF could.*4 of 4 candidates rejected; first: "
                                         r"candidate 0 at \(\d+\.?\d*, \d+\.?\d*\): reference PSF: "):
        run_quietly(ModelPsfMatchTask(config=small_config()), exposure, reference)


# ---------------------------------------------------------------------------
# 3. exposures


def test_exposure_smaller_than_the_kernel():
    exposure = Exposure(np.ones((10, 40), np.float32), psf=GaussianPsf(15, 15, 1.6))
    with raises(InvalidInputError, r"exposure \(40x10 pixels\) is no larger than the kernel's border \(5 pixels on "
                                   r"each side of a 11x11 kernel\).*use a smaller kernelSize"):
        ModelPsfMatchTask(config=small_config()).run(exposure, GaussianPsf(21, 21, 2.4))


def test_exposure_smaller_than_a_cell_uses_one_constant_candidate():
    exposure = Exposure(np.ones((40, 50), np.float32), psf=GaussianPsf(15, 15, 1.6))
    result = run_quietly(ModelPsfMatchTask(config=small_config(order=2)), exposure, GaussianPsf(21, 21, 2.4))
    md = result.metadata
    assert md["nCells"] == 1 and md["spatialKernelOrder"] == 0
    assert any("lowered from 2 to 0: 1 candidates on a 1x1 grid" in n for n in md["notes"])


def test_planes_of_different_shapes():
    with raises(InvalidInputError, r"image, mask and variance must have one shape; image is \(10, 12\), mask is "
                                   r"\(10, 10\)"):
        Exposure(np.zeros((10, 12)), np.zeros((10, 10), np.int32))
    with raises(InvalidInputError, r"image is \(10, 12\), variance is \(12, 10\)"):
        MaskedImage(np.zeros((10, 12)), variance=np.ones((12, 10)))
    exposure = Exposure(np.zeros((10, 12)))
    with raises(InvalidInputError, r"mask shape \(3, 3\) differs from the image's \(10, 12\)"):
        exposure.mask = np.zeros((3, 3), np.int32)
    # the setter checks what the constructor checks (it used to cast anything to int32)
    with raises(InvalidInputError, "not boolean; convert a boolean mask with Mask.from_bool"):
        exposure.mask = np.ones((10, 12), bool)
    with raises(InvalidInputError, "mask must hold integers; got dtype float64"):
        exposure.mask = np.ones((10, 12))
    with raises(InvalidInputError, "mask values span 0..1099511627776: bits above 31 are set"):
        exposure.mask = np.full((10, 12), 1 << 40, np.int64) * np.eye(10, 12, dtype=np.int64)
    exposure.mask = np.full((10, 12), 1 << 31, np.int64)
    assert exposure.mask.dtype == np.int32 and np.all(exposure.mask == -(1 << 31))


@pytest.mark.parametrize("image, match", [
    (np.zeros(5), "image must be a 2-d array; got 1 dimension"),
    (np.zeros((2, 3, 3)), "image must be a 2-d array; got 3 dimension"),
    (np.zeros((0, 4)), r"image must not be empty; got shape \(0, 4\)"),
    (np.zeros((3, 3), complex), "image must hold real numbers; got dtype complex128"),
    (np.array([["a"]]), "image must hold real numbers"),
])
def test_bad_image_arrays(image, match):
    with raises(InvalidInputError, match):
        Exposure(image)


def test_negative_variance():
    var = np.ones((128, 128), np.float32)
    var[3, 4] = -2.0
    exposure = Exposure(np.ones((128, 128), np.float32), variance=var, psf=GaussianPsf(15, 15, 1.6))
    with raises(InvalidInputError, r"variance has 1 negative pixel\(s\) \(min -2\); variance must be >= 0 \(mark "
                                   r"unusable pixels NO_DATA or set their variance to NaN\)"):
        ModelPsfMatchTask(config=small_config()).run(exposure, GaussianPsf(21, 21, 2.4))


def test_non_finite_pixels_and_nan_variance_become_no_data_and_never_spread_silently():
    """NaN/inf image pixels, NaN/inf variance pixels and NO_DATA pixels: every output pixel whose kernel
    footprint covers one is NaN, has infinite variance and the NO_DATA bit; every other one is finite."""
    n, k = 128, 11
    h = k // 2
    rng = np.random.default_rng(8)
    img = rng.normal(size=(n, n)).astype(np.float32)
    var = np.ones((n, n), np.float32)
    mask = np.zeros((n, n), np.int32)
    img[30, 40], img[60, 70], img[90, 20] = np.nan, np.inf, -np.inf
    var[50, 100], var[100, 50] = np.nan, np.inf
    exposure = Exposure(img, mask, var, psf=GaussianPsf(15, 15, 1.6))
    no_data = exposure.getMask().getPlaneBitMask("NO_DATA")
    exposure.mask[20, 100] = no_data
    before = [exposure.image.copy(), exposure.mask.copy(), exposure.variance.copy()]
    out = run_quietly(ModelPsfMatchTask(config=small_config(kernel_size=k)), exposure,
                      GaussianPsf(21, 21, 2.4)).psfMatchedExposure

    expected = np.zeros((n, n), bool)
    expected[:h], expected[-h:], expected[:, :h], expected[:, -h:] = True, True, True, True
    for y, x in [(30, 40), (60, 70), (90, 20), (50, 100), (100, 50), (20, 100)]:
        expected[max(y - h, 0):y + h + 1, max(x - h, 0):x + h + 1] = True
    flagged = (out.mask & no_data) != 0
    np.testing.assert_array_equal(flagged, expected)
    assert np.all(np.isnan(out.image[expected])) and np.all(np.isposinf(out.variance[expected]))
    assert np.all(np.isfinite(out.image[~expected])) and np.all(np.isfinite(out.variance[~expected]))
    for a, b in zip(before, [exposure.image, exposure.mask, exposure.variance]):  # the input is not modified
        np.testing.assert_array_equal(a, b)


def test_not_an_exposure_and_no_psf():
    task = ModelPsfMatchTask(config=small_config())
    with raises(InvalidInputError, r"exposure must be a psfmatch.Exposure; got ndarray \(wrap arrays with "
                                   r"Exposure\(image, mask, variance, psf=...\)\)"):
        task.run(np.zeros((128, 128)), GaussianPsf(21, 21, 2.4))
    with raises(MissingPsfError, "exposure does not contain a Psf model"):
        task.run(Exposure(np.zeros((128, 128), np.float32)), GaussianPsf(21, 21, 2.4))
    with raises(InvalidInputError, "a PSF model needs a computeKernelImage"):
        Exposure(np.zeros((8, 8)), psf=np.ones((3, 3)))


@pytest.mark.parametrize("bad, match", [(0.0, "positive and finite; got 0.0"), (-1.0, "positive and finite"),
                                        (float("nan"), "positive and finite; got nan"), (float("inf"), "positive"),
                                        ("x", "a number; got 'x'"), ("1", "a number; got '1'"),
                                        (None, "a number; got None"), (True, "a number; got True"),
                                        (np.bool_(True), "a number; got np.True_")])
def test_bad_kernel_sum(bad, match):
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    with raises(InvalidInputError, f"kernelSum must be {match}"):
        ModelPsfMatchTask(config=small_config()).run(exposure, GaussianPsf(21, 21, 2.4), kernelSum=bad)


def test_values_that_overflow_the_transforms_are_refused_not_turned_into_nan():
    # finite inputs whose convolution cannot be held by the planes' type used to give tiles of inf and NaN
    # that no mask flagged; the pixel of 3e38 (a float32 garbage value) and kernelSum = 1e300 are refused
    rng = np.random.default_rng(3)
    image = (rng.normal(size=(128, 128)) + 100).astype(np.float32)
    image[70, 60] = 3e38
    exposure = Exposure(image, variance=np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    task = ModelPsfMatchTask(config=small_config())
    with raises(InvalidInputError, r"convolving the image plane overflowed float32 in rows \d+\.\.\d+: its values "
                                   r"\(up to 3e\+38 in magnitude there\) .* give the exposure float64 planes, use a "
                                   "smaller kernelSum, or flag the absurd pixels NO_DATA"):
        task.run(exposure, GaussianPsf(21, 21, 2.4))
    # in float64 the same pixel is matched like any other: finite, and NaN exactly where NO_DATA
    wide = Exposure(image.astype(np.float64), variance=np.ones((128, 128)), psf=GaussianPsf(15, 15, 1.6))
    out = task.run(wide, GaussianPsf(21, 21, 2.4)).psfMatchedExposure
    no_data = (out.mask & out.getMask().getPlaneBitMask("NO_DATA")) != 0
    np.testing.assert_array_equal(np.isnan(out.image), no_data)
    assert np.isfinite(out.image[~no_data]).all() and np.nansum(out.image) == pytest.approx(np.sum(
        image[5:-5, 5:-5].astype(np.float64)), rel=1e-3)
    # kernelSum = 1e300: the kernel fits float64 but not float32, and its square (for the variance) fits neither
    with raises(InvalidInputError, r"the kernel's images \(kernelSum = 1e\+300 included\) or their squares \(for the "
                                   r"variance plane\) overflow float64; use a smaller kernelSum"):
        task.run(wide, GaussianPsf(21, 21, 2.4), kernelSum=1e300)
    # kernelSum = 1e36: the kernel and its square fit float64, but the squared kernel's float32 transforms hold
    # inf whatever the pixels (a zero variance plane was said to overflow with "values up to 0")
    image[70, 60] = 100.0
    for variance in (np.ones((128, 128), np.float32), np.zeros((128, 128), np.float32)):
        with raises(InvalidInputError, r"the squared kernel \(kernelSum = 1e\+36 included\), with a sum of magnitudes "
                                       r"up to [\d.]+e\+70, exceeds what float32 transforms of the variance plane can "
                                       r"hold \(3.4e\+38\); give the exposure float64 planes or use a smaller kernelSum"):
            task.run(Exposure(image, variance=variance, psf=GaussianPsf(15, 15, 1.6)), GaussianPsf(21, 21, 2.4),
                     kernelSum=1e36)
    # kernelSum = 1e17: the kernel fits float32, the pixels times the kernel do not
    image[70, 60] = 1e25
    with raises(InvalidInputError, r"convolving the image plane overflowed float32 .* \(up to 1e\+25 in magnitude "
                                   r"there\) .* give the exposure float64 planes"):
        task.run(Exposure(image, variance=np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6)),
                 GaussianPsf(21, 21, 2.4), kernelSum=1e17)
    image[70, 60] = 100.0
    # and float64 planes hold it
    out = task.run(Exposure(image.astype(np.float64), variance=np.ones((128, 128)), psf=GaussianPsf(15, 15, 1.6)),
                   GaussianPsf(21, 21, 2.4), kernelSum=1e36).psfMatchedExposure
    assert np.nanmedian(out.image) == pytest.approx(1e38, rel=1e-2)


def test_a_kernel_sum_that_underflows_the_variance_is_refused_not_turned_into_zeros():
    """kernelSum = 1e-22 (a unit conversion) made every matched float32 variance 0 without a word: a perfect pixel
    to a coadd.  The variance, ``sum K^2 V``, is about 1e-44 x 0.03 x 25 there, below float32's smallest normal
    number; float64 planes hold it, and so does a float32 variance whose level keeps it normal."""
    rng = np.random.default_rng(4)
    image = (rng.normal(size=(128, 128)) * 5 + 100).astype(np.float32)
    variance = np.full((128, 128), 25.0, np.float32)
    task = ModelPsfMatchTask(config=small_config())
    ref = GaussianPsf(21, 21, 2.4)
    with raises(InvalidInputError, r"^kernelSum = 1e-22 takes the matched variance plane's typical values \(about 25, "
                                   r"times the squared kernel's sum, [\d.]+e-4\d\) to [\d.]+e-4\d, more than 1024 times "
                                   r"below the smallest normal float32 \(1\.18e-38\): they would keep fewer than 14 of "
                                   r"their 24 bits or become 0 .* "
                                   r"give the exposure float64 planes, or match with kernelSum = 1 and convert"):
        task.run(Exposure(image, variance=variance, psf=GaussianPsf(15, 15, 1.6)), ref, kernelSum=1e-22)
    # a variance plane of zeros (a noiseless simulation): the image's level is checked instead
    with raises(InvalidInputError, r"^kernelSum = 1e-45 takes the matched image plane's typical values \(about 100, "
                                   r"times the kernel's sum of magnitudes"):
        task.run(Exposure(image, variance=np.zeros_like(variance), psf=GaussianPsf(15, 15, 1.6)), ref,
                 kernelSum=1e-45)
    # float64 planes keep the variance exactly kernelSum**2 times what kernelSum = 1 gives
    wide = Exposure(image.astype(np.float64), variance=variance.astype(np.float64), psf=GaussianPsf(15, 15, 1.6))
    one = task.run(wide, ref).psfMatchedExposure.variance
    tiny = task.run(wide, ref, kernelSum=1e-22).psfMatchedExposure.variance
    inner = (slice(20, -20), slice(20, -20))
    np.testing.assert_allclose(tiny[inner], 1e-44 * one[inner], rtol=1e-9)
    assert tiny[inner].min() > 0
    # a float32 variance whose level keeps s**2 V normal is matched: 1e-16**2 x 0.03 x 25 is about 7e-33
    out = task.run(Exposure(image, variance=variance, psf=GaussianPsf(15, 15, 1.6)), ref, kernelSum=1e-16)
    v = out.psfMatchedExposure.variance[inner]
    np.testing.assert_allclose(v, 1e-32 * one[inner], rtol=1e-5)
    # an input already below the smallest normal number is not the kernel's doing: it is matched as it is
    low = Exposure(image * np.float32(1e-20), variance=np.full((128, 128), 1e-39, np.float32),
                   psf=GaussianPsf(15, 15, 1.6))
    assert np.isfinite(task.run(low, ref).psfMatchedExposure.variance[inner]).all()


# ---------------------------------------------------------------------------
# 4. configuration


@pytest.mark.parametrize("where, field, value, match", [
    ("kernel.active", "kernelSize", 12, r"kernel\['AL'\].kernelSize: must satisfy an odd integer >= 3; got 12"),
    ("kernel.active", "kernelSize", "abc", r"kernel\['AL'\].kernelSize: expected an int; got 'abc'"),
    ("kernel.active", "kernelSize", 21.5, r"kernelSize: expected an int; got 21.5"),
    ("kernel.active", "spatialKernelOrder", -1, r"spatialKernelOrder: out of range \[0, 20\]; got -1"),
    ("kernel.active", "sizeCellX", 8, r"sizeCellX: out of range \[16, inf\); got 8"),
    ("kernel.active", "alardSigGauss", [-1.0], "alardSigGauss: every item must satisfy positive sigmas"),
    ("kernel.active", "alardDegGauss", [1.5], r"alardDegGauss\[0\]: expected an int; got 1.5"),
    ("kernel.active", "spatialModelType", "spline", "spatialModelType: must be one of 'chebyshev1', 'polynomial'"),
    ("kernel.active", "solveRcond", 2.0, r"solveRcond: out of range \(0.0, 1.0\); got 2.0"),
    ("", "maxMemoryGiB", 0, r"ModelPsfMatchConfig.maxMemoryGiB: out of range \(0.0, inf\); got 0"),
    ("", "maxMemoryGiB", float("nan"), "maxMemoryGiB: NaN is not allowed"),
    ("", "autoPadPsfTo", 5, r"autoPadPsfTo: out of range \[1.0, 2.0\); got 5"),
    ("", "maskDilationThreshold", "x", "maskDilationThreshold: expected a float; got 'x'"),
    ("", "doAutoPadPsf", "maybe", r"doAutoPadPsf: expected a bool \(True or False\); got 'maybe'"),
    ("", "padPsfBy", -2, "padPsfBy: must satisfy a non-negative integer; got -2"),
    ("", "convolveTileSize", 8, r"convolveTileSize: out of range \[64, inf\); got 8"),
])
def test_config_values_are_validated_and_the_field_named(where, field, value, match):
    config = ModelPsfMatchConfig()
    target = config.kernel.active if where else config
    before = config.to_dict()
    with raises(InvalidConfigError, match):
        setattr(target, field, value)
    assert config.to_dict() == before  # a refused value leaves the config as it was
    assert issubclass(InvalidConfigError, ValueError)


def test_config_cross_checks_and_type():
    config = ModelPsfMatchConfig()
    with raises(InvalidConfigError, r"kernel.name: must be one of \['AL', 'DF'\]; got 'XX'"):
        config.kernel.name = "XX"
    with raises(InvalidConfigError, "has no field 'kernelSise'"):
        config.kernelSise = 3
    config.doAutoPadPsf = False
    config.padPsfBy = 3
    with raises(InvalidConfigError, r"padPsfBy \(3 pixels\) must be even number"):
        ModelPsfMatchTask(config=config)
    config = ModelPsfMatchConfig()
    config.kernel.active.alardNGauss = 2
    with raises(InvalidConfigError, r"alardNGauss \(2\) must equal len\(alardSigGauss\) \(3\)"):
        ModelPsfMatchTask(config=config)
    with raises(InvalidConfigError, "config must be a ModelPsfMatchConfig; got dict"):
        ModelPsfMatchTask(config={"kernelSize": 21})


# ---------------------------------------------------------------------------
# 5. a reference broader than its stamp


def test_reference_with_truncated_wings_warns():
    exposure = Exposure(np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    warnings.simplefilter("ignore", KernelQualityWarning)  # (pytest restores the filters after the test)
    with pytest.warns(TruncatedPsfWarning, match=r"the reference PSF is truncated by its 17x17 stamp: its edge "
                                                  r"reaches 0.\d+ of its peak .*Use a larger reference stamp"):
        result = ModelPsfMatchTask(config=small_config()).run(exposure, GaussianPsf(17, 17, 5.0))
    assert any("truncated" in n for n in result.metadata["notes"])


# ---------------------------------------------------------------------------
# 6. files


def write_psfex(path, *, samp=1.0, extra=None, drop=(), basis=None):
    y, x = np.mgrid[-7:8, -7:8].astype(float)
    g = np.exp(-(x * x + y * y) / (2 * 1.6 ** 2))
    basis = np.array([g] + [0.01 * g] * 5, np.float32) if basis is None else np.asarray(basis, np.float32)
    col = fits.Column(name="PSF_MASK", format=f"{basis.size}E", dim="(15, 15, 6)", array=basis[None])
    hdu = fits.BinTableHDU.from_columns([col], name="PSF_DATA")
    cards = {"POLNAXIS": 2, "POLGRP1": 1, "POLNAME1": "X_IMAGE", "POLZERO1": 64.5, "POLSCAL1": 128.0, "POLGRP2": 1,
             "POLNAME2": "Y_IMAGE", "POLZERO2": 64.5, "POLSCAL2": 128.0, "POLNGRP": 1, "POLDEG1": 2, "PSF_SAMP": samp,
             "PSFNAXIS": 3, "PSFAXIS1": 15, "PSFAXIS2": 15, "PSFAXIS3": 6}
    cards.update(extra or {})
    for key, value in cards.items():
        if key not in drop:
            hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


@pytest.fixture
def files(tmp_path):
    """One good file of each kind, plus the bad ones every reader is tried on."""
    bbox = Box2I((0, 0), (64, 64))
    exposure = Exposure(np.ones((64, 64), np.float32), psf=VariableGaussianPsf(15, 15, bbox, sigma=[1.6, 0.1, 0.0]),
                        metadata={"id": 1})
    out = {"exposure": tmp_path / "exposure.fits", "psfex": write_psfex(tmp_path / "model.psf"),
           "image": tmp_path / "psf_image.fits", "kernel": tmp_path / "kernel.fits"}
    exposure.writeFits(out["exposure"])
    fits.PrimaryHDU(gauss_stamp(15, 1.6)).writeto(out["image"])
    config = small_config(order=1, cell=32)
    kernel = run_quietly(ModelPsfMatchTask(config=config), Exposure(np.ones((64, 64), np.float32),
                                                                     psf=GaussianPsf(15, 15, 1.6)),
                         GaussianPsf(21, 21, 2.4)).psfMatchingKernel
    kernel.writeFits(out["kernel"])
    (tmp_path / "empty.fits").write_bytes(b"")
    (tmp_path / "notes.fits").write_text("SIMPLE? no: this is a text file with a .fits name\n" * 20)
    (tmp_path / "folder.fits").mkdir()
    return out


READERS = {
    "exposure": Exposure.readFits,
    "PSFEx": read_psfex,
    "PSF image": read_image_psf,
    "kernel": LinearCombinationKernel.readFits,
    "PSF": read_psf,
}
OWN_READER = {"exposure": Exposure.readFits, "psfex": read_psfex, "image": read_image_psf,
              "kernel": LinearCombinationKernel.readFits}


@pytest.mark.parametrize("what", READERS)
def test_missing_file(tmp_path, what):
    path = tmp_path / "nowhere.fits"
    with raises(MissingFileError, f"{what} file {re.escape(repr(str(path)))} does not exist") as info:
        READERS[what](path)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("what", READERS)
def test_directory_instead_of_a_file(files, tmp_path, what):
    with raises(UnsupportedFormatError, f"{what} file .*folder.fits' is a directory, not a FITS file"):
        READERS[what](tmp_path / "folder.fits")


@pytest.mark.parametrize("what", READERS)
@pytest.mark.parametrize("name, why", [("empty.fits", "Empty or corrupt FITS file"),
                                       ("notes.fits", "No SIMPLE card found")])
def test_empty_and_text_files(files, tmp_path, what, name, why):
    with raises(CorruptFileError, f"{re.escape(str(tmp_path / name))}: not a readable FITS file "
                                  f"\\(OSError: {why}"):
        READERS[what](tmp_path / name)


def _cut_points(path):
    """Byte offsets that cut a file inside each HDU's header and inside each HDU's data."""
    with fits.open(path) as hdul:
        infos = [(h.fileinfo(), h.size) for h in hdul]
    points = []
    for i, (info, size) in enumerate(infos):
        points.append((f"header of HDU {i}", info["hdrLoc"] + 100))
        if size > 1:  # (a cut in the padding after the data loses nothing)
            points.append((f"data of HDU {i}", info["datLoc"] + size // 2))
    return points


@pytest.mark.parametrize("kind", OWN_READER)
def test_truncated_files(files, tmp_path, kind):
    data = files[kind].read_bytes()
    cut = tmp_path / f"cut-{kind}.fits"
    for where, n in _cut_points(files[kind]):
        cut.write_bytes(data[:n])
        for mode in ("default", "error"):  # warnings turned into errors must not leak astropy's
            with warnings.catch_warnings():
                warnings.simplefilter(mode)
                with pytest.raises(CorruptFileError) as info:
                    OWN_READER[kind](cut)
            assert re.match(f"{re.escape(str(cut))}.*(truncated|not a readable FITS file)", str(info.value)), \
                f"cut in the {where} at byte {n}: {info.value}"


def test_truncation_names_the_hdu(files, tmp_path):
    data = files["exposure"].read_bytes()
    with fits.open(files["exposure"]) as hdul:
        variance = hdul["VARIANCE"].fileinfo()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[:variance["datLoc"] + 100])
    with raises(CorruptFileError, r"cut.fits\[HDU 3 VARIANCE\]: the header promises 16384 bytes of data \(BITPIX = "
                                  r"-32, NAXISn = \[64, 64\]\) but only 100 follow: the file is truncated"):
        Exposure.readFits(cut)
    cut.write_bytes(data[:variance["hdrLoc"] + 800])  # past its EXTNAME card
    with raises(CorruptFileError, r"cut.fits\[HDU 3 VARIANCE\]: the file ends inside this HDU's header"):
        Exposure.readFits(cut)
    # cut exactly between two HDUs: the file looks complete to astropy, but the HDUs a psfmatch file
    # always has are missing
    cut.write_bytes(data[:variance["hdrLoc"]])
    with raises(CorruptFileError, r"the VARIANCE, METADATA HDU\(s\) of a psfmatch exposure file are missing"):
        Exposure.readFits(cut)


def test_wrong_kind_of_file(files):
    # a PSFEx model is named as one, with the way to read it (hdu= could choose no HDU of it)
    with raises(UnsupportedFormatError, r"model.psf: no 2-d image HDU \(HDUs: \['PRIMARY', 'PSF_DATA'\]\); it is a "
                r"PSFEx PSF model .* read it with read_psf or read_psfex \(on the command line, as the PSF psfex:FILE\)"):
        Exposure.readFits(files["psfex"])
    with raises(UnsupportedFormatError, r"model.psf\[1\]: not a 2-d image HDU"):
        Exposure.readFits(files["psfex"], hdu=1)
    with raises(UnsupportedFormatError, "model.psf: no image HDU with data .* it is a PSFEx PSF model .* psfex:FILE"):
        read_image_psf(files["psfex"])
    with raises(UnsupportedFormatError, r"model.psf\[1\]: not an image HDU with data"):
        read_image_psf(files["psfex"], hdu=1)
    with raises(UnsupportedFormatError, "psf_image.fits: not a PSFEx model: no PSF_DATA binary table"):
        read_psfex(files["image"])
    with raises(UnsupportedFormatError, "PMFORMAT = None; not a psfmatch kernel file"):
        LinearCombinationKernel.readFits(files["image"])
    with raises(UnsupportedFormatError, "PMFORMAT = 'psfmatch-exposure'; not a psfmatch kernel file"):
        LinearCombinationKernel.readFits(files["exposure"])
    with raises(UnsupportedFormatError, "no IMAGE extension for the 'lsst' layout"):
        Exposure.readFits(files["psfex"], layout="lsst")


def test_missing_hdus_and_keywords(files, tmp_path):
    with raises(CorruptFileError, r"nodeg.psf\[PSF_DATA\]: the PSFEx header lacks keyword POLDEG1"):
        read_psfex(write_psfex(tmp_path / "nodeg.psf", drop=("POLDEG1",)))
    with raises(CorruptFileError, "PSF_SAMP = 'abc' is not a valid number"):
        read_psfex(write_psfex(tmp_path / "samp.psf", extra={"PSF_SAMP": "abc"}))
    with raises(CorruptFileError, "POLDEG1 = -1; the degree must be >= 0"):
        read_psfex(write_psfex(tmp_path / "deg.psf", extra={"POLDEG1": -1}))
    with raises(CorruptFileError, "PSFAXIS3 = 3 contradicts POLDEG1 = 2"):
        read_psfex(write_psfex(tmp_path / "axis3.psf", extra={"PSFAXIS3": 3}))
    with fits.open(files["exposure"]) as hdul:
        fits.HDUList([h.copy() for h in hdul if h.name != "VARIANCE"]).writeto(tmp_path / "novar.fits")
    with raises(CorruptFileError, r"novar.fits: the VARIANCE HDU\(s\) of a psfmatch exposure file are missing"):
        Exposure.readFits(tmp_path / "novar.fits")
    with fits.open(files["kernel"]) as hdul:
        primary = hdul[0].copy()
        del primary.header["KSUM"]
        fits.HDUList([primary, hdul[1].copy(), hdul[2].copy()]).writeto(tmp_path / "noksum.fits")
    with raises(CorruptFileError, "keyword KSUM is missing from the kernel file"):
        LinearCombinationKernel.readFits(tmp_path / "noksum.fits")


def test_nan_filled_psf_images(tmp_path):
    fits.PrimaryHDU(np.full((11, 11), np.nan)).writeto(tmp_path / "nan.fits")
    with raises(CorruptFileError, r"nan.fits: the PSF image holds 121 NaN or inf pixels"):
        read_image_psf(tmp_path / "nan.fits")
    with raises(CorruptFileError, "the PSF image holds 121 NaN or inf pixels"):
        read_psf(tmp_path / "nan.fits")
    with raises(CorruptFileError, r"nan.psf\[PSF_DATA\]: PSF_MASK contains NaN or inf values"):
        read_psfex(write_psfex(tmp_path / "nan.psf", basis=np.full((6, 15, 15), np.nan)))
    with raises(CorruptFileError, r"nan.fits\[PRIMARY\]: the image has no finite pixel; cannot estimate a variance"):
        Exposure.readFits(tmp_path / "nan.fits")


def _set_card(data, key, value):
    """``data`` with the value of header card ``key`` (first occurrence) replaced."""
    i = next(i for i in range(0, len(data), 80) if data[i:i + 8] == key.encode().ljust(8))
    return data[:i + 10] + value.encode().rjust(20).ljust(70) + data[i + 80:]


@pytest.mark.parametrize("kind, key, value, match", [
    # astropy loops over range(NAXIS) reading keywords: 99999999999 used to hang for hours
    ("image", "NAXIS", "99999999999", r"\[HDU 0\]: NAXIS = 99999999999 is not an integer in 0..999"),
    ("image", "BITPIX", "7", r"\[HDU 0\]: BITPIX = 7 is not a FITS data type"),
    ("image", "NAXIS1", "100000", r"\[HDU 0\]: the header promises 12000000 bytes of data \(BITPIX = -64, "
                                  r"NAXISn = \[100000, 15\]\) but only 2880 follow: the file is truncated"),
    ("psfex", "TFIELDS", "99999999", r"\[HDU 1 PSF_DATA\]: TFIELDS = 99999999 is not an integer in 0..999"),
    ("psfex", "NAXIS2", "-3", r"\[HDU 1 PSF_DATA\]: NAXIS2 = -3 is not a non-negative integer"),
    ("psfex", "TFORM1", "'1E'", r"PSF_MASK holds 1 values but PSFAXIS1 x PSFAXIS2 x PSFAXIS3 = 15 x 15 x 6"),
    ("kernel", "NAXIS", "'two'", r"\[HDU 0\]: NAXIS = 'two' is not an integer in 0..999"),
])
def test_damaged_structural_cards(files, tmp_path, kind, key, value, match):
    path = tmp_path / f"damaged-{kind}.fits"
    path.write_bytes(_set_card(files[kind].read_bytes(), key, value))
    t0 = time.perf_counter()
    with raises(CorruptFileError, match), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on the damaged card
        OWN_READER[kind](path)
    assert time.perf_counter() - t0 < 5


def test_table_without_tform_is_corrupt_not_an_internal_error(files, tmp_path):
    data = files["psfex"].read_bytes()
    i = data.index(b"TFORM1  =")
    path = tmp_path / "notform.psf"
    path.write_bytes(data[:i] + b" " * 80 + data[i + 80:])  # astropy: UnboundLocalError
    with raises(CorruptFileError, r"notform.psf\[HDU 1 PSF_DATA\]: the table header lacks TFORM1"):
        read_psfex(path)


# ---------------------------------------------------------------------------
# 7. huge sizes


def test_convolution_memory_limit_is_checked_before_allocating():
    exposure = Exposure(np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    fit = run_quietly(ModelPsfMatchTask(config=small_config()), exposure, GaussianPsf(21, 21, 2.4))
    kernel = fit.psfMatchingKernel
    tracemalloc.start()
    try:
        with raises(MemoryLimitError, r"convolving a 128x128 image needs about [\d.e-]+ GiB, more than the limit of "
                                      r"9\.31e-07 GiB; its full-size planes alone .* need [\d.e-]+ GiB: raise "
                                      r"config.maxMemoryGiB, or match the exposure in smaller pieces$"):
            convolve_masked_image(exposure, kernel, max_memory_bytes=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20  # nothing image-sized was allocated
    assert issubclass(MemoryLimitError, MemoryError)


def test_memory_limit_through_the_task_names_the_setting():
    exposure = Exposure(np.ones((128, 128), np.float32), psf=GaussianPsf(15, 15, 1.6))
    with raises(MemoryLimitError, r"fitting the kernel needs about .* GiB \(.*\), more than config.maxMemoryGiB = "
                                  r"1e-06 GiB. Raise maxMemoryGiB"):
        ModelPsfMatchTask(config=small_config(maxMemoryGiB=1e-6)).run(exposure, GaussianPsf(21, 21, 2.4))


@pytest.mark.parametrize("basis, need", [("AL", r"2\d\d GiB"), ("DF", r"[\d.]+e\+0[67] GiB")])
def test_absurd_kernel_size_fails_at_construction(basis, need):
    config = ModelPsfMatchConfig()
    config.kernel.name = basis
    config.kernel.active.kernelSize = 4001
    tracemalloc.start()
    try:
        # (the configuration's own check: it said "1 candidate(s), 1x1-pixel PSF stamps" and named cells and stamps)
        with raises(MemoryLimitError, f"fitting the kernel needs about {need} .*; the kernel basis alone, before any "
                                      "PSF is realized\\), more than config.maxMemoryGiB = 8 GiB. Raise maxMemoryGiB, "
                                      "or use a smaller kernelSize$"):
            ModelPsfMatchTask(config=config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20


def test_huge_psf_stamps_fail_after_one_evaluation():
    psf = StampPsf(gauss_stamp(1001, 1.6))  # 8 MB per stamp; 4 cells, padded, science and reference
    exposure = Exposure(np.ones((128, 128), np.float32), psf=psf)
    with raises(MemoryLimitError, r"fitting the kernel needs about [\d.]+ GiB \(stamps 0.2\d+ GiB, .*; 4 candidate\(s\), "
                                  r"1001x1001-pixel PSF stamps before padding\), more than config.maxMemoryGiB = "
                                  r"0.05 GiB"):
        ModelPsfMatchTask(config=small_config(maxMemoryGiB=0.05)).run(exposure, GaussianPsf(21, 21, 2.4))
    assert psf.calls == 1


def test_absurd_analytic_stamp_is_refused_without_realizing_it():
    exposure = Exposure(np.ones((128, 128), np.float32), psf=GaussianPsf(20001, 20001, 2.0))
    tracemalloc.start()
    try:
        with raises(MemoryLimitError, r"20001x20001-pixel PSF stamps"):
            ModelPsfMatchTask(config=small_config()).run(exposure, GaussianPsf(21, 21, 2.4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20  # a single 20001^2 stamp would be 3.2 GB


def test_psfex_header_asking_for_a_huge_stamp(tmp_path):
    with raises(CorruptFileError, rf"PSF_SAMP = 1e\+06 with PSFAXIS1 x PSFAXIS2 = 15 x 15 gives 15000001x15000001-"
                                  rf"pixel kernel images, more than MAX_STAMP_SIZE = {MAX_STAMP_SIZE} per side; the "
                                  r"header is probably damaged \(pass stamp_size= to choose the stamp size\)"):
        read_psfex(write_psfex(tmp_path / "big.psf", samp=1e6))
    psf = read_psfex(tmp_path / "big.psf", stamp_size=31)  # the documented way out
    assert psf.computeKernelImage((10, 10)).shape == (31, 31)


def test_stored_psf_asking_for_a_huge_stamp(tmp_path):
    path = tmp_path / "e.fits"
    Exposure(np.ones((16, 16), np.float32), psf=GaussianPsf(15, 15, 1.6)).writeFits(path)
    with fits.open(path, mode="update") as hdul:
        hdul["PSF"].header["PMPARAMS"] = '{"height": 99999, "sigma": 1.6, "width": 99999}'
    with raises(CorruptFileError, r"e.fits\[PSF\]: stamp size width = 99999 is not an integer in 1..4095; the card is "
                                  r"damaged \(pass psf= to read_exposure to give the PSF instead\)"):
        Exposure.readFits(path)
    assert Exposure.readFits(path, psf=GaussianPsf(15, 15, 1.6)).getPsf().getSigma() == 1.6


def test_every_error_and_warning_is_public_at_the_top_level_with_its_builtin_base():
    """A caller catches any psfmatch error as ``psfmatch.X`` and as the builtin it names in its docstring."""
    import psfmatch
    from psfmatch import errors

    for name in errors.__all__:
        assert name in psfmatch.__all__, f"psfmatch.__all__ misses {name}"
        assert getattr(psfmatch, name) is getattr(errors, name)
        cls = getattr(errors, name)
        if issubclass(cls, Warning):
            assert issubclass(cls, psfmatch.PsfMatchWarning)
        else:
            assert issubclass(cls, PsfMatchError)
            assert cls is PsfMatchError or any(issubclass(cls, b) for b in (ValueError, RuntimeError, OSError,
                                                                            MemoryError, ImportError)), name


def test_shape_error_names_the_position_exactly():
    import pickle

    from psfmatch.errors import PsfComputeShapeError
    e = PsfComputeShapeError((2047.5, 4095.5), "no core")
    assert str(e) == "Unable to evaluate Psf at (2047.5, 4095.5): no core"  # (was rounded to (2048, 4096))
    assert str(PsfComputeShapeError((12345.25, 0))) == "Unable to evaluate Psf at (12345.25, 0)"
    assert str(pickle.loads(pickle.dumps(e))) == str(e) and e.metadata == {"position": {"x": 2047.5, "y": 4095.5}}


@pytest.mark.parametrize("bbox, hint", [
    (Box2D(Point2D(-0.5, -0.5), Point2D(127.5, 127.5)), r"a Box2D holds pixel edges: give the Box2I of the pixels"),
    ((0, 0, 128, 128), r"e\.g\. exposure\.getBBox\(\)"),
    (Box2I(), r"e\.g\. exposure\.getBBox\(\)"),
])
def test_fit_kernel_needs_an_integer_box(bbox, hint):
    """fitKernel with a Box2D (or a tuple, or an empty box) is a typed error, not an AttributeError from the cells."""
    with pytest.raises(InvalidInputError, match=r"bbox must be a non-empty Box2I, the exposure's box; got .*" + hint):
        ModelPsfMatchTask().fitKernel(GaussianPsf(21, 21, 1.5), GaussianPsf(21, 21, 2.6), bbox)


@pytest.mark.parametrize("bbox, sx, message", [
    (Box2D(Box2I((0, 0), (256, 256))), 128, r"a SpatialCellSet tiles a Box2I .*; got Box2D"),
    (((0, 0), (256, 256)), 128, r"a SpatialCellSet tiles a Box2I .*; got tuple"),
    (Box2I((0, 0), (256, 256)), 1.5, r"sizeCellX must be a whole number of pixels >= 1; got 1.5"),  # was 1 silently
    (Box2I((0, 0), (256, 256)), "128", r"sizeCellX must be a whole number of pixels >= 1; got '128'"),
    (Box2I((0, 0), (256, 256)), float("nan"), r"sizeCellX must be a whole number .*; got nan"),
    (Box2I((0, 0), (256, 256)), float("inf"), r"sizeCellX must be a whole number .*; got inf"),
    (Box2I((0, 0), (256, 256)), None, r"sizeCellX must be a whole number .*; got None"),
    (Box2I((0, 0), (256, 256)), True, r"sizeCellX must be a whole number .*; got True"),
    (Box2I((0, 0), (256, 256)), 0, r"sizeCellX must be a whole number of pixels >= 1; got 0"),
])
def test_spatial_cell_set_checks_its_arguments(bbox, sx, message):
    from psfmatch.cells import SpatialCellSet

    with raises(InvalidInputError, message):
        SpatialCellSet(bbox, sx, 128)


def test_spatial_cell_set_takes_whole_float_and_numpy_sizes():
    from psfmatch.cells import SpatialCellSet

    box = Box2I((0, 0), (256, 200))
    for sx in (64.0, np.int64(64), np.float32(64)):
        cells = SpatialCellSet(box, sx, 100)
        assert (cells.nx, cells.ny, cells.sizeCellX) == (4, 2, 64)


def test_convolution_planes_beyond_the_limit_are_refused_before_the_fit():
    """An exposure whose convolution's full-size planes alone exceed maxMemoryGiB was fitted first (2.7 s at
    8192 px) and refused afterwards, with a remedy (a smaller convolveTileSize) that could not work."""
    from psfmatch.convolve import plane_memory

    n = 2048
    psf = StampPsf(gauss_stamp())  # (counts its kernel images)
    exposure = Exposure(np.zeros((n, n), np.float32), psf=psf)
    need = plane_memory((n, n), 4)
    config = small_config(maxMemoryGiB=0.9 * need / 2 ** 30)
    with raises(MemoryLimitError, rf"convolving a {n}x{n} image needs about 0.0\d+ GiB, more than the limit of "
                                  r"0.0598 GiB; its full-size planes alone \(the output image, variance and mask, and "
                                  r"the mask's work\) need 0.0664 GiB: raise config.maxMemoryGiB, or match the exposure "
                                  r"in smaller pieces$"):
        ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(21, 21, 2.4))
    assert psf.calls == 0  # nothing was fitted


def test_convolution_memory_remedy_names_what_fits():
    """The remedy said "lower config.convolveTileSize" even where the smallest tile (64) could not fit."""
    from psfmatch.convolve import MIN_TILE, estimate_memory, memory_limit_error, plane_memory

    shape, k, nt, nv = (1024, 1024), 21, 6, 15

    def need(tile, workers):
        return estimate_memory(shape, k, nt, nv, tile, 4, workers)

    def remedy(limit, workers=2):
        return str(memory_limit_error(shape, need(384, workers), limit, 4, k, nt, nv, workers))

    assert need(MIN_TILE, 1) < need(MIN_TILE, 2) < need(256, 2) < need(384, 2)
    msg = remedy((need(256, 2) + need(288, 2)) / 2)  # a 256 px tile fits on two threads
    assert msg.endswith("raise config.maxMemoryGiB, or set config.convolveTileSize = 256 (or less)")
    assert need(256, 2) <= (need(256, 2) + need(288, 2)) / 2 < need(288, 2)
    msg = remedy((need(MIN_TILE, 1) + need(MIN_TILE, 2)) / 2)  # only one thread fits, with small tiles
    assert re.search(r"or convolve on one thread \(PSFMATCH_NUM_THREADS=1\) with config.convolveTileSize = \d+ "
                     r"\(or less\)$", msg)
    msg = remedy((plane_memory(shape, 4) + need(MIN_TILE, 1)) / 2)  # the planes fit, no tile does
    assert msg.endswith("no tile size or thread count fits it with this kernel: raise config.maxMemoryGiB, or match "
                        "the exposure in smaller pieces")
    assert "full-size planes alone" in remedy(plane_memory(shape, 4) / 2)


def test_convolution_that_cannot_fit_is_refused_before_the_fit():
    """A limit above the full-size planes but below the smallest tiles' need was found only after the fit."""
    from psfmatch.convolve import MIN_TILE, estimate_memory, plane_memory

    n = 2048
    config = small_config(kernel_size=11)
    least = estimate_memory((n, n), 11, 1, 1, MIN_TILE, 4, 1)
    assert plane_memory((n, n), 4) < least
    config.maxMemoryGiB = (plane_memory((n, n), 4) + least) / 2 / 2 ** 30
    psf = StampPsf(gauss_stamp())  # (counts its kernel images)
    exposure = Exposure(np.zeros((n, n), np.float32), psf=psf)
    with raises(MemoryLimitError, r"no tile size or thread count fits it with this kernel"):
        ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(21, 21, 2.4))
    assert psf.calls == 0


def test_early_memory_check_leaves_the_automatic_kernel_its_smaller_sizes():
    """With autoKernel choosing the size, the check before the survey used the configured kernelSize (21): a limit
    the chosen kernel (15 px on the demo) fits was refused before anything was tried."""
    from psfmatch.demo import demo_psf, demo_reference_psf
    from psfmatch.task import estimate_fit_memory

    bbox = Box2I((0, 0), (2048, 2048))
    psf, ref = demo_psf(bbox), demo_reference_psf()
    chosen = ModelPsfMatchTask().fitKernel(psf, ref, bbox).metadata["autoKernel"]["chosen"]["kernelSize"]
    config = ModelPsfMatchConfig()
    n = 256  # the 128 px cells of a 2048 px field
    low = estimate_fit_memory(config, n, 21, kernel_size=chosen)[0]
    high = estimate_fit_memory(config, n, 21)[0]
    assert chosen < config.kernel.active.kernelSize and low < high
    config.maxMemoryGiB = (low + high) / 2 / 2 ** 30
    fit = ModelPsfMatchTask(config=config).fitKernel(psf, ref, bbox)
    assert fit.kernel.getWidth() == chosen
    config.autoKernel = False  # the configured 21 px kernel itself does not fit
    with raises(MemoryLimitError, "fitting the kernel needs about"):
        ModelPsfMatchTask(config=config).fitKernel(psf, ref, bbox)


def test_early_memory_check_of_an_automatic_size_says_which_size_it_checked():
    """The check before the survey took the smallest automatic kernel (5 px) but told the user to use a smaller
    kernelSize, which could not help."""
    from psfmatch.demo import demo_psf, demo_reference_psf

    bbox = Box2I((0, 0), (2048, 2048))
    config = ModelPsfMatchConfig()
    config.maxMemoryGiB = 0.02  # the basis of a 5 px kernel fits (the constructor's check), its fit does not
    with raises(MemoryLimitError, r"256 candidate\(s\), \d+x\d+-pixel PSF stamps before padding, with the smallest "
                                  r"kernel the automatic choice may make, 5x5\), more than config.maxMemoryGiB = 0.02 "
                                  r"GiB. Raise maxMemoryGiB, or use larger cells \(sizeCellX/sizeCellY\) or smaller PSF "
                                  r"stamps$"):
        ModelPsfMatchTask(config=config).fitKernel(demo_psf(bbox), demo_reference_psf(), bbox)
    config.maxMemoryGiB = 0.01  # not even the basis of the smallest kernel: no kernelSize to suggest
    with raises(MemoryLimitError, r"the kernel basis alone, before any PSF is realized, with the smallest kernel the "
                                  r"automatic choice may make, 5x5\), more than config.maxMemoryGiB = 0.01 GiB. Raise "
                                  r"maxMemoryGiB$"):
        ModelPsfMatchTask(config=config)
