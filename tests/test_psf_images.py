"""PSF images from FITS: pixel scales, resampling, even/off-centre arrays, and the IRAC ch1 -> ch4 match."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.io.fits import read_exposure
from psfmatch.errors import CorruptFileError, InvalidInputError, PsfMatchWarning, UnsupportedFormatError
from psfmatch.moments import measure_shape
from psfmatch.psf import ImagePsf, read_image_psf, read_psf, register_psf_reader
from psfmatch.psf.image_io import pixel_scale_from_header, pixel_scale_from_wcs, resample_psf
from psfmatch.psf.readers import identify_psf_format, psf_formats

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IRAC = DATA / "psf_images" / "astropy__photutils-datasets"
GALSIM_IMAGES = DATA / "psf_images" / "GalSim-developers__GalSim"
DECAM_HEADER = DATA / "psfex" / "GalSim-developers__GalSim" / "DECam_00154912_12_header.fits"

needs_irac = pytest.mark.skipif(not IRAC.is_dir(), reason=f"shared IRAC PSF images not found at {IRAC}")
needs_galsim_images = pytest.mark.skipif(not GALSIM_IMAGES.is_dir(),
                                         reason=f"shared GalSim PSF images not found at {GALSIM_IMAGES}")


def gaussian(n, sigma, cx=None, cy=None, m=None):
    m = n if m is None else m
    y, x = np.mgrid[0:m, 0:n].astype(float)
    cx = (n - 1) / 2 if cx is None else cx
    cy = (m - 1) / 2 if cy is None else cy
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))


def write(path, data, **cards):
    hdu = fits.PrimaryHDU(np.asarray(data))
    for k, v in cards.items():
        hdu.header[k] = v
    hdu.writeto(path)
    return path


# ---------------------------------------------------------------------------
# pixel scales


SKY = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"}


_C, _S = math.cos(0.5), math.sin(0.5)  # a rotation of the pixel grid


@pytest.mark.parametrize("cards, scale", [
    ({"PIXELSCL": 0.0311}, 0.0311),
    ({"PIXSCALE": 0.2}, 0.2),
    ({"SECPIX": 0.30525}, 0.30525),
    ({"PIXSCAL1": 0.25, "PIXSCAL2": 0.36}, 0.3),
    ({"PIXSCALX": 0.1}, 0.1),
    ({**SKY, "CD1_1": -0.1 / 3600, "CD2_2": 0.1 / 3600, "CD1_2": 0.0, "CD2_1": 0.0}, 0.1),
    ({**SKY, "CDELT1": -0.5 / 3600, "CDELT2": 0.5 / 3600}, 0.5),
    ({**SKY, "CDELT1": -0.5, "CDELT2": 0.5, "CUNIT1": "arcsec"}, 0.5),
    ({"CTYPE1": "GLON-CAR", "CTYPE2": "GLAT-CAR", "CDELT1": -0.5 / 3600, "CDELT2": 0.5 / 3600}, 0.5),
    ({"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "CD1_1": -0.1 / 3600, "CD2_2": 0.1 / 3600}, 0.1),
    # projections with parameters count without their PV cards (wcslib refuses ZPN, the conics, BON without them)
    ({"CTYPE1": "RA---ZPN", "CTYPE2": "DEC--ZPN", "CD1_1": -9.5e-5, "CD2_2": 9.5e-5, "CD1_2": 0.0, "CD2_1": 0.0,
      "PV2_1": 1.0, "PV2_3": 44.0}, 0.342),  # VISTA VIRCAM
    ({"CTYPE1": "RA---ZPN", "CTYPE2": "DEC--ZPN", "CD1_1": -9.5e-5, "CD2_2": 9.5e-5}, 0.342),
    ({"CTYPE1": "RA---COE", "CTYPE2": "DEC--COE", "CDELT1": -0.5 / 3600, "CDELT2": 0.5 / 3600, "PV2_1": 45.0}, 0.5),
    ({"CTYPE1": "RA---COE", "CTYPE2": "DEC--COE", "CDELT1": -0.5 / 3600, "CDELT2": 0.5 / 3600}, 0.5),
    ({"CTYPE1": "DEC--BON", "CTYPE2": "RA---BON", "CDELT1": 0.5 / 3600, "CDELT2": -0.5 / 3600}, 0.5),
    ({"CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN", "CDELT1": 0.6, "CDELT2": 0.6, "CUNIT1": "arcsec"}, 0.6),
    # a CD matrix is in CUNIT too (degrees by default), as CDELT is
    ({**SKY, "CD1_1": -0.03, "CD2_2": 0.03, "CD1_2": 0.0, "CD2_1": 0.0, "CUNIT1": "arcsec", "CUNIT2": "arcsec"},
     0.03),
    ({**SKY, "CD1_1": -0.005, "CD2_2": 0.005, "CUNIT1": "arcmin"}, 0.3),
    ({**SKY, "CD1_1": -0.1, "CD2_2": 0.1, "CUNIT1": "m"}, None),  # not an angle: unknown, not taken as degrees
    # a pixel WCS states no sky scale: IRAF's LINEAR (DAOPHOT seepsf), no CTYPE (linear), a non-sky pair
    ({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CD1_1": 1.0, "CD2_2": 1.0, "WCSDIM": 2}, None),
    ({"CD1_1": 1.0, "CD2_2": 1.0}, None),
    ({"CDELT1": 1.0, "CDELT2": 1.0, "CUNIT1": "deg"}, None),
    ({"CTYPE1": "RA---TAN", "CTYPE2": "LINEAR", "CD1_1": 1.0, "CD2_2": 1.0}, None),
    ({"CTYPE1": "RA---TAN", "CTYPE2": "GLAT-TAN", "CD1_1": 1.0, "CD2_2": 1.0}, None),  # two systems
    ({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--SIN", "CD1_1": 1.0, "CD2_2": 1.0}, None),  # two projections
    ({"CTYPE1": "RA---TAN", "CTYPE2": "RA---TAN", "CD1_1": 1.0, "CD2_2": 1.0}, None),  # two longitudes
    ({"CTYPE1": "RADIUS", "CTYPE2": "DECLINAT", "CD1_1": 1.0, "CD2_2": 1.0}, None),
    ({"CTYPE1": "PIXEL", "CTYPE2": "PIXEL", "CD1_1": 1.0, "CD1_2": 1.0, "CD2_1": 1.0, "CD2_2": 1.0}, None),
    # (from a review of PSF images)
    # a rotated CD matrix: its area is that of the square pixel
    ({**SKY, "CD1_1": -0.2 / 3600 * _C, "CD1_2": 0.2 / 3600 * _S, "CD2_1": 0.2 / 3600 * _S, "CD2_2": 0.2 / 3600 * _C},
     0.2),
    # CDELT with a rotating PC matrix (det 1), and with the old CROTA2 (a rotation, no change of scale)
    ({**SKY, "CDELT1": -0.2 / 3600, "CDELT2": 0.2 / 3600, "PC1_1": _C, "PC1_2": -_S, "PC2_1": _S, "PC2_2": _C}, 0.2),
    ({**SKY, "CDELT1": -0.2 / 3600, "CDELT2": 0.2 / 3600, "CROTA2": 30.0}, 0.2),
    # CD takes precedence over CDELT when both are written (FITS WCS paper I)
    ({**SKY, "CD1_1": -0.2 / 3600, "CD2_2": 0.2 / 3600, "CDELT1": -1.0, "CDELT2": 1.0}, 0.2),
    ({**SKY, "CDELT1": -200.0, "CDELT2": 200.0, "CUNIT1": "mas", "CUNIT2": "mas"}, 0.2),
    ({**SKY, "CDELT1": -0.2 / 3600, "CDELT2": 0.2 / 3600, "CUNIT1": "DEG"}, 0.2),  # unit names are case-blind
    ({"CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN", "CDELT1": 0.2 / 3600, "CDELT2": -0.2 / 3600}, 0.2),  # swapped
    ({**SKY, "CDELT1": -0.2 / 3600}, None),  # one CDELT: no pixel matrix
    ({**SKY, "PIXSCALE": 0.1, "CD1_1": -0.2 / 3600, "CD2_2": 0.2 / 3600}, 0.1),  # the explicit card wins
    ({}, None),
])
def test_pixel_scale_from_header(cards, scale):
    h = fits.Header()
    for k, v in cards.items():
        h[k] = v
    got = pixel_scale_from_header(h)
    assert got == (None if scale is None else pytest.approx(scale, rel=1e-12))


@pytest.mark.parametrize("cards, match", [
    ({"SECPIX": "big"}, "SECPIX = 'big' is not a non-zero number"),
    ({"PIXSCALE": 0.0}, "PIXSCALE = 0.0"),
    ({**SKY, "CD1_1": 1.0, "CD1_2": 1.0, "CD2_1": 1.0, "CD2_2": 1.0}, "CD matrix .* is singular"),
])
def test_pixel_scale_errors(cards, match):
    h = fits.Header()
    for k, v in cards.items():
        h[k] = v
    with pytest.raises(CorruptFileError, match=match):
        pixel_scale_from_header(h, "f.fits")


@pytest.mark.skipif(not DECAM_HEADER.is_file(), reason=f"shared DECam header not found at {DECAM_HEADER}")
def test_pixel_scale_of_real_decam_header():
    h = fits.getheader(DECAM_HEADER)
    # the explicit keywords win: DECam's nominal PIXSCAL1/2 = 0.27; its WCS gives the true 0.263
    assert pixel_scale_from_header(h) == pytest.approx(0.27)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = WCS(h, naxis=2)
    assert pixel_scale_from_wcs(wcs) == pytest.approx(0.263, abs=0.002)
    assert pixel_scale_from_wcs(None) is None


# ---------------------------------------------------------------------------
# resampling


def test_downsampling_conserves_flux_centre_and_adds_the_pixel():
    """A Gaussian of 0.5 arcsec at 0.05 arcsec/px rebinned to 0.2 arcsec/px."""
    fine = gaussian(161, 10.0)
    out = resample_psf(fine, 4.0)
    assert out.shape == (41, 41)
    assert out.sum() == pytest.approx(1.0, abs=1e-12)
    q = measure_shape(out)
    # the samples, taken as an effective PSF, are the optical PSF (variance 0.5^2 - 0.05^2 / 12) through the input
    # pixel; rebinned, that PSF goes through the output pixel instead: (0.2^2 - 0.05^2) / 12 added (taking the input
    # pixels as uniform boxes added the input pixel's 0.05^2 / 12 a second time)
    expected = math.sqrt(0.5 ** 2 + (0.2 ** 2 - 0.05 ** 2) / 12) / 0.2
    assert q.sigma == pytest.approx(expected, rel=1e-4)
    assert abs(q.x) < 1e-9 and abs(q.y) < 1e-9
    # flux conservation, before normalization: the stamp covers all of the input (the cumulative's ends are exact)
    from psfmatch.psf.image_io import _rebin_axis, _rebin_matrix

    raw = _rebin_axis(_rebin_axis(fine, 1, 41, 4.0, 80.0), 0, 41, 4.0, 80.0)
    assert raw.sum() == pytest.approx(fine.sum(), rel=1e-12)
    # the operator is linear: its matrix gives the same, and each input pixel away from the ends has its weights sum to 1
    w = _rebin_matrix(41, 161, 4.0, 80.0)
    np.testing.assert_allclose(w @ fine @ w.T, raw, rtol=0, atol=1e-12 * raw.max())
    np.testing.assert_allclose(w.sum(axis=0)[8:-8], 1.0, rtol=0, atol=1e-6)  # (the spline rings at the ends)


def test_upsampling_is_lanczos_interpolation():
    coarse = gaussian(31, 2.0)
    out = resample_psf(coarse, 0.5)
    assert out.shape == (63, 63)
    q = measure_shape(out)
    assert q.sigma == pytest.approx(4.0, rel=3e-3)
    assert abs(q.x) < 1e-9 and abs(q.y) < 1e-9


def test_even_and_off_centre_images(tmp_path):
    # even: the geometric centre (n - 1) / 2 becomes the centre pixel
    even = gaussian(40, 6.0)
    out = resample_psf(even, 3.0)
    assert out.shape == (15, 15)
    q = measure_shape(out)
    assert abs(q.x) < 1e-9 and abs(q.y) < 1e-9
    # off-centre with recenter=True: the centroid goes on the centre pixel, with or without resampling
    off = gaussian(41, 4.0, cx=20.6, cy=19.3)
    path = write(tmp_path / "off.fits", off, PIXSCALE=0.1)
    for target in (None, 0.25):
        psf = read_image_psf(path, recenter=True, target_pixel_scale=target)
        q = measure_shape(psf.computeKernelImage())
        assert abs(q.x) < 0.01 and abs(q.y) < 0.01
    plain = read_image_psf(path)  # geometric centre: the offset stays
    q = measure_shape(plain.computeKernelImage())
    assert q.x == pytest.approx(0.6, abs=0.01) and q.y == pytest.approx(-0.7, abs=0.01)


def test_read_image_psf_resamples_to_an_exposure_scale(tmp_path):
    path = write(tmp_path / "psf.fits", gaussian(81, 8.0), PIXELSCL=0.05)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.cunit = ["deg", "deg"]
    exposure = Exposure(np.zeros((10, 10), np.float32), wcs=wcs)
    for target in (0.2, wcs, exposure):
        psf = read_image_psf(path, target_pixel_scale=target)
        assert psf.pixel_scale == pytest.approx(0.2)
        q = measure_shape(psf.computeKernelImage())
        assert q.sigma == pytest.approx(math.sqrt(0.4 ** 2 + (0.05 ** 2 + 0.2 ** 2) / 12) / 0.2, rel=3e-3)
    same = read_image_psf(path, target_pixel_scale=0.05)  # equal scales: no resampling
    assert same.array.shape == (81, 81)
    given = read_image_psf(path, pixel_scale=0.1, target_pixel_scale=0.2)  # override: ratio 2
    assert given.array.shape == (41, 41)
    assert read_image_psf(path, target_pixel_scale=0.2, size=21).array.shape == (21, 21)


def test_linear_pixel_wcs_gives_no_scale_and_no_giant_stamp(tmp_path):
    """An IRAF/DAOPHOT seepsf image (CTYPE LINEAR, CD = 1) has no sky scale: it was read as 3600 arcsec/px and
    resampling it to 0.26 arcsec/px died in numpy asking for 893 GiB."""
    path = write(tmp_path / "seepsf.fits", gaussian(25, 2.0), WCSDIM=2, CTYPE1="LINEAR", CTYPE2="LINEAR",
                 CD1_1=1.0, CD2_2=1.0, LTM1_1=1.0, LTM2_2=1.0, WAT0_001="system=physical")
    assert read_psf(path).pixel_scale is None
    with pytest.raises(InvalidInputError, match="states no pixel scale .*celestial WCS.* pass pixel_scale="):
        read_image_psf(path, target_pixel_scale=0.26)
    psf = read_image_psf(path, pixel_scale=0.13, target_pixel_scale=0.26)  # the documented remedy
    assert psf.pixel_scale == 0.26 and psf.array.shape == (13, 13)


def test_resampling_refuses_a_stamp_beyond_max_stamp_size(tmp_path):
    """0.3 -> 0.00005 arcsec/px would be a 150001 px stamp (168 GiB): refused, naming sizes, scales and remedy."""
    from psfmatch.psf.psfex import MAX_STAMP_SIZE

    path = write(tmp_path / "psf03.fits", gaussian(25, 2.0), PIXSCALE=0.3)
    with pytest.raises(InvalidInputError, match=r"resampling the 25x25 PSF image from 0\.3 to 5e-05 arcsec/pixel "
                       rf"needs a 150001x150001 stamp, more than the {MAX_STAMP_SIZE} px limit .*pass "
                       r"pixel_scale= if its header is wrong.* smaller odd size="):
        read_image_psf(path, target_pixel_scale=0.00005)
    # an explicit small stamp is the remedy: the same scales with size= work
    assert read_image_psf(path, target_pixel_scale=0.00005, size=101).array.shape == (101, 101)
    with pytest.raises(InvalidInputError, match=r"a 25x25 PSF image resampled with ratio 0\.0001 .* needs a "
                       r"250001x250001 stamp, more than the 4095 px limit .* smaller odd size="):
        resample_psf(gaussian(25, 2.0), 1e-4)
    with pytest.raises(InvalidInputError, match=r"needs a 4097x3 stamp, more than the 4095 px limit"):
        resample_psf(gaussian(25, 2.0), 1.0, size=(4097, 3))
    with pytest.raises(InvalidInputError, match=r"needs a infxinf stamp"):
        resample_psf(gaussian(25, 2.0), 1e-320)
    assert resample_psf(gaussian(25, 2.0), 1.0, size=(MAX_STAMP_SIZE, 3)).shape == (3, MAX_STAMP_SIZE)


def test_a_scale_ratio_that_under_or_overflows_is_refused(tmp_path):
    """Two valid scales whose ratio underflows to 0 raised a bare ZeroDivisionError; one that overflows to inf
    was refused only by resample_psf, without the scales or a remedy."""
    path = write(tmp_path / "psf.fits", gaussian(25, 2.0))
    for scale, target, ratio in (("1e+200", "1e-200", r"0\.0"), ("1e-200", "1e+200", "inf")):
        with pytest.raises(InvalidInputError, match=rf"psf\.fits: cannot resample the PSF image from "
                           rf"{re.escape(scale)} to {re.escape(target)} arcsec/pixel: their ratio \({ratio}\) is not "
                           r"a positive finite number; check the image's pixel scale \(pass pixel_scale= .*\) and "
                           r"target_pixel_scale"):
            read_image_psf(path, pixel_scale=float(scale), target_pixel_scale=float(target))
    for ratio in (0.0, -2.0, float("inf"), float("nan"), "x", None):
        with pytest.raises(InvalidInputError, match=r"resample_psf ratio must be positive and finite \(output pixel "
                           rf"scale / input pixel scale, .*\); got {re.escape(repr(ratio))}"):
            resample_psf(gaussian(25, 2.0), ratio)


def test_read_image_psf_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image_psf(tmp_path / "missing.fits")
    nan = gaussian(11, 2.0)
    nan[3, 3] = np.nan
    with pytest.raises(CorruptFileError, match="1 NaN or inf pixels"):
        read_image_psf(write(tmp_path / "nan.fits", nan))
    bias = write(tmp_path / "bias.fits", gaussian(11, 2.0) + 1000.0)
    with pytest.raises(CorruptFileError, match="non-positive sum .* background=2000"):
        read_image_psf(bias, background=2000.0)
    noscale = write(tmp_path / "noscale.fits", gaussian(11, 2.0))
    with pytest.raises(InvalidInputError, match="states no pixel scale .* pass pixel_scale="):
        read_image_psf(noscale, target_pixel_scale=0.2)
    with pytest.raises(InvalidInputError, match="pixel_scale must be a positive number"):
        read_image_psf(noscale, pixel_scale=-1)
    with pytest.raises(InvalidInputError, match="has no celestial WCS"):
        read_image_psf(noscale, pixel_scale=0.1, target_pixel_scale=Exposure(np.zeros((4, 4), np.float32)))
    with pytest.raises(UnsupportedFormatError, match="no HDU 3"):
        read_image_psf(noscale, hdu=3)
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="D", array=[1.0])])]).writeto(table)
    with pytest.raises(UnsupportedFormatError, match=r"no image HDU with data .*; it holds no image \(only tables "
                       r"or empty headers\): give the file holding the image"):
        read_image_psf(table)
    with pytest.raises(UnsupportedFormatError, match=r"no 2-d image HDU .*; it holds no image"):
        read_exposure(table)
    # a Piff model (its PSF table has a 'type' column; Piff writes the extension name in lower case)
    piff = tmp_path / "piff.fits"
    psf_table = fits.BinTableHDU.from_columns([fits.Column(name="type", format="10A", array=["Simple"])])
    psf_table.name = "psf"
    fits.HDUList([fits.PrimaryHDU(), psf_table]).writeto(piff)
    with pytest.raises(UnsupportedFormatError, match=r"no image HDU with data .*; it is a Piff PSF model .* read it "
                       r"with read_psf \(on the command line, as the PSF piff:FILE\)"):
        read_image_psf(piff)
    # a cube: no 2-d HDU for hdu= to choose
    cube3 = write(tmp_path / "cube3.fits", np.ones((2, 5, 5)))
    with pytest.raises(UnsupportedFormatError, match=r"no 2-d image HDU .*; its image HDUs are PRIMARY \(3-d\), "
                       "none 2-d: give a file with a 2-d image"):
        read_exposure(cube3)
    cube = write(tmp_path / "cube.fits", np.ones((2, 5, 5)))
    with pytest.raises(CorruptFileError, match=r"shape \(2, 5, 5\); a PSF image is 2-d"):
        read_image_psf(cube)
    for background in ("x", float("nan"), float("inf"), None, True):
        # an invalid argument is the caller's error, not the file's (NaN used to blame the file)
        with pytest.raises(InvalidInputError, match=r"background must be a finite number .*; got"):
            read_image_psf(bias, background=background)
    with pytest.raises(InvalidInputError, match="resample_psf ratio must be positive"):
        resample_psf(np.ones((5, 5)), 0.0)
    with pytest.raises(InvalidInputError,
                       match=r"resample_psf size must be an odd positive integer or a \(width, height\) pair"):
        resample_psf(np.ones((5, 5)), 2.0, size=4)


def test_single_plane_cube_and_soft_bias(tmp_path):
    cube = write(tmp_path / "cube.fits", gaussian(21, 2.0)[None] + 1000.0, PIXSCALE=0.4)
    psf = read_image_psf(cube, background=1000.0)
    np.testing.assert_allclose(psf.array, gaussian(21, 2.0) / gaussian(21, 2.0).sum(), atol=1e-12)
    assert psf.pixel_scale == 0.4


# ---------------------------------------------------------------------------
# the registry


def test_read_psf_registry(tmp_path):
    path = write(tmp_path / "psf.fits", gaussian(11, 2.0), PIXSCALE=0.2)
    assert identify_psf_format(path) == ["image"]
    assert isinstance(read_psf(path), ImagePsf)
    assert read_psf(path, format="image", pixel_scale=0.3).pixel_scale == 0.3
    assert {"psfex", "image", "piff", "psfmatch"} <= set(psf_formats())
    with pytest.raises(UnsupportedFormatError, match="unknown PSF format 'webbpsf'"):
        read_psf(path, format="webbpsf")
    empty = tmp_path / "empty.fits"
    fits.PrimaryHDU().writeto(empty)
    with pytest.raises(UnsupportedFormatError, match="not recognized as any PSF format"):
        read_psf(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_psf(tmp_path / "missing.fits")
    with pytest.raises(InvalidInputError, match="is registered already"):
        register_psf_reader("image", lambda p: None)
    with pytest.raises(InvalidInputError, match="read_psf needs a path"):
        read_psf(np.ones((3, 3)))


def test_read_psf_refuses_psfmatch_files_that_hold_no_psf(tmp_path, capsys):
    import warnings

    from psfmatch.cli import main
    from psfmatch.io.fits import write_exposure
    from psfmatch.psf import GaussianPsf

    rng = np.random.default_rng(0)
    science = rng.normal(100.0, 10.0, (64, 96)).astype(np.float32)  # sky: never a PSF
    bare = tmp_path / "bare.fits"
    write_exposure(Exposure(science), bare)
    assert identify_psf_format(bare) == []  # its science image is not taken for a PSF image
    for fmt in (None, "psfmatch"):
        with pytest.raises(UnsupportedFormatError, match="psfmatch exposure file written without a PSF .* holds "
                                                         "no PSF to read; give the PSF as its own file"):
            read_psf(bare, format=fmt)
    assert main(["inspect-psf", str(bare)]) == 1
    assert "holds no PSF" in capsys.readouterr().err
    # with its PSF, the same file reads as that PSF
    with_psf = tmp_path / "with_psf.fits"
    write_exposure(Exposure(science, psf=GaussianPsf(21, 21, 1.7)), with_psf)
    assert identify_psf_format(with_psf) == ["psfmatch"]
    assert read_psf(with_psf) == GaussianPsf(21, 21, 1.7)

    # a matching-kernel file (and a grid of kernel images) is not a PSF either
    exposure = Exposure(np.zeros((64, 64), np.float32), psf=GaussianPsf(21, 21, 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = ModelPsfMatchTask().run(exposure, GaussianPsf(21, 21, 2.6)).psfMatchingKernel
    from psfmatch.io import write_kernel, write_kernel_image_grid

    write_kernel(kernel, tmp_path / "kernel.fits")
    write_kernel_image_grid(kernel, tmp_path / "grid.fits", nx=1, ny=1)  # one 2-d plane: looked like an image
    for name, fmt, how in (("kernel.fits", "psfmatch-kernel", "read it with psfmatch.io.read_kernel"),
                           ("grid.fits", "psfmatch-kernel-grid", "its planes are images of one, for inspection")):
        assert identify_psf_format(tmp_path / name) == []
        for given in (None, "psfmatch"):
            with pytest.raises(UnsupportedFormatError, match=f"a psfmatch matching-kernel file \\(PMFORMAT = "
                                                             f"'{fmt}'\\), not a PSF: .*; {how}, and give the PSF"):
                read_psf(tmp_path / name, format=given)


# ---------------------------------------------------------------------------
# real images


@needs_irac
def test_irac_images_read_with_their_scale():
    for ch, scale in ((1, 0.30525), (4, 0.305)):
        psf = read_psf(IRAC / f"irac_ch{ch}_flight.fits")
        assert isinstance(psf, ImagePsf)
        assert psf.pixel_scale == pytest.approx(scale)
        assert psf.array.shape == (81, 81)
        assert psf.array.sum() == pytest.approx(1.0)
    # ch4's flux centroid is about (0.6, 0.85) px off the central pixel; the reader does not move it
    a = read_psf(IRAC / "irac_ch4_flight.fits").array
    y, x = np.mgrid[0:81, 0:81] - 40
    assert (a * x).sum() == pytest.approx(0.6, abs=0.02) and (a * y).sum() == pytest.approx(0.85, abs=0.02)


def _relative_l2(science, kernel, reference):
    matched = fftconvolve(science, kernel, mode="same")
    return float(np.linalg.norm(matched - reference) / np.linalg.norm(reference))


@needs_irac
def test_irac_ch1_to_ch4_delta_function_match():
    """ch1 -> ch4 on one pixel grid with the delta-function basis and every DF default (its regularization).

    Good Fourier kernels reach a relative L2 error of 0.02-0.03; the default Alard-Lupton basis stays near 0.10.
    """
    ch1 = read_psf(IRAC / "irac_ch1_flight.fits")
    ch4 = read_psf(IRAC / "irac_ch4_flight.fits")
    config = ModelPsfMatchConfig()
    config.kernel.name = "DF"
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=ch1)
    import warnings

    with warnings.catch_warnings():
        # QA warnings about this (legitimately oscillating) kernel and ch4's truncated wings are expected
        warnings.simplefilter("ignore", PsfMatchWarning)
        result = ModelPsfMatchTask(config).run(exposure, ch4)
    kernel = result.psfMatchingKernel.computeImage((128, 128))
    assert kernel.sum() == pytest.approx(1.0, abs=1e-7)
    err = _relative_l2(ch1.array, kernel, ch4.array)
    assert err <= 0.05
    # the centroid offset of ch4 is reproduced by the kernel
    matched = fftconvolve(ch1.array, kernel, mode="same")
    y, x = np.mgrid[0:81, 0:81] - 40
    for grid in (x, y):
        assert (matched * grid).sum() == pytest.approx((ch4.array * grid).sum(), abs=0.05)


@needs_galsim_images
def test_space_to_ground_pair_resampled():
    """The HST COSMOS PSF (0.03 arcsec/px) rebinned to SDSS's 0.396 arcsec/px is narrower than SDSS's PSF."""
    hst = read_image_psf(GALSIM_IMAGES / "147246.0_150.416558_1.998697.psf.fits", pixel_scale=0.03,
                         target_pixel_scale=0.396)
    sdss = read_image_psf(GALSIM_IMAGES / "147246.0_150.416558_1.998697.sdsspsf.fits", pixel_scale=0.396,
                          background=1000.0)
    assert hst.array.shape[0] % 2 == 1 and hst.array.sum() == pytest.approx(1.0)
    assert hst.pixel_scale == pytest.approx(0.396)
    qs = measure_shape(sdss.array)
    # at SDSS's scale the HST PSF is undersampled (sigma about 0.44 px): adaptive moments have no fixed point
    # there and say so, instead of collapsing onto their floor (sigma 0.01 px) as they once did
    from psfmatch.errors import PsfComputeShapeError
    with pytest.raises(PsfComputeShapeError, match="too undersampled"):
        measure_shape(hst.array)
    a = hst.array
    y, x = np.indices(a.shape) - np.array(a.shape)[:, None, None] // 2
    assert abs((a * x).sum()) < 0.1 and abs((a * y).sum()) < 0.1  # centred
    sigma_h = math.sqrt((a * (x * x + y * y)).sum() / a.sum() / 2)  # unweighted: a compact, noiseless stamp
    assert sigma_h < 0.6 * qs.sigma


@needs_galsim_images
def test_even_and_non_square_real_images():
    even = read_image_psf(GALSIM_IMAGES / "AEGIS_F606w_PSF_images_01.fits", hdu=1)
    assert even.array.shape == (21, 21)
    for hdu in range(4):
        psf = read_image_psf(GALSIM_IMAGES / "real_galaxy_PSF_images.fits", hdu=hdu, recenter=True)
        h, w = psf.array.shape
        assert h % 2 == 1 and w % 2 == 1
        q = measure_shape(psf.array)
        assert abs(q.x) < 0.02 and abs(q.y) < 0.02


def test_a_named_format_does_not_read_psfmatch_products_as_psfs(tmp_path, capsys, monkeypatch):
    import warnings

    from psfmatch.cli import main
    from psfmatch.io import write_kernel, write_kernel_image_grid
    from psfmatch.io.fits import write_exposure
    from psfmatch.psf import GaussianPsf
    from psfmatch.psf import readers

    exposure = Exposure(np.zeros((64, 64), np.float32), psf=GaussianPsf(21, 21, 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = ModelPsfMatchTask().run(exposure, GaussianPsf(21, 21, 2.6)).psfMatchingKernel
    write_kernel(kernel, tmp_path / "kernel.fits")
    write_kernel_image_grid(kernel, tmp_path / "grid.fits", nx=1, ny=1)  # one 2-d plane, odd-sized
    stamp = np.zeros((65, 65), np.float32)
    stamp[32, 32] = 1.0  # an odd image with one bright pixel: it would make a fine-looking PSF
    write_exposure(Exposure(stamp), tmp_path / "bare.fits")
    write_exposure(Exposure(stamp, psf=GaussianPsf(21, 21, 1.7)), tmp_path / "with_psf.fits")
    for fmt in ("image", "psfex", "piff"):
        for name, kind in (("kernel.fits", "psfmatch-kernel"), ("grid.fits", "psfmatch-kernel-grid")):
            with pytest.raises(UnsupportedFormatError, match=f"{name}: a psfmatch matching-kernel file "
                                                             f"\\(PMFORMAT = '{kind}'\\), not a PSF"):
                read_psf(tmp_path / name, format=fmt)
        with pytest.raises(UnsupportedFormatError, match=r"bare\.fits: a psfmatch exposure file written without a "
                                                         "PSF .* holds no PSF to read"):
            read_psf(tmp_path / "bare.fits", format=fmt)
        with pytest.raises(UnsupportedFormatError, match=r"with_psf\.fits: a psfmatch exposure file; read its PSF as "
                                                         f"format 'psfmatch' .*, not as '{fmt}', which would take the "
                                                         "exposure's image for a PSF"):
            read_psf(tmp_path / "with_psf.fits", format=fmt)
    # the exposure's own PSF still reads, and so does a PSF image that psfmatch did not write
    assert read_psf(tmp_path / "with_psf.fits") == read_psf(tmp_path / "with_psf.fits", format="psfmatch") \
        == GaussianPsf(21, 21, 1.7)
    write(tmp_path / "psf.fits", gaussian(21, 1.7))
    assert read_psf(tmp_path / "psf.fits", format="image").array.shape == (21, 21)
    # a registered reader of a file that is not FITS is still handed its file
    (tmp_path / "model.txt").write_text("sigma 1.7\n")
    monkeypatch.setitem(readers._REGISTRY, "text", (lambda p: GaussianPsf(21, 21, 1.7), None))
    assert read_psf(tmp_path / "model.txt", format="text") == GaussianPsf(21, 21, 1.7)
    # on the command line: image:FILE, as --psf and for inspect-psf
    rc = main(["run", str(tmp_path / "bare.fits"), "--psf", f"image:{tmp_path / 'grid.fits'}", "-r",
               "gaussian:sigma=3", "-o", str(tmp_path / "out.fits")])
    assert rc == 1 and "a psfmatch matching-kernel file (PMFORMAT = 'psfmatch-kernel-grid'), not a PSF" \
        in capsys.readouterr().err
    assert main(["inspect-psf", f"image:{tmp_path / 'bare.fits'}"]) == 1
    assert "written without a PSF" in capsys.readouterr().err and not (tmp_path / "out.fits").exists()


def test_image_psf_array_stays_read_only_through_pickle_and_copy():
    import copy
    import pickle

    psf = ImagePsf(gaussian(13, 2.0), pixel_scale=0.2)
    for twin in (pickle.loads(pickle.dumps(psf)), copy.deepcopy(psf)):
        assert not twin.array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            twin.array[0, 0] = 1.0
        assert twin == psf and twin.pixel_scale == 0.2
        np.testing.assert_array_equal(twin.computeKernelImage(), psf.computeKernelImage())


def test_read_psf_refuses_an_option_the_format_does_not_take(tmp_path):
    write(tmp_path / "psf.fits", gaussian(21, 1.7))
    with pytest.raises(InvalidInputError, match="read_psf: the 'image' PSF reader does not take the option\\(s\\) "
                                                "origin; it takes hdu, pixel_scale, target_pixel_scale, recenter"):
        read_psf(tmp_path / "psf.fits", origin=0)
    assert read_psf(tmp_path / "psf.fits", pixel_scale=0.2).pixel_scale == 0.2  # an option it takes
    # a registered reader: checked against its own signature; one taking **kwargs accepts anything
    register_psf_reader("one_option", lambda path, *, scale=1.0: ImagePsf(gaussian(9, scale)), overwrite=True)
    register_psf_reader("any_option", lambda path, **kw: ImagePsf(gaussian(9, 1.0)), overwrite=True)
    register_psf_reader("no_option", lambda path: ImagePsf(gaussian(9, 1.0)), overwrite=True)
    try:
        with pytest.raises(InvalidInputError, match="'one_option' PSF reader does not take the option\\(s\\) "
                                                    "sigma, size; it takes scale"):
            read_psf(tmp_path / "psf.fits", format="one_option", size=3, sigma=2)
        with pytest.raises(InvalidInputError, match="'no_option' PSF reader does not take the option\\(s\\) x; "
                                                    "it takes no options"):
            read_psf(tmp_path / "psf.fits", format="no_option", x=1)
        assert read_psf(tmp_path / "psf.fits", format="one_option", scale=1.5).array.shape == (9, 9)
        assert read_psf(tmp_path / "psf.fits", format="any_option", whatever=1).array.shape == (9, 9)
    finally:
        from psfmatch.psf import readers

        for name in ("one_option", "any_option", "no_option"):
            readers._REGISTRY.pop(name, None)


def test_reader_remedies_work_on_the_command_line_too(tmp_path):
    """psfmatch:FILE on a PSFEx file said "the psfmatch file holds no PSF HDU"; an unrecognized file only said
    "pass format=", which a command-line user cannot."""
    psfex = DATA / "psfex" / "GalSim-developers__GalSim" / "DECam_00154912_12_psfcat.psf"
    if not psfex.is_file():
        pytest.skip(f"shared PSFEx model not found at {psfex}")
    with pytest.raises(UnsupportedFormatError, match=r"not a psfmatch exposure file \(no PMFORMAT = "
                                                     r"'psfmatch-exposure' card\): read it as its own format"):
        read_psf(psfex, format="psfmatch")
    header = DECAM_HEADER
    with pytest.raises(UnsupportedFormatError, match=r"not recognized as any PSF format .*; pass format= \(on the "
                                                     r"command line, prefix the file with the format: psfex:FILE"):
        read_psf(header)


def test_an_exposure_given_as_a_psf_image_is_refused(tmp_path):
    """A 2048x4096 science image read as a PSF image became a 2049x4097 'PSF' of sigma 1030 px (inspect-psf exit
    0; run asked for 304 GiB and blamed maxMemoryGiB)."""
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.random.default_rng(0).normal(100.0, 5.0, size=(4096, 64)).astype(np.float32)).writeto(path)
    for read in (read_image_psf, lambda p: read_psf(p), lambda p: read_psf(p, format="image")):
        with pytest.raises(UnsupportedFormatError, match=r"image.fits: a 64x4096 image is larger than the 4095 px "
                           r"limit of a PSF stamp: is it an exposure rather than an image of its PSF\?"):
            read(path)
