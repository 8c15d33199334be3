"""PSFEx reader: format rules on synthetic files, and every real model in ../shared/data/psfex/."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.errors import CorruptFileError, InvalidInputError, UnsupportedFormatError
from psfmatch.moments import measure_shape
from psfmatch.psf import GaussianPsf, PsfexPsf, read_psf, read_psfex
from psfmatch.psf.psfex import lanczos_weights, psfex_terms

PSFEX_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "psfex"
DES = PSFEX_DIR / "GalSim-developers__GalSim" / "DECam_00154912_12_psfcat.psf"
INVALID = PSFEX_DIR / "GalSim-developers__GalSim" / "invalid_psfcat.psf"
REAL_MODELS = {
    "des": ("GalSim-developers__GalSim/DECam_00154912_12_psfcat.psf", 0.97556, 25, 2, 25),
    "esheldon": ("esheldon__psfex/test_psfcat.psf", 0.81158, 25, 2, 21),
    "piff_oversampled": ("rmjarvis__Piff/DECam_00241238_01_psfcat.psf", 0.5, 101, 2, 51),
    "tractor_s2": ("dstndstn__tractor/c4d_140717_065122_ooi_i_ls11-S2-se.psf", 1.0, 63, 2, 63),
    "tractor_deg6": ("dstndstn__tractor/c4d_140818_002108_ooi_z_v1.ext27.psf", 1.09334, 45, 6, 51),
    "tractor_s31": ("dstndstn__tractor/psfex-decam-00392360-S31.fits", 1.0, 45, 6, 45),
}

needs_data = pytest.mark.skipif(not PSFEX_DIR.is_dir(), reason=f"shared PSFEx data not found at {PSFEX_DIR}")

try:
    import galsim
    import galsim.des

    HAS_GALSIM = True
except ImportError:
    HAS_GALSIM = False


# ---------------------------------------------------------------------------
# synthetic files


def gaussian(n, sigma, cx=0.0, cy=0.0):
    y, x = np.mgrid[0:n, 0:n].astype(float) - n // 2
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))


def make_psfex(path, basis, *, degree=2, samp=1.0, zero=(100.0, 200.0), scal=(50.0, 80.0),
               names=("X_IMAGE", "Y_IMAGE"), extra=None, drop=(), name="PSF_DATA"):
    basis = np.asarray(basis, dtype=np.float32)
    n, ny, nx = basis.shape
    col = fits.Column(name="PSF_MASK", format=f"{n * ny * nx}E", dim=f"({nx}, {ny}, {n})", array=basis[None])
    hdu = fits.BinTableHDU.from_columns([col], name=name)
    h = hdu.header
    cards = {"POLNAXIS": 2 if degree > 0 else 0, "POLGRP1": 1, "POLNAME1": names[0], "POLZERO1": zero[0],
             "POLSCAL1": scal[0], "POLGRP2": 1, "POLNAME2": names[1], "POLZERO2": zero[1], "POLSCAL2": scal[1],
             "POLNGRP": 1, "POLDEG1": degree, "PSF_FWHM": 3.0, "PSF_SAMP": samp, "PSFNAXIS": 3,
             "PSFAXIS1": nx, "PSFAXIS2": ny, "PSFAXIS3": n}
    if degree == 0:
        cards = {k: v for k, v in cards.items() if not k.startswith("POL") or k == "POLNAXIS"}
    cards.update(extra or {})
    for k, v in cards.items():
        if k not in drop:
            h[k] = v
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


@pytest.fixture
def basis6():
    """Six distinct basis images: a Gaussian and five small, different perturbations."""
    b = [gaussian(15, 2.0)]
    for k in range(1, 6):
        b.append(0.05 * gaussian(15, 1.0 + 0.3 * k, cx=0.5 * (k % 3 - 1), cy=0.4 * (k % 2)))
    return np.array(b)


def test_psfex_terms_order():
    # degree 2: 1, x, x^2, y, x y, y^2 ; degree 3: 1, x, x^2, x^3, y, xy, x^2y, y^2, xy^2, y^3
    np.testing.assert_allclose(psfex_terms(2.0, 3.0, 2), [1, 2, 4, 3, 6, 9])
    np.testing.assert_allclose(psfex_terms(2.0, 3.0, 3), [1, 2, 4, 8, 3, 6, 12, 9, 18, 27])
    d = 6
    t = psfex_terms(2.0, 3.0, d)
    for j in range(d + 1):
        for i in range(d + 1 - j):
            assert t[i + j * (d + 1) - j * (j - 1) // 2] == 2.0 ** i * 3.0 ** j


def test_polynomial_and_one_based_positions(tmp_path, basis6):
    path = make_psfex(tmp_path / "m.psf", basis6)
    psf = read_psfex(path)
    # at 0-based (POLZERO - 1) every non-constant term vanishes
    np.testing.assert_array_equal(psf.computeSampledImage((99.0, 199.0)), psf.basis[0])
    # elsewhere the model is sum_k c_k B_k with the PSFEx terms of the 1-based position
    x, y = 130.0, 150.0
    xs, ys = (x + 1 - 100.0) / 50.0, (y + 1 - 200.0) / 80.0
    expected = np.tensordot(psfex_terms(xs, ys, 2), basis6.astype(np.float32).astype(np.float64), axes=1)
    np.testing.assert_allclose(psf.computeSampledImage((x, y)), expected, rtol=1e-12, atol=0)
    assert psf.getAveragePosition() == (99.0, 199.0)
    assert psf.isSpatiallyVarying()


def test_origin_zero_for_lsst_files(tmp_path, basis6):
    path = make_psfex(tmp_path / "m.psf", basis6)
    one, zero = read_psfex(path), read_psfex(path, origin=0)
    np.testing.assert_array_equal(zero.computeKernelImage((131.0, 151.0)), one.computeKernelImage((130.0, 151.0 - 1)))
    assert zero.getAveragePosition() == (100.0, 200.0)


def test_swapped_context_order(tmp_path, basis6):
    """A file whose first context is Y describes the same model with the terms transposed."""
    straight = read_psfex(make_psfex(tmp_path / "a.psf", basis6))
    # terms v1^i v2^j with v1 = y: file index of (i, j) holds our term x^j y^i
    d = 2
    idx = {(i, j): i + j * (d + 1) - j * (j - 1) // 2 for j in range(d + 1) for i in range(d + 1 - j)}
    swapped = np.empty_like(basis6)
    for (i, j), k in idx.items():
        swapped[idx[(j, i)]] = basis6[k]
    other = read_psfex(make_psfex(tmp_path / "b.psf", swapped, zero=(200.0, 100.0), scal=(80.0, 50.0),
                                  names=("Y_IMAGE", "X_IMAGE")))
    for pos in [(99.0, 199.0), (130.0, 150.0), (20.0, 260.0)]:
        np.testing.assert_allclose(other.computeKernelImage(pos), straight.computeKernelImage(pos), rtol=1e-12,
                                   atol=1e-15)


def test_psf_samp_one_is_exact(tmp_path, basis6):
    psf = read_psfex(make_psfex(tmp_path / "m.psf", basis6, samp=1.0))
    k = psf.computeKernelImage((99.0, 199.0))
    b0 = basis6[0].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(k, b0 / b0.sum(), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("samp", [0.5, 0.8, 1.25])
def test_psf_samp_resampling_of_a_gaussian(tmp_path, samp):
    """A Gaussian of sigma 1.7 image pixels, tabulated every PSF_SAMP pixels, comes back as that Gaussian."""
    sigma_pix = 1.7
    n = 41 if samp < 1 else 21
    b = gaussian(n, sigma_pix / samp)[None]
    psf = read_psfex(make_psfex(tmp_path / "g.psf", b, degree=0, samp=samp))
    k = psf.computeKernelImage((500.0, 500.0))
    w = k.shape[0]
    assert w % 2 == 1 and w == (lambda m: m if m % 2 else m + 1)(math.ceil(n * samp))
    truth = gaussian(w, sigma_pix)
    truth /= truth.sum()
    # Lanczos-3 interpolation error: about 0.4% of the peak for a Gaussian of 2 samples sigma
    assert np.abs(k - truth).max() < 5e-3 * truth.max()
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    q = measure_shape(k)
    assert q.sigma == pytest.approx(sigma_pix, rel=5e-3)
    assert abs(q.x) < 1e-6 and abs(q.y) < 1e-6
    # the raw model sums to about 1 / PSF_SAMP^2; model_flux undoes that
    assert psf.model_flux() == pytest.approx(b.sum() * samp ** 2, rel=1e-6)


def test_vectorized_stamps_equal_the_definition_and_fail_by_position(tmp_path, basis6):
    """Every stamp is W_y (sum_k c_k B_k) W_x^T normalized, whether realized alone or in a batch."""
    from psfmatch.errors import PsfEvaluationError
    from psfmatch.psf.base import compute_kernel_images

    psf = read_psfex(make_psfex(tmp_path / "m.psf", basis6, samp=0.8))
    rng = np.random.default_rng(5)
    pos = [(float(x), float(y)) for x, y in zip(rng.uniform(0, 300, 40), rng.uniform(0, 400, 40))]
    ny, nx = psf.sample_shape
    w, h = psf.getDimensions()
    wx = lanczos_weights((np.arange(w) - w // 2) / 0.8 + nx // 2, nx)
    wy = lanczos_weights((np.arange(h) - h // 2) / 0.8 + ny // 2, ny)
    b = basis6.astype(np.float32).astype(np.float64)
    expected = []
    for x, y in pos:
        m = wy @ np.tensordot(psfex_terms((x + 1 - 100.0) / 50.0, (y + 1 - 200.0) / 80.0, 2), b, axes=1) @ wx.T
        expected.append(m / m.sum())
    stack = psf.computeKernelImages(pos)
    np.testing.assert_allclose(stack, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose([psf.computeKernelImage(p) for p in pos], stack, rtol=0, atol=1e-15)
    # a resized model resamples onto its own grid (no stale cache)
    small = psf.resized(11, 11)
    assert small.computeKernelImages(pos[:3]).shape == (3, 11, 11)
    assert psf.computeKernelImages(pos[:3]).shape == (3, h, w)
    # far outside the model's domain the polynomial overflows: that position alone fails, by name
    far = pos[:2] + [(1e200, 5.0)]
    with pytest.raises(PsfEvaluationError, match=r"PsfexPsf.*\(1e\+200, 5\)"):
        psf.computeKernelImages(far)
    images, errors = compute_kernel_images(psf, far)
    assert list(errors) == [2] and np.allclose(images[1], stack[1], rtol=0, atol=1e-15)


def test_fitted_region_and_its_variation_on_the_command_line(tmp_path, basis6, capsys):
    """getBBox is POLZERO +- POLSCAL / 2 in 0-based pixels; inspect-psf reports the variation over it."""
    from psfmatch.cli import main

    path = make_psfex(tmp_path / "m.psf", basis6)  # POLZERO (100, 200), POLSCAL (50, 80), 1-based contexts
    box = read_psfex(path).getBBox()
    assert (box.getMinX(), box.getMinY(), box.getMaxX(), box.getMaxY()) == (74, 159, 124, 239)
    assert read_psfex(path, origin=0).getBBox().getMinX() == 75
    with pytest.raises(InvalidInputError, match="degree 0 is the same everywhere: it has no fitted region"):
        read_psfex(make_psfex(tmp_path / "c.psf", basis6[:1], degree=0)).getBBox()
    assert main(["inspect-psf", str(path)]) == 0
    out = capsys.readouterr().out
    assert "over 51x81 px (25 positions): Gaussian-equivalent FWHM" in out


def test_compute_image_places_star_at_subpixel_position(tmp_path):
    psf = read_psfex(make_psfex(tmp_path / "g.psf", gaussian(41, 3.4)[None], degree=0, samp=0.5))
    img = psf.computeImage((10.3, 20.8))
    bbox = psf.computeImageBBox((10.3, 20.8))
    ys, xs = np.mgrid[bbox.getMinY():bbox.getMaxY() + 1, bbox.getMinX():bbox.getMaxX() + 1]
    assert img.sum() == pytest.approx(1.0)
    assert (img * xs).sum() == pytest.approx(10.3, abs=2e-3)
    assert (img * ys).sum() == pytest.approx(20.8, abs=2e-3)


def test_lanczos_weights_reproduce_constants_and_vanish_outside():
    w = lanczos_weights(np.array([5.0, 5.3, 7.75]), 14)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(w[0], np.eye(14)[5], atol=1e-15)
    edge = lanczos_weights(np.array([-0.4]), 14)
    assert edge.sum() < 1.0  # samples outside the grid count as zero


def test_constant_model_and_sources(tmp_path):
    path = make_psfex(tmp_path / "c.psf", gaussian(15, 2.0)[None], degree=0)
    psf = read_psfex(path)
    assert not psf.isSpatiallyVarying()
    a = psf.computeKernelImage((0.0, 0.0))
    np.testing.assert_array_equal(a, psf.computeKernelImage((1000.0, 3000.0)))
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(read_psfex(hdul).computeKernelImage((5, 5)), a)
        np.testing.assert_array_equal(read_psfex(hdul[1]).computeKernelImage((5, 5)), a)
        np.testing.assert_array_equal(read_psfex(hdul, ext=1).computeKernelImage((5, 5)), a)
    assert isinstance(read_psf(path), PsfexPsf)
    assert isinstance(PsfexPsf.readFits(path), PsfexPsf)


def test_stamp_size_and_resized(tmp_path, basis6):
    psf = read_psfex(make_psfex(tmp_path / "m.psf", basis6), stamp_size=11)
    assert psf.computeKernelImage((99, 199)).shape == (11, 11)
    big = psf.resized(31, 21)
    assert big.computeKernelImage((99, 199)).shape == (21, 31)
    assert isinstance(big, PsfexPsf)


def test_to_hdu_round_trip(tmp_path, basis6):
    psf = read_psfex(make_psfex(tmp_path / "m.psf", basis6, samp=0.7), origin=0)
    out = tmp_path / "out.psf"
    fits.HDUList([fits.PrimaryHDU(), psf.to_hdu()]).writeto(out)
    back = read_psfex(out)  # written 1-based
    for pos in [(50.0, 60.0), (120.5, 210.25)]:
        np.testing.assert_allclose(back.computeKernelImage(pos), psf.computeKernelImage(pos), rtol=1e-6, atol=1e-9)


def test_to_hdu_keeps_a_float64_basis_exactly(tmp_path, basis6):
    """A model computed in float64 round-trips bit for bit; one read from a file stays float32 on disk."""
    import io

    from psfmatch.io.psf_persist import psf_from_hdul, psf_to_hdus

    computed = PsfexPsf(basis6, degree=2, polzero=(100.0, 200.0), polscal=(50.0, 80.0), psf_samp=0.5)
    read = read_psfex(make_psfex(tmp_path / "m.psf", basis6, samp=0.5))  # float32 in the file
    for psf, tform in ((computed, "D"), (read, "E")):
        hdu = psf.to_hdu()
        assert hdu.header["TFORM1"].endswith(tform)
        buf = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU()] + psf_to_hdus(psf)).writeto(buf)
        buf.seek(0)
        with fits.open(buf) as hdul:
            back = psf_from_hdul(hdul)
        assert back.basis.dtype == np.float64 and np.array_equal(back.basis, psf.basis)
        np.testing.assert_array_equal(back.computeKernelImage((10.0, 10.0)), psf.computeKernelImage((10.0, 10.0)))
        out = tmp_path / f"{tform}.psf"
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(out)
        assert np.array_equal(read_psfex(out).basis, psf.basis)  # the plain reader takes both
    assert (tmp_path / "E.psf").stat().st_size < (tmp_path / "D.psf").stat().st_size


class ClampedPsfex(PsfexPsf):
    """Holds the model at the edge of its fitted region outside it (overrides the public coefficients)."""

    def coefficients(self, position):
        b = self.getBBox()
        x = min(max(position[0], b.getMinX()), b.getMaxX())
        y = min(max(position[1], b.getMinY()), b.getMaxY())
        return super().coefficients((x, y))


def test_a_subclass_coefficients_serve_every_evaluation(tmp_path, basis6):
    base = read_psfex(make_psfex(tmp_path / "m.psf", basis6))
    psf = ClampedPsfex(base.basis, degree=2, polzero=base.polzero, polscal=base.polscal)
    box = psf.getBBox()
    corner = (float(box.getMinX()), float(box.getMinY()))
    pos = [(-600.0, -900.0), (100.0, 200.0), (5000.0, 210.0)]
    stack = psf.computeKernelImages(pos)  # used to evaluate the unclamped polynomial
    for img, p in zip(stack, pos):
        np.testing.assert_array_equal(img, psf.computeKernelImage(p))
    np.testing.assert_array_equal(stack[0], base.computeKernelImage(corner))
    assert not np.allclose(stack[0], base.computeKernelImage(pos[0]))
    # resized keeps the clamping (it used to rebuild a plain PsfexPsf) ...
    from psfmatch.psf.base import pad_or_crop

    want = pad_or_crop(base.computeKernelImage(corner), 11, 11)
    np.testing.assert_allclose(psf.resized(11, 11).computeKernelImages(pos[:1])[0], want / want.sum(), atol=1e-15)
    # ... and so does persistence: stored as the images it gives, not as the plain model's table
    from psfmatch.geom import Box2I
    from psfmatch.io.psf_persist import psf_to_hdus

    hdu, = psf_to_hdus(psf, bbox=Box2I((-100, -100), (400, 500)))
    assert hdu.header["PMAPPROX"] and hdu.header["PMORIGTY"] == "ClampedPsfex"


# ---------------------------------------------------------------------------
# error paths


@pytest.mark.parametrize("change, error, match", [
    (dict(drop=("PSF_SAMP",)), CorruptFileError, "lacks keyword PSF_SAMP"),
    (dict(extra={"PSF_SAMP": 0.0}), CorruptFileError, "PSF_SAMP = 0.0"),
    (dict(extra={"POLNAXIS": 3}), UnsupportedFormatError, "POLNAXIS = 3: unsupported PSFEx context"),
    (dict(extra={"POLNGRP": 2}), UnsupportedFormatError, "POLNGRP = 2.*unsupported PSFEx context"),
    (dict(extra={"POLGRP2": 2}), UnsupportedFormatError, r"POLGRP1/2 = \(1, 2\)"),
    (dict(names=("MAG_AUTO", "Y_IMAGE")), UnsupportedFormatError, "POLNAME1 = 'MAG_AUTO'"),
    (dict(names=("X_IMAGE", "XWIN_IMAGE")), UnsupportedFormatError, "need one X and one Y"),
    (dict(extra={"POLSCAL1": 0.0}), CorruptFileError, "POLSCAL1 = 0"),
    (dict(extra={"POLDEG1": 3}), CorruptFileError, "PSFAXIS3 = 6 contradicts POLDEG1 = 3"),
    (dict(extra={"PSFAXIS1": 14}), CorruptFileError, "PSF_MASK holds 1350 values"),
    (dict(extra={"PSFNAXIS": 4}), CorruptFileError, "PSFNAXIS = 4"),
    (dict(extra={"POLDEG1": "two"}), CorruptFileError, "POLDEG1 = 'two' is not a valid integer"),
    (dict(name="OTHER"), None, None),  # found through its PSF_MASK column
])
def test_header_checks(tmp_path, basis6, change, error, match):
    path = make_psfex(tmp_path / "bad.psf", basis6, **change)
    if error is None:
        assert isinstance(read_psfex(path), PsfexPsf)
        return
    with pytest.raises(error, match=match) as info:
        read_psfex(path)
    assert str(path) in str(info.value)


def test_nan_basis_rejected(tmp_path, basis6):
    b = basis6.copy()
    b[2, 3, 3] = np.nan
    with pytest.raises(CorruptFileError, match="NaN or inf"):
        read_psfex(make_psfex(tmp_path / "nan.psf", b))


def test_not_a_psfex_file(tmp_path):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.ones((5, 5))).writeto(path)
    with pytest.raises(UnsupportedFormatError, match="not a PSFEx model: no PSF_DATA"):
        read_psfex(path)
    with pytest.raises(UnsupportedFormatError, match="no HDU 'NOPE'"):
        read_psfex(path, ext="NOPE")
    with pytest.raises(UnsupportedFormatError, match="must be a binary table"):
        read_psfex(path, ext=0)
    text = tmp_path / "text.psf"
    text.write_text("not fits")
    with pytest.raises(CorruptFileError, match="not a readable FITS file"):
        read_psfex(text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_psfex(tmp_path / "missing.psf")
    with pytest.raises(InvalidInputError, match="origin must be 0 or 1"):
        read_psfex(path, origin=2)
    with pytest.raises(InvalidInputError, match="a PSFEx source must be"):
        read_psfex(3.5)


def test_constructor_checks():
    with pytest.raises(InvalidInputError, match="degree 2 needs 6 basis images; got 3"):
        PsfexPsf(np.ones((3, 5, 5)), degree=2)
    with pytest.raises(InvalidInputError, match="psf_samp must be positive"):
        PsfexPsf(np.ones((1, 5, 5)), degree=0, psf_samp=-1)
    with pytest.raises(InvalidInputError, match="stamp width must be a positive odd integer"):
        PsfexPsf(np.ones((1, 5, 5)), degree=0, stamp_size=10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(psf_samp="abc"), r"psf_samp must be positive \(a number: the sample step in image pixels\); got 'abc'"),
    (dict(psf_samp=None), "psf_samp must be positive .*; got None"),
    (dict(polzero=None), r"polzero must be a pair of numbers \(the \(x, y\) context offsets POLZERO1/2\); got None"),
    (dict(polzero=(1.0,)), r"polzero must be a pair of numbers .*; got \(1.0,\)"),
    (dict(polscal="ab"), "polscal must be a pair of numbers .*; got 'ab'"),
    (dict(stamp_size=(25,)), r"stamp_size must be an odd integer or a \(width, height\) pair of odd integers; "
                             r"got \(25,\)"),
    (dict(degree=None), "degree must be a non-negative integer; got None"),
    (dict(basis="abc"), r"basis must be a numeric array \(n_terms, ny, nx\); got str"),
], ids=["psf_samp-str", "psf_samp-None", "polzero-None", "polzero-short", "polscal-str", "stamp_size-short",
        "degree-None", "basis-str"])
def test_constructor_rejects_invalid_arguments(kwargs, match):
    args = dict(basis=np.ones((3, 5, 5)), degree=1)
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        PsfexPsf(args.pop("basis"), **args)


# ---------------------------------------------------------------------------
# the real models


@needs_data
def test_invalid_galsim_file_is_rejected():
    with pytest.raises(CorruptFileError, match=r"invalid_psfcat.psf\[PSF_DATA\]: PSFAXIS3 = 3 contradicts "
                                               r"POLDEG1 = 2, which needs .* = 6 basis images"):
        read_psfex(INVALID)


@needs_data
@pytest.mark.parametrize("key", list(REAL_MODELS))
def test_real_models_read_and_evaluate(key):
    rel, samp, nsamp, degree, stamp = REAL_MODELS[key]
    psf = read_psf(PSFEX_DIR / rel)  # format sniffed (one file has a .fits suffix)
    assert isinstance(psf, PsfexPsf)
    assert psf.psf_samp == pytest.approx(samp, abs=1e-5)
    assert psf.degree == degree and psf.sample_shape == (nsamp, nsamp)
    # at (POLZERO1, POLZERO2) the model is the first basis image, before resampling
    np.testing.assert_array_equal(psf.computeSampledImage(psf.getAveragePosition()), psf.basis[0])
    # across the 2048 x 4096 CCD: unit-sum odd stamps, centred, sizes and shapes as documented
    for pos in [psf.getAveragePosition(), (10.0, 10.0), (2037.0, 4085.0), (1000.0, 3000.0)]:
        k = psf.computeKernelImage(pos)
        assert k.shape == (stamp, stamp)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        q = measure_shape(k)
        assert 1.3 < q.sigma < 2.7
        assert math.hypot(q.g1, q.g2) < 0.2
        assert abs(q.x) < 0.3 and abs(q.y) < 0.3
        assert 0.85 < psf.model_flux(pos) < 1.15


@needs_data
def test_des_model_matches_galsim_measurement():
    """GalSim's test: adaptive moments at (1195.64, 1276.63), 1-based: sigma 1.807, g = (0.022, -0.131)."""
    psf = read_psfex(DES)
    q = psf.computeShape((1195.64 - 1, 1276.63 - 1))
    assert q.sigma == pytest.approx(1.807, abs=0.03)
    assert q.g1 == pytest.approx(0.022, abs=0.03)
    assert q.g2 == pytest.approx(-0.131, abs=0.03)


@needs_data
@pytest.mark.skipif(not HAS_GALSIM, reason="GalSim is not installed (pip install galsim) for the cross-check")
@pytest.mark.parametrize("key", list(REAL_MODELS))
def test_real_models_agree_with_galsim_des_psfex(key):
    path = str(PSFEX_DIR / REAL_MODELS[key][0])
    psf = read_psfex(path)
    ref = galsim.des.DES_PSFEx(path)
    for x, y in [(1195.64, 1276.63), (100.0, 200.0), (1900.0, 3900.0)]:  # 1-based, as GalSim takes them
        k = psf.computeKernelImage((x - 1, y - 1))
        n = k.shape[0]
        g = ref.getPSF(galsim.PositionD(x, y)).drawImage(nx=n, ny=n, scale=1.0, method="no_pixel").array
        g = g / g.sum()
        assert np.abs(k - g).max() < 2e-5 * k.max()


@needs_data
def test_matching_an_exposure_with_the_des_model():
    """Stars drawn with the elliptical DES model, matched to a round Gaussian, come out round and of its size."""
    psf = read_psfex(DES)
    x0, y0, size = 1070, 1150, 256
    image = np.zeros((size, size), dtype=np.float32)
    stars = [(x0 + 64.3, y0 + 70.6), (x0 + 190.8, y0 + 60.1), (x0 + 125.5, y0 + 125.4), (x0 + 70.2, y0 + 185.9),
             (x0 + 185.6, y0 + 190.3)]
    for x, y in stars:
        stamp = psf.computeImage((x, y))
        image[psf.computeImageBBox((x, y)).slices((x0, y0))] += 1000.0 * stamp
    exposure = Exposure(image, variance=np.ones_like(image), psf=psf, xy0=(x0, y0))
    reference = GaussianPsf(31, 31, 3.0)
    result = ModelPsfMatchTask(ModelPsfMatchConfig()).run(exposure, reference)
    assert result.metadata["qa"]["candidates"]["residualMaxWorst"] < 0.01
    matched = result.psfMatchedExposure
    assert matched.getPsf() == reference.resized(*matched.getPsf().getDimensions())
    for x, y in stars:
        xi, yi = round(x) - x0, round(y) - y0
        cut = matched.image[yi - 12:yi + 13, xi - 12:xi + 13].astype(np.float64)
        assert np.all(np.isfinite(cut))
        assert cut.sum() == pytest.approx(1000.0, rel=2e-3)
        q = measure_shape(cut)
        assert q.sigma == pytest.approx(3.0, rel=0.01)
        assert abs(q.g1) < 0.01 and abs(q.g2) < 0.01
    # before matching the stars have the DES shape
    xi, yi = round(stars[2][0]) - x0, round(stars[2][1]) - y0
    q = measure_shape(image[yi - 12:yi + 13, xi - 12:xi + 13].astype(np.float64))
    assert q.g2 < -0.09


def test_pickled_model_keeps_a_read_only_basis_and_drops_its_stamp_cache():
    import copy
    import pickle

    y, x = np.mgrid[-6:7, -6:7]
    b = np.exp(-(x ** 2 + y ** 2) / 8.0)
    psf = PsfexPsf(np.array([b, 0.01 * x * b, 0.01 * y * b]), degree=1, polzero=(50.0, 60.0), polscal=(100.0, 120.0))
    psf.computeKernelImage((0, 0))  # fills the cache of resampled stamps
    assert "_stamp_basis_cache" in psf.__dict__
    for twin in (pickle.loads(pickle.dumps(psf)), copy.deepcopy(psf)):
        assert "_stamp_basis_cache" not in twin.__dict__
        assert not twin.basis.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            twin.basis[0] = 0.0
        assert twin == psf and hash(twin) == hash(psf)
        np.testing.assert_array_equal(twin.computeKernelImage((10, 20)), psf.computeKernelImage((10, 20)))


def test_models_compare_by_value():
    import pickle

    y, x = np.mgrid[-6:7, -6:7]
    b = np.exp(-(x ** 2 + y ** 2) / 8.0)
    basis = np.array([b, 0.01 * x * b, 0.01 * y * b])
    psf = PsfexPsf(basis, degree=1, polzero=(50.0, 60.0), polscal=(100.0, 120.0), source="a.psf")
    same = PsfexPsf(basis.copy(), degree=1, polzero=(50.0, 60.0), polscal=(100.0, 120.0), source="b.psf")
    assert psf == same and hash(psf) == hash(same) and pickle.loads(pickle.dumps(psf)) == psf
    # the same model read 0-based (POLZERO one less) is the same model
    assert PsfexPsf(basis, degree=1, polzero=(49.0, 59.0), polscal=(100.0, 120.0), origin=0) == psf
    for other in (PsfexPsf(basis * 2, degree=1, polzero=(50.0, 60.0), polscal=(100.0, 120.0)),
                  PsfexPsf(basis, degree=1, polzero=(51.0, 60.0), polscal=(100.0, 120.0)),
                  PsfexPsf(basis, degree=1, polzero=(50.0, 60.0), polscal=(100.0, 120.0), psf_samp=0.5),
                  psf.resized(11, 11)):
        assert other != psf
    assert len({psf, same}) == 1


@needs_data
def test_read_psf_refuses_an_option_psfex_does_not_take():
    with pytest.raises(InvalidInputError, match="read_psf: the 'psfex' PSF reader does not take the option\\(s\\) "
                                                "pixel_scale; it takes ext, origin, stamp_size"):
        read_psf(PSFEX_DIR / "esheldon__psfex" / "test_psfcat.psf", pixel_scale=0.2)
    assert read_psf(PSFEX_DIR / "esheldon__psfex" / "test_psfcat.psf", origin=0).origin == 0
