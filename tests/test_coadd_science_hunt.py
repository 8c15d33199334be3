"""A survey astronomer's review of PSF matching onto one zero point followed by the coadd (psfmatch.batch).

The whole chain is run on exposures of stars of known magnitude with different PSFs, zero points, sky variances
and gains (``match_one`` in a loop: the scheduler plays no part), and the coadd is checked against the documented
estimator (inverse-variance weights per pixel, variance ``1 / sum(w)``), against noise realizations, and at the
matched exposures' NaN borders.  Four defects the review found are fixed and pinned here: SIP
distortions that differ, inputs that contribute no pixel (and NCOMBINE), PSFs that agree only at the box's centre.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest

pytest.importorskip("dask.array", reason="the coadd needs dask.array")

from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from psfmatch import Exposure, ModelPsfMatchConfig  # noqa: E402
from psfmatch.batch import MATCHED, GridMismatchError, coadd, match_one  # noqa: E402
from psfmatch.errors import PsfMatchError, PsfMatchWarning  # noqa: E402
from psfmatch.geom import Box2I  # noqa: E402
from psfmatch.image import Mask  # noqa: E402
from psfmatch.io.fits import read_exposure, write_exposure  # noqa: E402
from psfmatch.psf import GaussianPsf, VariableGaussianPsf  # noqa: E402

REFERENCE = GaussianPsf(31, 31, 2.6)
TARGET_ZP = 27.0
#: (sigma of the science PSF, MAGZERO, sky variance in counts^2, gain): three exposures of one field
EXPOSURES = ((1.5, 25.0, 50.0, 2.0), (1.9, 26.0, 200.0, 1.0), (2.2, 26.5, 80.0, 4.0))
#: (x, y, magnitude)
STARS = ((30.3, 31.6, 18.0), (64.7, 40.2, 19.0), (45.1, 70.4, 17.5))


def _config(kernel_size=None):
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    if kernel_size is not None:
        config.kernel.active.kernelSize = kernel_size
    return config


def _stars(n, sigma, zp, stars=STARS):
    """Counts of ``stars`` (Gaussian PSF of ``sigma``) on an exposure whose zero point is ``zp``."""
    y, x = np.mgrid[:n, :n]
    img = np.zeros((n, n))
    for sx, sy, m in stars:
        img += 10 ** (-0.4 * (m - zp)) * np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * sigma ** 2)) / (
            2 * np.pi * sigma ** 2)
    return img


def _write(path, image, variance, mask=None, psf=REFERENCE, wcs=None, zp=None, dtype=np.float32):
    metadata = {} if zp is None else {"fitsHeader": fits.Header([("MAGZERO", zp)])}
    exp = Exposure(np.asarray(image, dtype), mask, np.asarray(variance, dtype), psf=psf, wcs=wcs, metadata=metadata)
    write_exposure(exp, path, overwrite=True)
    return str(path)


def _match(path, out, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = match_one(path, REFERENCE, str(out), kwargs.pop("config", None) or _config(), **kwargs)
    assert report.status == MATCHED, report.error_message
    return report


def _linear_wcs(crpix=(10.0, 10.0), cdelt=(-5e-5, 5e-5)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, 20.0]
    w.wcs.crpix = list(crpix)
    w.wcs.cdelt = list(cdelt)
    return w


def _sip_wcs(a_0_2):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 10.0, 20.0, 10.0, 10.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -5e-5, 0.0, 0.0, 5e-5
    h["A_ORDER"] = h["B_ORDER"] = 2
    for k in ("A_2_0", "A_1_1", "B_2_0", "B_1_1", "B_0_2"):
        h[k] = 0.0
    h["A_0_2"] = a_0_2
    return WCS(h)


# ---------------------------------------------------------------------------
# photometry and variance through match (onto one zero point) + coadd


def test_star_magnitudes_survive_matching_onto_one_zero_point_and_the_coadd(tmp_path):
    """Three exposures of three stars: PSF sigmas 1.5, 1.9 and 2.2 px, zero points 25, 26 and 26.5, sky variances
    50, 200 and 80 and gains 2, 1 and 4 (variance = sky + counts / gain: the weights vary across each star, and
    differently in each exposure). Matched to a sigma-2.6 Gaussian onto zero point 27 and coadded, each star's
    aperture flux is its catalogue flux on zero point 27 (times the reference's aperture fraction), the coadd is
    the documented per-pixel inverse-variance mean of the matched exposures, and its header states MAGZERO 27."""
    n = 96
    outs = []
    for i, (sigma, zp, sky, gain) in enumerate(EXPOSURES):
        img = _stars(n, sigma, zp)
        path = _write(tmp_path / f"in{i}.fits", img, sky + img / gain, psf=GaussianPsf(21, 21, sigma), zp=zp)
        report = _match(path, tmp_path / f"m{i}.fits", zeroPoint=TARGET_ZP)
        assert report.kernel_sum == pytest.approx(10 ** (0.4 * (TARGET_ZP - zp)), rel=1e-12)
        outs.append(report.output)
    co = read_exposure(coadd(outs, tmp_path / "co.fits").output)
    y, x = np.mgrid[:n, :n]
    radius = 12.0
    fraction = 1 - math.exp(-radius ** 2 / (2 * REFERENCE.getSigma() ** 2))
    for sx, sy, m in STARS:
        aperture = (x - sx) ** 2 + (y - sy) ** 2 <= radius ** 2
        assert np.isfinite(co.image[aperture]).all()
        flux = float(np.sum(co.image[aperture], dtype=np.float64))
        assert TARGET_ZP - 2.5 * math.log10(flux / fraction) == pytest.approx(m, abs=2e-4)
    # the documented estimator, from the matched files themselves
    matched = [read_exposure(p) for p in outs]
    w = [np.where(np.isfinite(e.image) & (e.variance > 0), 1.0 / e.variance.astype(np.float64), 0.0) for e in matched]
    num = sum(wi * np.nan_to_num(e.image.astype(np.float64)) for wi, e in zip(w, matched))
    den = sum(w)
    ok = den > 0
    np.testing.assert_allclose(co.image[ok], (num / np.where(ok, den, 1))[ok], rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(co.variance[ok], 1.0 / den[ok], rtol=2e-6)
    assert np.isnan(co.image[~ok]).all() and np.isinf(co.variance[~ok]).all()
    header = fits.getheader(tmp_path / "co.fits", 0)
    assert header["MAGZERO"] == TARGET_ZP and header["NCOMBINE"] == 3
    assert isinstance(co.getPsf(), GaussianPsf) and co.getPsf().getSigma() == pytest.approx(REFERENCE.getSigma())


def test_the_coadd_variance_plane_is_the_scatter_of_the_sky_after_matching_onto_one_zero_point(tmp_path):
    """Sky noise of variance 50, 200 and 80 counts^2 on zero points 25, 26 and 26.5: matching scales each by
    kernelSum**2 (6.3**2, 2.5**2, 1.6**2) and smooths it; the coadd's variance plane must still be the pixel
    variance of its sky (read from the scatter over a 130 x 130 px region, four noise realizations)."""
    n = 192
    region = (slice(45, 175), slice(45, 175))
    ratios, matched_ratios = [], []
    for rep in range(4):
        rng = np.random.default_rng(rep)
        outs = []
        for i, (sigma, zp, sky, _gain) in enumerate(EXPOSURES):
            # one star in a corner gives the fit its PSFs; the region measured is sky only
            img = _stars(n, sigma, zp, stars=((20.3, 21.6, 17.0),))
            var = sky + img
            noisy = img + rng.normal(0.0, np.sqrt(var))
            path = _write(tmp_path / f"in{i}.fits", noisy, var, psf=GaussianPsf(21, 21, sigma), zp=zp)
            outs.append(_match(path, tmp_path / f"m{i}.fits", zeroPoint=TARGET_ZP, force=True).output)
            m = read_exposure(outs[-1])
            matched_ratios.append(np.var(m.image[region]) / np.mean(m.variance[region]))
        coadd(outs, tmp_path / "co.fits", overwrite=True)
        co = read_exposure(tmp_path / "co.fits")
        ratios.append(np.var(co.image[region]) / np.mean(co.variance[region]))
    assert np.mean(matched_ratios) == pytest.approx(1.0, abs=0.05)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.06)  # (correlated noise: ~2% scatter on the mean)


def test_the_coadd_at_the_matched_borders_takes_the_inputs_that_have_data(tmp_path):
    """Two exposures matched with kernels of 11 and 21 px: NaN borders of 5 and 10 px. In the 5 px wide frame
    where only the first has data, the coadd is that exposure (image and variance); where neither has, it is
    NaN, infinite variance and exactly NO_DATA; nowhere is a NaN input averaged in as 0."""
    n = 64
    outs = []
    for i, (k, sigma) in enumerate(((11, 1.5), (21, 1.9))):
        img = _stars(n, sigma, 25.0, stars=((31.3, 32.6, 16.0),))
        path = _write(tmp_path / f"in{i}.fits", img, 50.0 + img, psf=GaussianPsf(21, 21, sigma))
        outs.append(_match(path, tmp_path / f"m{i}.fits", config=_config(k)).output)
    a, b = (read_exposure(p) for p in outs)
    has_a, has_b = np.isfinite(a.image), np.isfinite(b.image)
    assert has_a.sum() == (n - 10) ** 2 and has_b.sum() == (n - 20) ** 2  # the borders are as expected
    co = read_exposure(coadd(outs, tmp_path / "co.fits", tile_size=16).output)
    only_a = has_a & ~has_b
    np.testing.assert_allclose(co.image[only_a], a.image[only_a], rtol=1e-6)
    np.testing.assert_allclose(co.variance[only_a], a.variance[only_a], rtol=1e-6)
    nodata = co.getMask().getPlaneBitMask("NO_DATA")
    assert (co.mask[~has_a] == nodata).all() and np.isnan(co.image[~has_a]).all()
    assert np.isinf(co.variance[~has_a]).all()
    assert not (co.mask[has_a] & nodata).any() and np.isfinite(co.image[has_a]).all()
    both = has_a & has_b
    wa, wb = 1.0 / a.variance[both].astype(np.float64), 1.0 / b.variance[both].astype(np.float64)
    np.testing.assert_allclose(co.variance[both], 1.0 / (wa + wb), rtol=1e-6)


# ---------------------------------------------------------------------------
# single inputs and excluded pixels


def test_a_coadd_of_one_input_is_that_input_where_it_has_data(tmp_path):
    shape = (24, 40)
    rng = np.random.default_rng(5)
    img = rng.normal(100.0, 3.0, shape)
    var = rng.uniform(5.0, 15.0, shape)
    mask = np.zeros(shape, np.int32)
    sat = Mask(shape=(1, 1)).getPlaneBitMask("SAT")
    mask[3, 4] = sat
    var[6, 7] = -1.0      # a negative variance: excluded
    img[8, 9] = -np.inf   # a non-finite image value: excluded
    path = _write(tmp_path / "a.fits", img, var, mask)
    report = coadd([path], tmp_path / "co.fits", tile_size=16)
    co, a = read_exposure(tmp_path / "co.fits"), read_exposure(path)
    good = np.ones(shape, bool)
    good[6, 7] = good[8, 9] = False
    np.testing.assert_allclose(co.image[good], a.image[good], rtol=1e-7)
    np.testing.assert_allclose(co.variance[good], a.variance[good], rtol=1e-7)
    assert co.mask[3, 4] == sat  # a plane of the only contributing input survives the AND
    nodata = co.getMask().getPlaneBitMask("NO_DATA")
    for y, x in ((6, 7), (8, 9)):
        assert co.mask[y, x] == nodata and np.isnan(co.image[y, x]) and np.isinf(co.variance[y, x])
    assert report.coverage == pytest.approx(1 - 2 / (24 * 40))


# ---------------------------------------------------------------------------
# grids that differ slightly


@pytest.mark.parametrize("wcs", [_linear_wcs(crpix=(10.3, 10.0)), _linear_wcs(crpix=(10.0, 10.0 + 1e-4)),
                                 _linear_wcs(cdelt=(5e-5, 5e-5))],
                         ids=["crpix-0.3px", "crpix-1e-4px", "flipped-x"])
def test_a_fraction_of_a_pixel_or_a_flipped_axis_is_another_grid(tmp_path, wcs):
    one = np.ones((20, 30))
    a = _write(tmp_path / "a.fits", one, one, wcs=_linear_wcs())
    b = _write(tmp_path / "b.fits", one, one, wcs=wcs)
    with pytest.raises(GridMismatchError, match=r"b\.fits has a WCS different from .*a\.fits's: the inputs must be "
                                                r"on one pixel grid \(same WCS; warp them first\)"):
        coadd([a, b], tmp_path / "co.fits")
    assert not (tmp_path / "co.fits").exists()


def test_a_sip_distortion_is_kept_in_the_coadd(tmp_path):
    one = np.ones((20, 30))
    paths = [_write(tmp_path / f"{k}.fits", one, one, wcs=_sip_wcs(1e-3)) for k in "ab"]
    coadd(paths, tmp_path / "co.fits")
    wcs = read_exposure(tmp_path / "co.fits").getWcs()
    assert wcs.sip is not None and wcs.sip.a[0, 2] == pytest.approx(1e-3)


def test_inputs_whose_sip_distortion_differs_are_not_one_grid(tmp_path):
    """Same linear WCS, SIP A_0_2 = 0 vs 3e-2: at y = 19 the second input's pixels are 3 px off the first's."""
    one = np.ones((20, 30))
    a = _write(tmp_path / "a.fits", one, one, wcs=_sip_wcs(0.0))
    b = _write(tmp_path / "b.fits", one, one, wcs=_sip_wcs(3e-2))
    wa, wb = read_exposure(a).getWcs(), read_exposure(b).getWcs()
    x, _ = wa.world_to_pixel(wb.pixel_to_world(29, 19))
    assert abs(float(x) - 29) == pytest.approx(3.0, abs=0.01)  # (really another grid)
    with pytest.raises(GridMismatchError, match=r"b\.fits has a WCS different"):
        coadd([a, b], tmp_path / "co.fits")


# ---------------------------------------------------------------------------
# inputs that contribute nothing


def _no_variance_inputs(tmp_path):
    one = np.ones((20, 30))
    a = _write(tmp_path / "a.fits", one, one)
    # an exposure written without a variance plane (Exposure's default: zeros), as a simulation might be
    z = str(tmp_path / "z.fits")
    write_exposure(Exposure(np.full((20, 30), 5.0, np.float32), psf=REFERENCE), z)
    return a, z


def test_an_input_without_variance_contributes_no_pixel(tmp_path):
    """(The documented rule, variance <= 0 excluded, applied: the coadd is the other input.)"""
    a, z = _no_variance_inputs(tmp_path)
    with pytest.warns(PsfMatchWarning, match="contributed no pixel"):
        report = coadd([a, z], tmp_path / "co.fits")
    co = read_exposure(tmp_path / "co.fits")
    assert report.coverage == 1.0 and (co.image == 1.0).all() and (co.variance == 1.0).all()


def test_an_input_that_contributes_no_pixel_is_named_in_a_warning(tmp_path, caplog):
    """An exposure written without a variance plane (zeros) contributes nothing: it is named in a warning and in
    the report, and NCOMBINE counts the exposures combined; a coadd of such inputs only says it holds no data."""
    a, z = _no_variance_inputs(tmp_path)
    caplog.set_level(logging.WARNING, logger="psfmatch")
    with pytest.warns(PsfMatchWarning, match=r"^coadd: 1 of 2 input\(s\) contributed no pixel \(.*z\.fits\): every "
                                             r"pixel has a variance <= 0 or not finite .*; NCOMBINE counts the "
                                             r"others\. Give them a variance plane, or leave them out$"):
        report = coadd([a, z], tmp_path / "co.fits")
    assert report.unused_inputs == [z] and report.coverage == 1.0
    assert any(r.levelno == logging.WARNING and "z.fits" in r.getMessage() for r in caplog.records)
    assert fits.getheader(tmp_path / "co.fits", 0)["NCOMBINE"] == 1
    assert read_exposure(tmp_path / "co.fits").image[3, 4] == 1.0  # a's pixels alone
    with fits.open(tmp_path / "co.fits") as hdul:  # the header rewritten in place: the file is whole
        hdul.verify("exception")
    z2 = str(tmp_path / "z2.fits")
    write_exposure(Exposure(np.full((20, 30), 7.0, np.float32), psf=REFERENCE), z2)
    with pytest.warns(PsfMatchWarning, match=r"2 of 2 input\(s\) contributed no pixel .*; the coadd holds no data "
                                             r"\(coverage 0\)\. Give them"):
        report = coadd([z, z2], tmp_path / "empty.fits")
    assert report.coverage == 0.0 and fits.getheader(tmp_path / "empty.fits", 0)["NCOMBINE"] == 0
    # every input contributing: no warning, NCOMBINE the inputs given
    b = _write(tmp_path / "b.fits", np.ones((20, 30)), np.ones((20, 30)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PsfMatchWarning)
        report = coadd([a, b], tmp_path / "full.fits")
    assert report.unused_inputs == [] and fits.getheader(tmp_path / "full.fits", 0)["NCOMBINE"] == 2


# ---------------------------------------------------------------------------
# the PSF check


def test_psfs_that_agree_only_at_the_centre_are_not_one_reference(tmp_path):
    one = np.ones((64, 64))
    box = Box2I((0, 0), (64, 64))
    flat = VariableGaussianPsf(21, 21, box, sigma=[2.6, 0.0, 0.0])
    tilted = VariableGaussianPsf(21, 21, box, sigma=[2.6, 0.5, 0.0])  # sigma 2.1 .. 3.1 across x
    corner = (0, 0)
    assert abs(flat.computeKernelImage(corner).max() - tilted.computeKernelImage(corner).max()) > 0.2 * \
        flat.computeKernelImage(corner).max()
    a = _write(tmp_path / "a.fits", one, one, psf=flat)
    b = _write(tmp_path / "b.fits", one, one, psf=tilted)
    with pytest.raises(PsfMatchError, match=r"do not carry the same PSF"):
        coadd([a, b], tmp_path / "co.fits")
