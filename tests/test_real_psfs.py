"""Real PSF models matched end to end, measured on the matched stars; and PSF images on a pedestal.

The PSFEx tests draw stars with the real models of ``../shared/data/psfex/`` at sub-pixel positions on
a sub-box of the CCD (its ``xy0`` away from the origin), match the exposure to a round Gaussian
broader than the model, and measure the matched stars with adaptive moments: their size and
ellipticity must agree with the reference's to the precision the task's QA claims, their flux must
be ``kernelSum`` times the input's and the variance plane must scale as documented.  The pedestal
tests check the warning of :func:`~psfmatch.psf.read_image_psf` for a PSF image left on a bias or
sky level (SDSS's 1000-count soft bias), and that no real PSF image that is fine sets it off.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchTask
from psfmatch.errors import PsfMatchWarning
from psfmatch.moments import adaptive_moments
from psfmatch.psf import GaussianPsf, read_image_psf, read_psf

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PSFEX = DATA / "psfex"
IMAGES = DATA / "psf_images"
SDSS = IMAGES / "GalSim-developers__GalSim" / "147246.0_150.416558_1.998697.sdsspsf.fits"

needs_psfex = pytest.mark.skipif(not PSFEX.is_dir(), reason=f"shared PSFEx data not found at {PSFEX}")
needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"shared PSF images not found at {IMAGES}")

DES = "GalSim-developers__GalSim/DECam_00154912_12_psfcat.psf"


def _gaussian(n, sigma):
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    return np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))


def _write(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float64)).writeto(path)
    return path


def _pedestal_warnings(record):
    return [w for w in record if issubclass(w.category, PsfMatchWarning)]


# ---------------------------------------------------------------------------
# 1. a PSF image on a pedestal (an unsubtracted bias or sky)


def test_a_psf_image_on_a_pedestal_warns_with_file_level_and_remedy(tmp_path):
    path = _write(tmp_path / "biased.fits", 1e4 * _gaussian(41, 2.0) + 300.0)
    with pytest.warns(PsfMatchWarning, match=r"biased.fits: the PSF image's border sits at 300 \(2\.9% of its peak\), "
                      r"flat all around: almost surely an unsubtracted bias or sky .* Subtract it: "
                      r"read_image_psf\(\.\.\., background=300\)"):
        read_image_psf(path)
    # part of it subtracted: the rest is named, and the remedy is the whole level
    with pytest.warns(PsfMatchWarning, match=r"border sits at 200 .* after background=100 was subtracted.* "
                      r"background=300\)"):
        read_image_psf(path, background=100.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        psf = read_image_psf(path, background=300.0)
    assert _pedestal_warnings(record) == []
    assert psf.computeShape().sigma == pytest.approx(2.0, abs=0.01)


def test_the_pedestal_warning_names_the_callers_line(tmp_path):
    """Through read_psf too, the warning points at the caller, not at psfmatch's reader registry."""
    path = _write(tmp_path / "biased.fits", 1e4 * _gaussian(41, 2.0) + 300.0)
    for read in (read_image_psf, read_psf):
        with pytest.warns(PsfMatchWarning, match="border sits at 300") as record:
            read(path)
        assert [Path(w.filename).name for w in record if issubclass(w.category, PsfMatchWarning)] == [
            Path(__file__).name]


def test_a_noisy_pedestal_warns_a_truncated_psf_does_not(tmp_path):
    rng = np.random.default_rng(3)
    noisy = _write(tmp_path / "noisy.fits", 3e4 * _gaussian(51, 1.5) + 1000.0 + rng.normal(0.0, 10.0, (51, 51)))
    with pytest.warns(PsfMatchWarning, match=r"noisy.fits: .*border sits at (99\d|100\d)[. ].*background=(99\d|100\d)"):
        read_image_psf(noisy)
    # a Gaussian cut at 2 sigma: its border reaches 1.8 to 13.5 % of its peak, but it is a wing (not flat)
    truncated = _write(tmp_path / "truncated.fits", _gaussian(41, 41 / 4.0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        read_image_psf(truncated)
    assert _pedestal_warnings(record) == []


@needs_images
def test_sdss_psf_read_without_its_soft_bias_warns():
    """SDSS's PSF image sits on a 1000-count soft bias: read without background=1000 it is a PSF of sigma
    about 15 px (89 % of its flux is the bias); the warning names the file and background=1000."""
    with pytest.warns(PsfMatchWarning, match=rf"{SDSS.name}: the PSF image's border sits at 1000 \(3\.3% of its "
                      r"peak\).* holds 89% of the image's flux.* background=1000\)"):
        raw = read_image_psf(SDSS)
    assert raw.computeShape().sigma > 10.0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        good = read_image_psf(SDSS, background=1000.0)
    assert _pedestal_warnings(record) == []
    assert good.computeShape().sigma == pytest.approx(1.29, abs=0.02)


@needs_images
def test_no_real_psf_image_that_is_fine_warns_of_a_pedestal():
    """Every HDU of every real PSF image (IRAC with its negative border pixels, the even 20 px HST/ACS stamps,
    the 100 mixed-shape ACS PSFs, shera's unnormalized target with negative pixels, COSMOS; SDSS with its bias
    subtracted) is read without the pedestal warning."""
    files = sorted(IMAGES.glob("*/*.fits"))
    assert len(files) >= 10
    n = 0
    for path in files:
        background = 1000.0 if path == SDSS else 0.0
        with fits.open(path) as hdul:
            count = len(hdul)
        for hdu in range(count):
            with warnings.catch_warnings():
                warnings.simplefilter("error", PsfMatchWarning)
                read_image_psf(path, hdu=hdu, background=background)
            n += 1
    assert n >= 110


# ---------------------------------------------------------------------------
# 2. real PSFEx models matched end to end, measured on the matched stars


def _star_field(psf, xy0, size, spacing, flux=1e5, sky=100.0):
    """A noiseless exposure of ``size`` px with stars drawn by ``psf`` at sub-pixel parent positions."""
    rng = np.random.default_rng(7)
    image = np.full((size, size), sky)
    stars = []
    for cy in range(spacing // 2, size - spacing // 2 + 1, spacing):
        for cx in range(spacing // 2, size - spacing // 2 + 1, spacing):
            x, y = xy0[0] + cx + rng.uniform(-0.5, 0.5), xy0[1] + cy + rng.uniform(-0.5, 0.5)
            stamp, box = psf.computeImage((x, y)), psf.computeImageBBox((x, y))
            x0, y0 = box.getMinX() - xy0[0], box.getMinY() - xy0[1]
            h, w = stamp.shape
            image[max(y0, 0):y0 + h, max(x0, 0):x0 + w] += flux * stamp[max(-y0, 0):, max(-x0, 0):][
                :min(h, size - y0), :min(w, size - x0)]
            stars.append((x, y))
    variance = sky + np.clip(image - sky, 0.0, None)
    return image, variance, stars


def _measure(image, stars, xy0, half, sky):
    """Adaptive moments (sigma, e1, e2) and aperture flux (radius ``half``) of each star with a finite stamp."""
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    aperture = xx * xx + yy * yy <= half * half
    out = []
    for x, y in stars:
        ix, iy = int(round(x)) - xy0[0], int(round(y)) - xy0[1]
        stamp = image[iy - half:iy + half + 1, ix - half:ix + half + 1].astype(np.float64) - sky
        if stamp.shape != aperture.shape or not np.all(np.isfinite(stamp)):
            continue
        ixx, iyy, ixy, _, _, ok = adaptive_moments(stamp)
        assert ok
        out.append(((ixx * iyy - ixy * ixy) ** 0.25, (ixx - iyy) / (ixx + iyy), 2 * ixy / (ixx + iyy),
                    stamp[aperture].sum()))
    return np.array(out)


def _match_and_measure(psf, xy0, size, kernel_sum=1.0, spacing=100, half=20, measured_xy0=None):
    """Match a star field of ``psf`` to a round Gaussian 10 % broader than its broadest axis; returns the
    matched stars' and the input stars' measurements, the reference's moments, the result and the inputs."""
    sky = 100.0
    image, variance, stars = _star_field(psf, xy0, size, spacing, sky=sky)
    lam = 0.0
    for x in (xy0[0], xy0[0] + size - 1):
        for y in (xy0[1], xy0[1] + size - 1):
            q = psf.computeShape((x, y))
            lam = max(lam, np.linalg.eigvalsh([[q.ixx, q.ixy], [q.ixy, q.iyy]])[-1])
    reference = GaussianPsf(31, 31, 1.1 * np.sqrt(lam))
    # the exposure as given to the task (measured_xy0: a wrong origin, as a caller's mistake would give)
    given = xy0 if measured_xy0 is None else measured_xy0
    exposure = Exposure(image.astype(np.float32), None, variance.astype(np.float32), psf=psf, xy0=given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PsfMatchWarning)
        result = ModelPsfMatchTask().run(exposure, reference, kernelSum=kernel_sum)
    matched = _measure(result.psfMatchedExposure.image, stars, xy0, half, kernel_sum * sky)
    inputs = _measure(image, stars, xy0, half, sky)
    ixx, iyy, ixy, _, _, _ = adaptive_moments(reference.computeKernelImage((0.0, 0.0)))
    ref = ((ixx * iyy - ixy * ixy) ** 0.25, (ixx - iyy) / (ixx + iyy), 2 * ixy / (ixx + iyy))
    return matched, inputs, ref, result, variance


def _claimed(qa, key):
    return max(abs(qa[part][key]) for part in ("candidates", "between"))


@needs_psfex
@pytest.mark.parametrize("name, xy0", [
    (DES, (1536, 3584)),                                                             # elliptical, upper corner
    ("rmjarvis__Piff/DECam_00241238_01_psfcat.psf", (0, 0)),                        # PSF_SAMP 0.5, lower corner
    ("dstndstn__tractor/c4d_140818_002108_ooi_z_v1.ext27.psf", (1536, 0)),          # degree 6, PSF_SAMP > 1
    ("esheldon__psfex/test_psfcat.psf", (2388, 2388)),                              # another instrument
])
def test_matched_stars_of_real_psfex_models_have_the_reference_shape(name, xy0):
    """Stars drawn with the model on a 512 px sub-box (corners included) come out of the match with the
    reference's size and ellipticity, to the precision the QA claims for the PSF models."""
    matched, _, ref, result, _ = _match_and_measure(read_psf(PSFEX / name), xy0, 512)
    qa = result.metadata["qa"]
    assert len(matched) >= 16
    size_error = np.abs(matched[:, 0] / ref[0] - 1.0)
    ellipticity_error = np.hypot(matched[:, 1] - ref[1], matched[:, 2] - ref[2])
    assert size_error.max() <= _claimed(qa, "sizeMismatchWorst") + 1e-3
    assert ellipticity_error.max() <= _claimed(qa, "ellipticityMismatchWorst") + 1e-3


@needs_psfex
def test_a_sub_box_is_matched_with_the_psf_of_its_own_pixels():
    """A sub-box at xy0 = (1536, 3584) of the DES CCD (|g| about 0.12 there, 0.12 with another orientation at
    the origin) is matched with the model at its own pixels; the same pixels given xy0 = (0, 0), the
    origin's PSF, leave the matched stars elliptical by far more than the QA's claim (which cannot see
    the mistake: it checks the kernel against the PSF it was given)."""
    psf = read_psf(PSFEX / DES)
    matched, _, ref, result, _ = _match_and_measure(psf, (1536, 3584), 512)
    error = np.hypot(matched[:, 1] - ref[1], matched[:, 2] - ref[2]).max()
    assert error <= _claimed(result.metadata["qa"], "ellipticityMismatchWorst") + 1e-3
    wrong, _, ref, result, _ = _match_and_measure(psf, (1536, 3584), 512, measured_xy0=(0, 0))
    wrong_error = np.hypot(wrong[:, 1] - ref[1], wrong[:, 2] - ref[2]).max()
    assert wrong_error > 5 * (_claimed(result.metadata["qa"], "ellipticityMismatchWorst") + 1e-3)


@needs_psfex
def test_flux_and_variance_of_a_real_psfex_match_scale_with_kernel_sum():
    """kernelSum = 2.5: every star's flux in a large aperture is 2.5 times the input's, and the variance
    plane is the input's convolved with the squared kernel (kernelSum**2 sum(K_unit**2) times a flat one)."""
    psf = read_psf(PSFEX / DES)
    matched, inputs, _, result, variance = _match_and_measure(psf, (1024, 1024), 512, kernel_sum=2.5, half=30)
    np.testing.assert_allclose(matched[:, 3] / inputs[:, 3], 2.5, rtol=2e-3)
    kernel = result.psfMatchingKernel
    k = kernel.computeImage((1024 + 100, 1024 + 100))  # a sky-only spot midway between four stars
    assert k.sum() == pytest.approx(2.5, rel=1e-9)
    got = result.psfMatchedExposure.variance[100, 100]
    assert variance[100 - 20:100 + 21, 100 - 20:100 + 21].max() == pytest.approx(100.0)  # flat sky there
    assert got == pytest.approx(100.0 * (k * k).sum(), rel=1e-3)
