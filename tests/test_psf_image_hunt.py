"""Adversarial review of PSF images: reading, pixel scales, resampling and recentring
(``psfmatch.psf.image_io``, ``ImagePsf``).

The truths used here are analytic: a Gaussian integrated over square pixels (an *effective* PSF, "ePSF")
is known exactly at every pixel scale, so a resampled ePSF can be compared pixel by pixel with the ePSF
drawn directly at the output scale.  Six defects the review found are fixed and pinned here.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.special import erf

from psfmatch import Exposure, ModelPsfMatchTask
from psfmatch.errors import InvalidInputError
from psfmatch.moments import adaptive_moments, measure_shape
from psfmatch.psf import GaussianPsf, ImagePsf, read_image_psf
from psfmatch.psf.image_io import pixel_scale_from_header, resample_psf

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IRAC = DATA / "psf_images" / "astropy__photutils-datasets"
needs_irac = pytest.mark.skipif(not IRAC.is_dir(), reason=f"shared IRAC PSF images not found at {IRAC}")


def epsf_1d(n, sigma, c):
    """A unit-flux Gaussian of ``sigma`` (px) centred at ``c``, integrated over the pixels ``0..n-1``."""
    i = np.arange(n, dtype=float)
    s = math.sqrt(2.0) * sigma
    return 0.5 * (erf((i + 0.5 - c) / s) - erf((i - 0.5 - c) / s))


def epsf(n, sigma, cx, cy, m=None):
    return np.outer(epsf_1d(n if m is None else m, sigma, cy), epsf_1d(n, sigma, cx))


def unweighted_sigma(a):
    h, w = a.shape
    y, x = np.mgrid[0:h, 0:w]
    x, y = x - w // 2, y - h // 2
    return math.sqrt(((a * x * x).sum() + (a * y * y).sum()) / (2 * a.sum()))


def centroid(a):
    h, w = a.shape
    y, x = np.mgrid[0:h, 0:w]
    return (a * (x - w // 2)).sum() / a.sum(), (a * (y - h // 2)).sum() / a.sum()


def asymmetric(n, cx, cy, sigma=2.0):
    """A core plus a fainter, broader lobe displaced along (+x, +y): its adaptive and unweighted centroids differ."""
    y, x = np.mgrid[0:n, 0:n].astype(float)
    core = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))
    lobe = 0.3 * np.exp(-((x - cx - 3.0) ** 2 + (y - cy - 1.5) ** 2) / (2 * (2 * sigma) ** 2))
    return core + lobe


def write(path, data, **cards):
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float64))
    for k, v in cards.items():
        hdu.header[k] = v
    hdu.writeto(path)
    return path


# ---------------------------------------------------------------------------
# rebinning (ratio >= 1): exact where the output pixels tile whole input pixels


@pytest.mark.parametrize("ratio, center", [(3.0, None), (3.0, (31.0, 28.0)), (5.0, (29.0, 32.0)), (1.0, (27.0, 33.0))])
def test_aligned_integer_rebinning_is_the_exact_coarse_epsf(ratio, center):
    """Summing whole input pixels of an ePSF gives the ePSF of the larger pixels exactly, centred on the centre
    pixel: the centre mapping and the flux bookkeeping of the overlap matrix, to rounding."""
    n, sigma = 61, 4.0
    cx, cy = (30.0, 30.0) if center is None else center
    fine = epsf(n, sigma, cx, cy)
    out = resample_psf(fine, ratio, center=center)
    m = out.shape[0]
    truth = epsf(m, sigma / ratio, m // 2, m // 2)
    np.testing.assert_allclose(out, truth / truth.sum(), rtol=0, atol=1e-10 * truth.max())  # (edges: 7 sigma)


def test_even_input_rebinned_by_two_lands_on_the_centre_pixel_exactly():
    """A 22x22 ePSF centred on its geometric centre (10.5, 10.5) (even, as the AEGIS files are): by 2, each output
    pixel holds two whole input pixels, and the result is the exact 11x11 ePSF centred on pixel 5."""
    fine = epsf(22, 2.4, 10.5, 10.5)
    out = resample_psf(fine, 2.0)
    assert out.shape == (11, 11)
    truth = epsf(11, 1.2, 5.0, 5.0)
    np.testing.assert_allclose(out, truth / truth.sum(), rtol=0, atol=1e-12 * truth.max())


@pytest.mark.parametrize("ratio", [2.0, 2.5, 7.5])
def test_rebinning_keeps_the_first_moment(ratio):
    """Box rebinning moves no flux across the centre: the unweighted centroid of the output, in output pixels, is
    the input's offset from ``center`` divided by the ratio (here zero: the centre given is the PSF's)."""
    cx, cy = 60.3, 59.77
    out = resample_psf(epsf(121, 6.0, cx, cy), ratio, center=(cx, cy))
    x, y = centroid(out)
    assert abs(x) < 1e-3 and abs(y) < 1e-3


# ---------------------------------------------------------------------------
# interpolation (ratio < 1)


@pytest.mark.parametrize("ratio", [0.3, 1 / 3, 0.5])
@pytest.mark.parametrize("sigma", [2.0, 6.0])
def test_upsampling_scales_the_epsf_by_one_over_ratio_and_keeps_its_centre(ratio, sigma):
    """Lanczos-3 samples the input ePSF (optics and input pixel) on the finer grid: its width is
    sqrt(sigma^2 + 1/12) input px, i.e. that over ``ratio`` output px, and it stays centred (Lanczos-3 does not
    reproduce a slope exactly: the centroid moves by up to ~1.5e-3 output px, pinned here at 3e-3)."""
    cx, cy = 60.3, 59.77
    out = resample_psf(epsf(121, sigma, cx, cy), ratio, center=(cx, cy))
    assert out.sum() == pytest.approx(1.0, abs=1e-12)
    ixx, iyy, ixy, xc, yc, ok = adaptive_moments(out)
    assert bool(ok)
    expected = math.sqrt(sigma ** 2 + 1 / 12) / ratio
    assert math.sqrt(float(ixx)) == pytest.approx(expected, rel=2e-3)
    assert math.sqrt(float(iyy)) == pytest.approx(expected, rel=2e-3)
    assert abs(float(xc)) < 3e-3 and abs(float(yc)) < 3e-3


def test_even_input_upsampled_stays_centred_on_its_geometric_centre():
    out = resample_psf(epsf(20, 2.0, 9.5, 9.5), 0.5)
    assert out.shape == (41, 41)
    x, y = centroid(out)
    assert abs(x) < 1e-12 and abs(y) < 1e-12  # symmetric sampling about the centre: exact by symmetry


# ---------------------------------------------------------------------------
# pixel scales


SKY = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"}


def test_each_axis_is_read_in_its_own_unit():
    """FITS WCS: CDELTi and CDi_j are in CUNITi.  0.2/3600 deg by 0.2 arcsec is a 0.2 arcsec pixel (astropy agrees);
    psfmatch read 12 arcsec (the arcsec value taken as degrees)."""
    h = fits.Header()
    for k, v in {**SKY, "CDELT1": -0.2 / 3600, "CDELT2": 0.2, "CUNIT1": "deg", "CUNIT2": "arcsec"}.items():
        h[k] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from psfmatch.psf.image_io import pixel_scale_from_wcs

        assert pixel_scale_from_wcs(WCS(h)) == pytest.approx(0.2, rel=1e-9)
    assert pixel_scale_from_header(h) == pytest.approx(0.2, rel=1e-9)


def test_non_square_pixels_are_refused_for_resampling(tmp_path):
    """A round PSF (sigma 0.4 arcsec) on 0.1 x 0.2 arcsec pixels, resampled to 0.2 arcsec square pixels by one
    ratio, came out with sigma 2.85 x 1.47 px (e1 = 0.58), without a word: now refused, naming the two scales;
    read at its own scale it is kept, and pixel_scale= resamples by the one scale given."""
    y, x = np.mgrid[0:41, 0:41] - 20.0
    sky_round = np.exp(-((x * 0.1) ** 2 + (y * 0.2) ** 2) / (2 * 0.4 ** 2))
    path = write(tmp_path / "nonsquare.fits", sky_round, PIXSCAL1=0.1, PIXSCAL2=0.2)
    with pytest.raises(InvalidInputError, match=r"nonsquare\.fits: its pixels are not square \(0\.1 x 0\.2 arcsec "
                                                r"along x and y\): resampled to 0\.2 arcsec by one ratio, the PSF would "
                                                r"come out stretched by 0\.5 along x; resample it per axis onto square "
                                                r"pixels first, or pass pixel_scale="):
        read_image_psf(path, target_pixel_scale=0.2)
    assert read_image_psf(path).pixel_scale == pytest.approx(math.sqrt(0.02), rel=1e-12)
    assert read_image_psf(path, pixel_scale=0.1, target_pixel_scale=0.2).array.shape == (21, 21)
    # within 1 % the geometric mean serves, as before; a CD matrix's columns are the axes' scales
    near = write(tmp_path / "near.fits", sky_round, PIXSCAL1=0.1, PIXSCAL2=0.1005)
    assert read_image_psf(near, target_pixel_scale=0.2).pixel_scale == 0.2
    h = fits.Header()
    for k, v in {**SKY, "CD1_1": -0.1 / 3600, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.2 / 3600}.items():
        h[k] = v
    from psfmatch.psf.image_io import pixel_axis_scales

    assert pixel_axis_scales(h) == pytest.approx((0.1, 0.2), rel=1e-12)


def test_an_invalid_rtol_is_refused_with_a_typed_error(tmp_path):
    path = write(tmp_path / "g.fits", epsf(21, 2.0, 10, 10), PIXSCALE=0.1)
    for rtol in ("1e-3", None, True, float("nan"), -1e-3, 1.0):
        with pytest.raises(InvalidInputError, match=r"^rtol must be a number in \[0, 1\) \(the relative difference "
                                                    rf"of two pixel scales taken as equal, e\.g\. 1e-6\); got "
                                                    rf"{re.escape(repr(rtol))}$"):
            read_image_psf(path, target_pixel_scale=0.1001, rtol=rtol)
    assert read_image_psf(path, target_pixel_scale=0.1001, rtol=2e-3).array.shape == (21, 21)  # taken as equal


# ---------------------------------------------------------------------------
# recentring and normalization


@pytest.mark.parametrize("n, cx, cy", [(41, 20.37, 19.81), (40, 19.2, 20.1), (31, 16.9, 13.4)])
def test_recenter_puts_the_adaptive_centroid_of_an_asymmetric_psf_on_the_centre_pixel(n, cx, cy):
    """Without resampling (ImagePsf and read_image_psf alike): the adaptive centroid lands on the centre pixel to
    1e-6 px, for odd and even arrays, while the unweighted centroid stays towards the lobe (the documented centre is
    the adaptive one)."""
    p = ImagePsf(asymmetric(n, cx, cy), recenter=True).array
    ixx, iyy, ixy, xc, yc, ok = adaptive_moments(p)
    assert bool(ok) and abs(float(xc)) < 1e-6 and abs(float(yc)) < 1e-6
    ux, uy = centroid(p)
    assert ux > 0.9 and uy > 0.45  # the lobe's pull, which recentring must not remove


def test_image_psf_keeps_negative_pixels_and_normalizes_to_unit_sum():
    """Documented: any positive-sum real array, normalized to unit sum; negative pixels (shera's) are kept."""
    a = epsf(21, 2.0, 10, 10) * 37.0
    a[0, 0], a[20, 3] = -0.02, -0.01
    p = ImagePsf(a).array
    np.testing.assert_allclose(p, a / a.sum(), rtol=1e-14, atol=0)
    assert p.min() < 0


def test_recenter_with_resampling_centres_the_output(tmp_path):
    path = write(tmp_path / "asym.fits", asymmetric(41, 20.37, 19.81), PIXSCALE=0.1)
    psf = read_image_psf(path, recenter=True, target_pixel_scale=0.2)
    ixx, iyy, ixy, xc, yc, ok = adaptive_moments(psf.array)
    assert abs(float(xc)) < 1e-3 and abs(float(yc)) < 1e-3


# ---------------------------------------------------------------------------
# the pixel response of box rebinning


def test_rebinning_by_two_gives_the_coarse_epsf():
    fine = epsf(61, 1.5, 30, 30)
    out = resample_psf(fine, 2.0)
    m = out.shape[0]
    truth = epsf(m, 0.75, m // 2, m // 2)
    assert unweighted_sigma(out) == pytest.approx(unweighted_sigma(truth), rel=5e-3)


def test_recentring_with_a_scale_ratio_near_one_does_not_widen_the_psf(tmp_path):
    path = write(tmp_path / "off.fits", epsf(41, 1.5, 20.5, 19.5), PIXSCALE=0.1)
    same = read_image_psf(path, recenter=True, target_pixel_scale=0.1)
    near = read_image_psf(path, recenter=True, target_pixel_scale=0.1 * (1 + 1e-5))
    assert measure_shape(near.array).sigma == pytest.approx(measure_shape(same.array).sigma, rel=2e-3)


@needs_irac
def test_irac_rebinned_by_an_odd_integer_keeps_flux_centre_and_width():
    """IRAC ch1 (81 px, centre pixel 40) rebinned by 3 tiles whole input pixels: each output pixel is the sum of
    a 3x3 block, exactly (checked against a reshape): flux conserved, centre pixel 40 -> 13."""
    data = fits.getdata(IRAC / "irac_ch1_flight.fits").astype(np.float64)
    psf = read_image_psf(IRAC / "irac_ch1_flight.fits", target_pixel_scale=0.30525 * 3)
    assert psf.array.shape == (27, 27)
    blocks = data.reshape(27, 3, 27, 3).sum(axis=(1, 3))
    np.testing.assert_allclose(psf.array, blocks / blocks.sum(), rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------
# the whole task with an image PSF at another scale


def test_matched_stars_get_the_reference_width_with_a_resampled_image_psf(tmp_path):
    """Science PSF: a Gaussian of 0.3 arcsec as an ePSF image at 0.05 arcsec/px, read with target_pixel_scale=
    the exposure (0.2 arcsec/px).  Stars drawn as the exact 0.2 arcsec/px ePSF, matched to a Gaussian of sigma
    2.6 px, come out with sigma 2.6 px (0.2 %: rebinning by 4 adds (0.05/0.2)^2/12 px^2 of input-pixel width),
    round, in place, with their flux."""
    path = write(tmp_path / "fine.fits", epsf(81, 6.0, 40, 40), PIXSCALE=0.05)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.crpix, wcs.wcs.crval = [64, 64], [10.0, 10.0]
    n = 128
    stars = [(40.3, 40.6), (90.7, 85.2), (30.1, 95.9), (95.5, 30.4)]
    image = np.zeros((n, n))
    for x, y in stars:
        image += 1000.0 * epsf(n, 1.5, x, y)
    bare = Exposure(image.astype(np.float32), variance=np.ones((n, n), np.float32), wcs=wcs)
    psf = read_image_psf(path, target_pixel_scale=bare)
    assert psf.pixel_scale == pytest.approx(0.2)
    exposure = Exposure(image.astype(np.float32), variance=np.ones((n, n), np.float32), wcs=wcs, psf=psf)
    reference = GaussianPsf(31, 31, 2.6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ModelPsfMatchTask().run(exposure, reference)
    assert not [w for w in caught if "pixels of" in str(w.message)]  # resampled: no pixel-scale warning
    matched = np.asarray(result.psfMatchedExposure.image, dtype=float)
    ref_sigma = measure_shape(reference.computeKernelImage((0, 0))).sigma
    for x, y in stars:
        ix, iy = int(round(x)), int(round(y))
        stamp = matched[iy - 15:iy + 16, ix - 15:ix + 16]
        q = measure_shape(stamp)
        assert q.sigma == pytest.approx(ref_sigma, rel=2e-3)
        assert abs(q.e1) < 1e-4 and abs(q.e2) < 1e-4
        assert q.x == pytest.approx(x - ix, abs=1e-3) and q.y == pytest.approx(y - iy, abs=1e-3)
        assert stamp.sum() == pytest.approx(1000.0, rel=1e-4)
