"""Defects found by a randomized physics stress hunt of ``ModelPsfMatchTask.run``.

Each test checks a physical contract of the matched exposure that the hunt found broken:

- a pixel whose value is far above the noise (a BAD pixel holding a fill value, a variance of 1e30 for an
  unusable pixel) reaches, by the transforms' rounding, every pixel of its convolution tile: the matched
  image off by many sigma and negative variances far outside the kernel's footprint, with no mask bit;
- the matched variance, a sum of non-negative terms, came out negative (rounding) next to a region of zero
  variance, so that the matched exposure could not be matched again (run() refuses negative variance).
"""

import warnings

import numpy as np
import pytest

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.convolve import direct_convolve
from psfmatch.psf import GaussianPsf


def _config():
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.kernelSize = 11
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    return config


def _match(exposure):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelPsfMatchTask(config=_config()).run(exposure, GaussianPsf(21, 21, 2.4))


@pytest.mark.parametrize("dtype, value, variance, sky_variance", [
    (np.float32, 1e10, 1e30, 100.0), (np.float64, 1e22, 1e35, 100.0),
    # no variance but the pixel's fill value (Exposure's default plane is zeros): the image's own level tells
    (np.float32, 1e10, 1e30, 0.0), (np.float64, 1e25, 1e25, 0.0)])
def test_a_huge_masked_pixel_changes_only_the_pixels_its_kernel_reaches(dtype, value, variance, sky_variance):
    rng = np.random.default_rng(11)
    image = rng.normal(100.0, 10.0, (96, 120)).astype(dtype)
    var = np.full(image.shape, sky_variance, dtype=dtype)
    clean = Exposure(image, variance=var, psf=GaussianPsf(15, 15, 1.6), xy0=(-37, 5000))
    dirty = clean.copy()
    y, x = 40, 57
    dirty.image[y, x] = value
    dirty.variance[y, x] = variance
    dirty.mask[y, x] = dirty.getMask().getPlaneBitMask("BAD")
    a = _match(clean)
    b = _match(dirty)
    out_a, out_b = a.psfMatchedExposure, b.psfMatchedExposure
    h = b.psfMatchingKernel.getWidth() // 2
    reached = np.zeros(image.shape, dtype=bool)
    reached[y - h:y + h + 1, x - h:x + h + 1] = True
    valid = np.isfinite(out_a.image)
    far = valid & ~reached
    # beyond the kernel's reach the pixel changes nothing: the transforms' rounding of the noise (sigma 10 after
    # matching about 10 / (2 sqrt(pi) 2.4) = 1.2) and of the variance, not the 1e10 of the pixel (it made errors
    # of 40 sigma and negative variances: 1e-7 of the pixel's value reached every pixel of its tile)
    assert np.abs(out_b.image[far] - out_a.image[far]).max() < 1e-4
    np.testing.assert_allclose(out_b.variance[far], out_a.variance[far], rtol=1e-5, atol=0)
    assert (out_b.variance[valid] >= 0).all()
    # within it, the exact convolution (the kernel at each output pixel), to the rounding of the direct sums
    ei, ev = direct_convolve(dirty.getMaskedImage(), b.psfMatchingKernel)
    near = valid & reached
    eps = np.finfo(dtype).eps
    K = b.psfMatchingKernel.computeImage((x - 37, y + 5000))
    assert np.all(np.abs(out_b.image[near] - ei[near]) <= 4 * eps * abs(value) * np.abs(K).sum() + 1e-3)
    np.testing.assert_allclose(out_b.variance[near], ev[near], rtol=4 * eps, atol=1e-3)
    # and the mask tells which pixels the BAD pixel reached (inside its footprint only)
    bad = (out_b.mask & out_b.getMask().getPlaneBitMask("BAD")) != 0
    assert bad[y, x] and not bad[far].any()


def test_matched_variance_is_never_negative_and_can_be_matched_again():
    # a noiseless region (variance 0) beside a noisy one and a bright star's Poisson variance: the exact
    # matched variance is >= 0 everywhere; the transforms' rounding made about 7000 pixels slightly negative
    # (down to -8e-4 in float32), which run() itself refuses as input
    var = np.zeros((128, 128), np.float32)
    var[:, 64:] = 1e4
    var[30:36, 20:26] = 5e5
    exposure = Exposure(np.zeros((128, 128), np.float32), variance=var, psf=GaussianPsf(15, 15, 1.6))
    out = _match(exposure).psfMatchedExposure
    valid = np.isfinite(out.image)
    assert (out.variance[valid] >= 0).all()
    # (the noiseless region far from the noisy ones stays noiseless, to the rounding of the transforms)
    assert out.variance[45:110, 8:40].max() <= 1e-6 * var.max()
    out.setPsf(GaussianPsf(21, 21, 2.4))
    again = _match(out).psfMatchedExposure  # refused before: "variance has N negative pixel(s)"
    assert (again.variance[np.isfinite(again.image)] >= 0).all()
