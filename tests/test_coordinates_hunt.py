"""Coordinate conventions through the whole chain: xy0, 0/1-based positions, cut-outs, files, the CLI.

psfmatch positions are 0-based parent pixel coordinates; an exposure's first pixel sits at ``xy0``; PSF
models are evaluated at parent positions; PSFEx contexts are 1-based (``X = x + 1``); files record the
origin as IRAF ``LTV1/LTV2`` and LSST's alternate linear WCS ``A``; the exposure's WCS is the array's
(its CRPIX refers to the file's pixels, never shifted by ``xy0``).  These tests hunt off-by-one and
off-by-half-pixel errors: a chain that mixes local and parent coordinates anywhere is not invariant
under a translation of the origin, and a 1-based slip in PSFEx shows at 1e-5 of the peak.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.cli import main
from psfmatch.convolve import convolve_masked_image
from psfmatch.errors import PsfMatchWarning
from psfmatch.io import read_exposure, write_exposure
from psfmatch.moments import adaptive_moments
from psfmatch.psf import GaussianPsf, PsfAdapter, VariableGaussianPsf, read_psf

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "psfex"
DES = DATA / "GalSim-developers__GalSim" / "DECam_00154912_12_psfcat.psf"
PSFEX_FILES = ["GalSim-developers__GalSim/DECam_00154912_12_psfcat.psf",  # PSF_SAMP 0.976
               "rmjarvis__Piff/DECam_00241238_01_psfcat.psf",            # PSF_SAMP 0.5, 101 samples
               "dstndstn__tractor/c4d_140818_002108_ooi_z_v1.ext27.psf",  # PSF_SAMP > 1, degree 6
               "esheldon__psfex/test_psfcat.psf"]
needs_psfex = pytest.mark.skipif(not DES.is_file(), reason=f"shared PSFEx data not found at {DATA}")

W, H = 200, 170


def _varying_psf(xy0, width=W, height=H):
    """A strongly and asymmetrically varying PSF over the box at ``xy0`` (sigma 1.4-2.4, |e| up to 0.3)."""
    return VariableGaussianPsf(21, 21, Box2I(xy0, (width, height)), sigma=[1.8, 0.4, -0.2], e1=[0.05, 0.15, 0.0],
                               e2=[0.0, 0.0, 0.12])


def _task(cell=50):
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = cell
    config.kernel.active.sizeCellY = cell
    return ModelPsfMatchTask(config=config)


def _run(task, exposure, reference, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PsfMatchWarning)
        return task.run(exposure, reference, **kw)


@pytest.fixture(scope="module")
def noise_image():
    rng = np.random.default_rng(3)
    return rng.normal(size=(H, W)) + 10.0


# ---------------------------------------------------------------------------
# 1. translation invariance: the same pixels and the same PSF (moved with the origin) match the same


@pytest.mark.parametrize("xy0", [(5, -3), (-1000, 777), (10 ** 6, 10 ** 6), (-10 ** 6, 3)])
def test_matching_is_invariant_under_a_translation_of_the_origin(noise_image, xy0):
    """Moving xy0 and the PSF model together leaves the match unchanged: every plane to float64 rounding and the
    kernel at corresponding parent positions.  Any step using array indices as parent positions (or the
    reverse) breaks this, by the PSF's change over |xy0| pixels."""
    ref = GaussianPsf(31, 31, 3.2)
    base = _run(_task(), Exposure(noise_image, variance=np.ones((H, W)), psf=_varying_psf((0, 0))), ref)
    moved = _run(_task(), Exposure(noise_image, variance=np.ones((H, W)), psf=_varying_psf(xy0), xy0=xy0), ref)
    a, b = base.psfMatchedExposure, moved.psfMatchedExposure
    assert b.getXY0() == xy0
    finite = np.isfinite(a.image)
    assert np.array_equal(finite, np.isfinite(b.image)) and finite.sum() > 0.7 * H * W
    np.testing.assert_allclose(b.image[finite], a.image[finite], rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.variance[finite], a.variance[finite], rtol=1e-12)
    np.testing.assert_array_equal(b.mask, a.mask)
    for x, y in [(0.0, 0.0), (60.3, 40.7), (199.0, 169.0)]:
        np.testing.assert_allclose(moved.psfMatchingKernel.computeImage((x + xy0[0], y + xy0[1])),
                                   base.psfMatchingKernel.computeImage((x, y)), rtol=0, atol=1e-11)
    # and the fit's candidates sit at the same places relative to the origin
    pa = sorted((c.x, c.y) for c in base.kernelCellSet.candidates())
    pb = sorted((c.x - xy0[0], c.y - xy0[1]) for c in moved.kernelCellSet.candidates())
    np.testing.assert_allclose(pb, pa, rtol=0, atol=1e-9)


class _RecordingPsf:
    """A user PSF model that records every position it is asked for."""

    def __init__(self, inner):
        self.inner, self.positions = inner, []

    def computeKernelImage(self, position):
        self.positions.append((float(position[0]), float(position[1])))
        return self.inner.computeKernelImage(position)

    def getAveragePosition(self):
        return self.inner.getAveragePosition()

    def isSpatiallyVarying(self):
        return True


def test_the_task_asks_the_psf_models_only_for_parent_positions_inside_the_exposure(noise_image):
    """Far from the origin (xy0 = (1e6, -500)), a local (array) position would lie 1e6 px outside the box."""
    xy0 = (10 ** 6, -500)
    sci, ref = _RecordingPsf(_varying_psf(xy0)), _RecordingPsf(GaussianPsf(31, 31, 3.2))
    result = _run(_task(), Exposure(noise_image, variance=np.ones((H, W)), psf=sci, xy0=xy0), ref)
    for rec in (sci, ref):
        p = np.array(rec.positions)
        assert len(p) >= 16
        assert p[:, 0].min() >= xy0[0] - 0.5 and p[:, 0].max() <= xy0[0] + W - 0.5
        assert p[:, 1].min() >= xy0[1] - 0.5 and p[:, 1].max() <= xy0[1] + H - 0.5
    # each candidate's science stamp is the model's kernel image at the candidate's parent position
    for c in result.kernelCellSet.candidates():
        k = sci.inner.computeKernelImage((c.x, c.y))
        n, m = c.science.shape[0] // 2, k.shape[0] // 2
        np.testing.assert_allclose(c.science[n - m:n + m + 1, n - m:n + m + 1], k, rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------
# 2. cut-outs


def test_a_cut_out_convolved_with_the_full_fields_kernel_is_that_region_of_the_full_match(noise_image):
    """A sub-image (xy0 = its parent position) convolved with the full field's spatially varying kernel equals
    the same pixels of the full matched exposure, wherever the cut-out's own border leaves them defined."""
    xy0 = (300, 400)
    result = _run(_task(), Exposure(noise_image, variance=np.ones((H, W)), psf=_varying_psf(xy0), xy0=xy0),
                  GaussianPsf(31, 31, 3.2))
    full = result.psfMatchedExposure
    sx, sy, w, h = 37, 51, 120, 101  # odd height, even width
    sub = Exposure(noise_image[sy:sy + h, sx:sx + w], variance=np.ones((h, w)), psf=_varying_psf(xy0),
                   xy0=(xy0[0] + sx, xy0[1] + sy))
    out = convolve_masked_image(sub.getMaskedImage(), result.psfMatchingKernel)
    assert out.getXY0() == sub.getXY0()
    half = result.psfMatchingKernel.getWidth() // 2
    inner = (slice(half, h - half), slice(half, w - half))
    assert np.isfinite(out.image[inner]).all() and np.isnan(out.image[0, 0])
    np.testing.assert_allclose(out.image[inner], full.image[sy:sy + h, sx:sx + w][inner], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.variance[inner], full.variance[sy:sy + h, sx:sx + w][inner], rtol=1e-12)
    # and each pixel is the convolution with the kernel evaluated at that pixel's parent position (a half-pixel
    # slip of the spatial model, the same in both, would pass the comparison above but not this one)
    kernel, data = result.psfMatchingKernel, sub.image
    for j, i in [(half, half), (50, 60), (h - half - 1, w - half - 1)]:
        k = kernel.computeImage((sub.getXY0()[0] + i, sub.getXY0()[1] + j))
        direct = float((k * data[j - half:j + half + 1, i - half:i + half + 1][::-1, ::-1]).sum())
        assert out.image[j, i] == pytest.approx(direct, rel=1e-12, abs=1e-12)


def test_a_cut_out_of_a_constant_psf_field_matches_as_the_full_field(noise_image):
    """With a spatially constant PSF, the fit does not depend on the box: a cut-out matched on its own equals
    the same region of the full match to float64 rounding (away from the cut-out's border)."""
    psf = VariableGaussianPsf(21, 21, Box2I((0, 0), (W, H)), sigma=[1.8], e1=[0.2], e2=[0.1])
    ref = GaussianPsf(31, 31, 3.2)
    full = _run(_task(), Exposure(noise_image, variance=np.ones((H, W)), psf=psf, xy0=(300, 400)), ref)
    sub = _run(_task(), Exposure(noise_image[20:120, 33:150], variance=np.ones((100, 117)), psf=psf,
                                 xy0=(333, 420)), ref)
    b = sub.psfMatchedExposure.image
    a = full.psfMatchedExposure.image[20:120, 33:150]
    ok = np.isfinite(b)
    assert ok.sum() > 0.5 * b.size and np.isfinite(a[ok]).all()
    np.testing.assert_allclose(b[ok], a[ok], rtol=0, atol=1e-11)


# ---------------------------------------------------------------------------
# 3. stars drawn at known parent positions


def _star_field(psf, xy0, width, height, spacing=40, margin=30, flux=1e4):
    rng = np.random.default_rng(1)
    stars = [(xy0[0] + cx + rng.uniform(-0.5, 0.5), xy0[1] + cy + rng.uniform(-0.5, 0.5))
             for cx in range(margin, width - margin + 1, spacing) for cy in range(margin, height - margin + 1, spacing)]
    image = np.zeros((height, width))
    for x, y in stars:
        image[psf.computeImageBBox((x, y)).slices(xy0)] += flux * psf.computeImage((x, y))
    return image, stars


def _measure(image, xy0, stars, half=12):
    """(dx, dy, ixx, iyy, ixy) of each star: adaptive centroid minus the true parent position, and moments."""
    out = []
    for x, y in stars:
        ix, iy = round(x) - xy0[0], round(y) - xy0[1]
        stamp = np.asarray(image[iy - half:iy + half + 1, ix - half:ix + half + 1], dtype=np.float64)
        assert np.isfinite(stamp).all()
        ixx, iyy, ixy, xc, yc, ok = adaptive_moments(stamp)
        assert ok
        out.append((float(xc) + ix + xy0[0] - x, float(yc) + iy + xy0[1] - y, float(ixx), float(iyy), float(ixy)))
    return np.array(out)


@pytest.mark.parametrize("xy0, width, height", [((0, 0), 110, 110), ((-77, -1000), 111, 70),
                                                ((10 ** 6, 10 ** 6), 70, 111), ((3, 5), 100, 101)])
def test_matched_stars_stay_where_they_were_drawn_with_the_reference_shape(xy0, width, height):
    """An elliptical PSF (e = (0.2, -0.15)) matched to a round sigma = 3 Gaussian: each star, drawn at a
    sub-pixel parent position, comes out centred there to 1e-4 px, with the reference's moments to 1e-4 px^2,
    for even, odd, non-square images and origins negative or at 1e6."""
    psf = VariableGaussianPsf(21, 21, Box2I(xy0, (width, height)), sigma=[1.9], e1=[0.2], e2=[-0.15])
    image, stars = _star_field(psf, xy0, width, height)
    result = _run(ModelPsfMatchTask(), Exposure(image, variance=np.ones_like(image), psf=psf, xy0=xy0),
                  GaussianPsf(31, 31, 3.0))
    m = _measure(result.psfMatchedExposure.image, xy0, stars)
    assert len(m) >= 2
    assert np.abs(m[:, :2]).max() < 1e-4
    np.testing.assert_allclose(m[:, 2:4], 9.0, rtol=0, atol=1e-4)
    np.testing.assert_allclose(m[:, 4], 0.0, rtol=0, atol=1e-4)
    # the input stars were elliptical: the test can fail
    m0 = _measure(image, xy0, stars)
    assert np.abs(m0[:, 4]).min() > 0.3 and np.abs(m0[:, :2]).max() < 1e-4


# ---------------------------------------------------------------------------
# 4. PSFEx: the 0-based model equals the format's definition at x + 1, y + 1


def _lanczos3(t):
    t = np.asarray(t, dtype=np.float64)
    return np.where(np.abs(t) < 3, np.sinc(t) * np.sinc(t / 3.0), 0.0)


def _weights(coords, n):
    """Rows of renormalized 6-tap Lanczos-3 weights onto samples 0..n-1 (samples outside the grid are zero)."""
    w = np.zeros((len(coords), n))
    for row, u in enumerate(coords):
        taps = math.floor(u) + np.arange(-2, 4)
        lw = _lanczos3(u - taps)
        lw /= lw.sum()
        for t, v in zip(taps, lw):
            if 0 <= t < n:
                w[row, t] = v
    return w


def _psfex_by_the_format(path, X, Y):
    """The kernel image of a PSFEx file at the SExtractor (1-based) position (X, Y), from the file alone:
    terms (X - POLZERO)/POLSCAL in PSFEx order, the basis sum, the resampling by PSF_SAMP around the sample
    grid's centre (n // 2), the odd stamp covering PSFAXIS * PSF_SAMP, unit sum."""
    with fits.open(path) as hdul:
        table = hdul["PSF_DATA"]
        h = table.header
        nx, ny, nb = h["PSFAXIS1"], h["PSFAXIS2"], h["PSFAXIS3"]
        basis = np.asarray(table.data["PSF_MASK"][0], dtype=np.float64).reshape(nb, ny, nx)
        degree, samp = h["POLDEG1"], h["PSF_SAMP"]
        xs, ys = (X - h["POLZERO1"]) / h["POLSCAL1"], (Y - h["POLZERO2"]) / h["POLSCAL2"]
    terms = [xs ** i * ys ** j for j in range(degree + 1) for i in range(degree + 1 - j)]
    model = np.tensordot(np.array(terms), basis, axes=1)
    sizes = []
    for n in (nx, ny):
        m = math.ceil(n * samp - 1e-9)
        sizes.append(m if m % 2 else m + 1)
    sw, sh = sizes
    wx = _weights((np.arange(sw) - sw // 2) / samp + nx // 2, nx)
    wy = _weights((np.arange(sh) - sh // 2) / samp + ny // 2, ny)
    stamp = wy @ model @ wx.T
    return stamp / stamp.sum()


@needs_psfex
@pytest.mark.parametrize("name", PSFEX_FILES)
def test_psfex_models_at_0_based_positions_are_the_format_evaluated_at_x_plus_1(name):
    """An evaluation written from the format description alone agrees to rounding; the same evaluation at
    (x, y) itself (no +1) differs by more than 1e-6 of the peak, so a 0/1-based slip cannot pass."""
    path = DATA / name
    psf = read_psf(path)
    for x, y in [(100.0, 3000.0), (1700.3, 250.8)]:
        k = psf.computeKernelImage((x, y))
        truth = _psfex_by_the_format(path, x + 1.0, y + 1.0)
        assert k.shape == truth.shape
        assert np.abs(k - truth).max() < 1e-12 * k.max()
        assert np.abs(k - _psfex_by_the_format(path, x, y)).max() > 1e-6 * k.max()


@needs_psfex
@pytest.mark.parametrize("name", PSFEX_FILES[:3])
def test_psfex_star_images_are_centred_at_their_sub_pixel_position(name):
    """computeImage at a non-integer position: its box is centred on the nearest pixel (halves rounded up, as
    LSST), and the star's adaptive centroid is the kernel image's plus the fractional offset, to 1e-6 px."""
    psf = read_psf(DATA / name)
    for x, y in [(1000.3, 2000.8), (55.5, 4000.49), (1200.72, 10.26), (-0.5, 7.5)]:
        img, box, k = psf.computeImage((x, y)), psf.computeImageBBox((x, y)), psf.computeKernelImage((x, y))
        xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
        assert (box.getMinX() + img.shape[1] // 2, box.getMinY() + img.shape[0] // 2) == (xi, yi)
        assert img.sum() == pytest.approx(1.0, abs=1e-12)
        a, b = adaptive_moments(img), adaptive_moments(k)
        assert float(a[3] - b[3]) == pytest.approx(x - xi, abs=1e-6)
        assert float(a[4] - b[4]) == pytest.approx(y - yi, abs=1e-6)


# ---------------------------------------------------------------------------
# 5. files and the command line


def _sky_wcs(crpix=(5.5, 6.5)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = list(crpix)
    w.wcs.crval = [10.0, 20.0]
    w.wcs.cdelt = [-1e-4, 1e-4]
    return w


@pytest.mark.parametrize("xy0", [(-77, -1000), (10 ** 6, 10 ** 6), (-2 ** 31 + 5, 2 ** 31 - 100)])
def test_origin_and_wcs_round_trip_without_shifting_crpix(tmp_path, xy0):
    """The origin comes back from LTV/A cards; the WCS is the array's, so CRPIX is written and read unchanged
    (a reader or writer that also applied xy0 would move it by |xy0|)."""
    exp = Exposure(np.ones((10, 12), np.float32), wcs=_sky_wcs(), xy0=xy0)
    write_exposure(exp, tmp_path / "e.fits")
    header = fits.getheader(tmp_path / "e.fits", "IMAGE")
    assert (header["LTV1"], header["LTV2"]) == (-xy0[0], -xy0[1])
    assert (header["CRVAL1A"], header["CRVAL2A"], header["CTYPE1A"]) == (xy0[0], xy0[1], "LINEAR")
    assert (header["CRPIX1"], header["CRPIX2"]) == (5.5, 6.5)
    back = read_exposure(tmp_path / "e.fits")
    assert back.getXY0() == xy0
    np.testing.assert_array_equal(back.getWcs().wcs.crpix, [5.5, 6.5])


def test_the_matched_exposure_keeps_the_wcs_of_its_array(noise_image):
    """Matching moves no pixel: the matched exposure has the input's origin and its WCS unchanged (a copy)."""
    wcs = _sky_wcs((50.0, 60.0))
    exp = Exposure(noise_image, variance=np.ones((H, W)), psf=_varying_psf((1000, 2000)), wcs=wcs, xy0=(1000, 2000))
    matched = _run(_task(), exp, GaussianPsf(31, 31, 3.2)).psfMatchedExposure
    assert matched.getXY0() == (1000, 2000) and matched.getWcs() is not wcs
    np.testing.assert_array_equal(matched.getWcs().wcs.crpix, [50.0, 60.0])
    x, y = np.array([0.0, 199.0, 17.5]), np.array([0.0, 169.0, 88.25])
    np.testing.assert_array_equal(matched.getWcs().pixel_to_world_values(x, y), wcs.pixel_to_world_values(x, y))


def test_a_user_psf_persisted_by_polynomial_is_evaluated_at_parent_positions(tmp_path):
    """A varying user model is stored as a PSFEx-style polynomial over the exposure's parent box (1-based
    POLZERO); a model quadratic in position comes back exactly at parent positions far from the origin."""
    x0, y0 = 5000, -300
    g1 = GaussianPsf(21, 21, 1.6).computeKernelImage((0, 0))
    g2 = GaussianPsf(21, 21, 2.4).computeKernelImage((0, 0))

    class Mix:
        def computeKernelImage(self, position):
            t = 0.2 + 0.5 * (position[0] - x0) / 100 + 0.3 * ((position[1] - y0) / 80) ** 2
            return (1 - t) * g1 + t * g2

        def getAveragePosition(self):
            return (x0 + 50.0, y0 + 40.0)

        def isSpatiallyVarying(self):
            return True

    psf = PsfAdapter(Mix())
    write_exposure(Exposure(np.zeros((80, 100), np.float32), psf=psf, xy0=(x0, y0)), tmp_path / "e.fits")
    back = read_exposure(tmp_path / "e.fits").getPsf()
    for p in [(x0, y0), (x0 + 99, y0 + 79), (x0 + 33.3, y0 + 61.7)]:
        np.testing.assert_allclose(back.computeKernelImage(p), psf.computeKernelImage(p), rtol=0, atol=1e-14)


def _des_cut_out(x0, y0, width=130, height=120):
    psf = read_psf(DES)
    image = np.full((height, width), 100.0)
    stars = [(x0 + 40.3, y0 + 39.6), (x0 + 90.7, y0 + 80.2)]
    for x, y in stars:
        image[psf.computeImageBBox((x, y)).slices((x0, y0))] += 1e4 * psf.computeImage((x, y))
    rng = np.random.default_rng(0)
    return (image + rng.normal(0, 1, image.shape)).astype(np.float32), psf, stars


@needs_psfex
@pytest.mark.parametrize("cards", ["ltv", "alternate"])
def test_the_cli_matches_a_plain_cut_out_with_the_psf_of_its_parent_pixels(tmp_path, cards):
    """`psfmatch run` on a plain image of a DES CCD's corner (origin from LTV1/LTV2, or from LSST's linear WCS A)
    with the CCD's PSFEx model: the output keeps the origin and the sky WCS of the array (CRPIX unchanged), is
    bit for bit the library's match of the exposure at that origin, and differs from the match of the same
    pixels without an origin (the model evaluated 1790 and 3830 px away)."""
    x0, y0 = 1790, 3830
    image, psf, stars = _des_cut_out(x0, y0)
    header = _sky_wcs((900.5, -600.0)).to_header()
    if cards == "ltv":
        header["LTV1"], header["LTV2"] = -x0, -y0
    else:
        for key, value in {"CRVAL1A": x0, "CRVAL2A": y0, "CRPIX1A": 1.0, "CRPIX2A": 1.0, "CTYPE1A": "LINEAR",
                           "CTYPE2A": "LINEAR"}.items():
            header[key] = value
    fits.PrimaryHDU(image, header).writeto(tmp_path / "in.fits")
    variance = np.ones_like(image)
    fits.PrimaryHDU(variance).writeto(tmp_path / "var.fits")
    args = ["--psf", f"psfex:{DES}", "-r", "gaussian:sigma=3.0", "--variance", str(tmp_path / "var.fits"), "-q"]
    assert main(["run", str(tmp_path / "in.fits"), "-o", str(tmp_path / "out.fits"), *args]) == 0
    out = read_exposure(tmp_path / "out.fits")
    assert out.getXY0() == (x0, y0)
    assert fits.getheader(tmp_path / "out.fits", "IMAGE")["CRPIX1"] == 900.5
    lib = _run(ModelPsfMatchTask(), Exposure(image, variance=variance, psf=psf, xy0=(x0, y0)),
               GaussianPsf(31, 31, 3.0)).psfMatchedExposure
    np.testing.assert_array_equal(out.image, lib.image)
    wrong = _run(ModelPsfMatchTask(), Exposure(image, variance=variance, psf=psf), GaussianPsf(31, 31, 3.0))
    ok = np.isfinite(lib.image)
    assert np.abs(wrong.psfMatchedExposure.image[ok] - lib.image[ok]).max() > 1.0
    m = _measure(out.image.astype(np.float64) - 100.0, (x0, y0), stars)
    assert np.abs(m[:, :2]).max() < 0.01  # centroids: the kernel's fit at the corner, not a pixel slip


# ---------------------------------------------------------------------------
# 6. defects the review found (fixed)


@pytest.mark.parametrize("ctype", [None, "linear"])
def test_an_alternate_linear_wcs_without_an_upper_case_ctype_gives_the_origin(tmp_path, ctype):
    """CTYPE1A 'linear' (any case) is LSST's origin: it was dropped unread.  Without CTYPE1A the alternate WCS's
    units are unknown: it is not taken as the origin, and its cards are kept (they were dropped unread too)."""
    header = fits.Header({"CRVAL1A": 100.0, "CRVAL2A": 200.0, "CRPIX1A": 1.0, "CRPIX2A": 1.0})
    if ctype is not None:
        header["CTYPE1A"], header["CTYPE2A"] = ctype, ctype
    fits.PrimaryHDU(np.ones((10, 12), np.float32), header).writeto(tmp_path / "a.fits")
    exp = read_exposure(tmp_path / "a.fits", variance=np.ones((10, 12), np.float32))
    if ctype is None:
        assert exp.getXY0() == (0, 0) and exp.metadata["fitsHeader"]["CRVAL1A"] == 100.0
    else:
        assert exp.getXY0() == (100, 200) and "CRVAL1A" not in exp.metadata["fitsHeader"]


def test_a_sliced_nddata_gets_the_origin_of_its_cut_out():
    from astropy.nddata import NDDataRef

    nd = NDDataRef(np.arange(200 * 300, dtype=np.float32).reshape(200, 300), wcs=_sky_wcs((50.0, 60.0)),
                   meta={"LTV1": -100, "LTV2": -200})
    cut = nd[50:150, 20:120]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        exp = Exposure.from_nddata(cut)
    # the WCS is the cut-out's already
    np.testing.assert_allclose(exp.getWcs().pixel_to_world_values(0.0, 0.0), nd.wcs.pixel_to_world_values(20.0, 50.0))
    assert exp.getXY0() == (120, 250)  # the parent's origin (100, 200) plus the slice's start (20, 50)
    # xy0= given wins; an NDDataRef without a WCS records no slice: its meta's origin, as documented
    assert Exposure.from_nddata(cut, xy0=(7, 8)).getXY0() == (7, 8)
    bare = NDDataRef(nd.data, meta={"LTV1": -100, "LTV2": -200})[50:150, 20:120]
    assert Exposure.from_nddata(bare).getXY0() == (100, 200)
