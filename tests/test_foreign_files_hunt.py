"""Foreign FITS layouts in and out: LSST calexp-like, DECam-CP-like, HST/JWST-like, compressed, scaled,
big-endian, SIP/TPV WCS, odd headers; the matched exposure read back with plain astropy.

Every file is built with astropy.io.fits in tmp_path.  Tests whose docstring says "Was a defect" pin the fix of
a defect this review found.
"""

import logging
import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, Sip

from psfmatch import ModelPsfMatchTask
from psfmatch.errors import (CorruptFileError, InvalidInputError, OutputExistsError, PsfMatchError,
                             PsfMatchWarning, UnsupportedFormatError)
from psfmatch.io import read_exposure, read_exposure_info, write_exposure
from psfmatch.psf import GaussianPsf

SCI_SIGMA, REF_SIGMA = 2.0, 3.0
XS = np.array([0, 10, 64, 127, 100])
YS = np.array([0, 120, 64, 5, 77])


# ---------------------------------------------------------------------------
# helpers


def sky_wcs(shape, crpix=(60.5, 70.5), sip=False):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = list(crpix)
    w.wcs.cd = np.array([[-5.5e-5, 1e-6], [2e-6, 5.5e-5]])
    if sip:
        a = np.zeros((3, 3))
        b = np.zeros((3, 3))
        a[2, 0], a[1, 1], b[0, 2], b[1, 1] = 2e-5, -1e-5, 1.5e-5, 3e-6
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.pixel_shape = (shape[1], shape[0])
    return w


def stars(shape, rng, sigma=SCI_SIGMA, n=10, sky=100.0, noise=2.0):
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    img = np.full(shape, sky)
    for _ in range(n):
        cx, cy = rng.uniform(15, nx - 15), rng.uniform(15, ny - 15)
        img += rng.uniform(2e3, 2e4) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2)) / (
            2 * np.pi * sigma ** 2)
    return img + rng.normal(0, noise, shape)


def sky_of(wcs, xs=XS, ys=YS):
    return np.array(wcs.pixel_to_world_values(xs, ys))


def match(exposure, kernelSum=1.0):
    return ModelPsfMatchTask().run(exposure, GaussianPsf(25, 25, REF_SIGMA), kernelSum=kernelSum)


LSST_PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "DETECTED_NEGATIVE": 6,
               "SUSPECT": 7, "NO_DATA": 8, "STREAK": 9, "CROSSTALK": 10}


def write_calexp(path, rng, shape=(128, 144), xy0=(1000, 2000), compressed=False):
    """An afw-like calexp: empty primary with archive pointers, IMAGE/MASK/VARIANCE with the array WCS,
    LTV1/LTV2 and the parent alternate WCS A, MP_* cards (HIERARCH for long names)."""
    img = stars(shape, rng).astype(np.float32)
    var = (4.0 + rng.uniform(0, 1, shape)).astype(np.float32)
    msk = np.zeros(shape, np.int32)
    msk[10, 20] = 1
    msk[30, 40] = 4 | 2
    msk[50, 60] = 1 << 9
    w = sky_wcs(shape)

    def hdr(name):
        h = w.to_header()
        h["EXTTYPE"] = name
        h["INHERIT"] = True
        h["LTV1"], h["LTV2"] = -xy0[0], -xy0[1]
        h["CRPIX1A"], h["CRPIX2A"] = 1.0, 1.0
        h["CRVAL1A"], h["CRVAL2A"] = float(xy0[0]), float(xy0[1])
        h["CTYPE1A"], h["CTYPE2A"] = "LINEAR", "LINEAR"
        h["CUNIT1A"], h["CUNIT2A"] = "PIXEL", "PIXEL"
        return h

    pri = fits.PrimaryHDU()
    pri.header["AR_HDU"] = 5
    pri.header["PSF_ID"] = 3
    pri.header["FLUXMAG0"] = 1e11
    pri.header["FILTER"] = "r"
    mh = hdr("MASK")
    for name, bit in LSST_PLANES.items():
        key = f"MP_{name}"
        mh[key if len(key) <= 8 else f"HIERARCH {key}"] = bit
    if compressed:
        hdus = [fits.CompImageHDU(img, hdr("IMAGE"), name="IMAGE", compression_type="RICE_1", quantize_level=16),
                fits.CompImageHDU(msk, mh, name="MASK", compression_type="RICE_1"),
                fits.CompImageHDU(var, hdr("VARIANCE"), name="VARIANCE", compression_type="GZIP_2",
                                  quantize_level=0)]
    else:
        hdus = [fits.ImageHDU(img, hdr("IMAGE"), name="IMAGE"), fits.ImageHDU(msk, mh, name="MASK"),
                fits.ImageHDU(var, hdr("VARIANCE"), name="VARIANCE")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList([pri] + hdus).writeto(path)
    return img, msk, var, w


# ---------------------------------------------------------------------------
# LSST calexp-like


def test_lsst_calexp_reads_every_plane_origin_wcs_and_header(tmp_path, rng):
    path = tmp_path / "calexp.fits"
    img, msk, var, w = write_calexp(path, rng)
    e = read_exposure(path)
    assert tuple(e.getXY0()) == (1000, 2000)
    assert np.array_equal(e.image, img) and np.array_equal(e.variance, var) and np.array_equal(e.mask, msk)
    assert e.getMask().getMaskPlaneDict() == LSST_PLANES
    assert np.array_equal(sky_of(e.wcs), sky_of(w))
    fh = e.metadata["fitsHeader"]
    assert fh["FLUXMAG0"] == 1e11 and fh["FILTER"] == "r"
    assert "AR_HDU" not in fh and "PSF_ID" not in fh
    info = read_exposure_info(path)
    assert info.layout == "lsst" and info.xy0 == (1000, 2000) and info.mask_planes == LSST_PLANES
    assert info.calibration == {"FLUXMAG0": 1e11}


def test_lsst_calexp_tile_compressed_reads_as_astropy_does(tmp_path, rng):
    path = tmp_path / "calexp.fits.fz"
    _, msk, var, w = write_calexp(path, rng, compressed=True)
    with fits.open(path) as f:
        ref = f["IMAGE"].data.copy()  # quantized: compare with what astropy decompresses
    e = read_exposure(path)
    assert np.array_equal(e.image, ref) and np.array_equal(e.variance, var) and np.array_equal(e.mask, msk)
    assert tuple(e.getXY0()) == (1000, 2000)
    assert np.array_equal(sky_of(e.wcs), sky_of(w))
    info = read_exposure_info(path)
    assert info.shape == (128, 144) and info.xy0 == (1000, 2000) and info.dtype == np.float32


def test_matched_calexp_written_reads_back_with_plain_astropy(tmp_path, rng):
    path = tmp_path / "calexp.fits"
    _, _, _, w = write_calexp(path, rng)
    e = read_exposure(path, psf=GaussianPsf(25, 25, SCI_SIGMA))
    m = match(e).psfMatchedExposure
    out = tmp_path / "matched.fits"
    write_exposure(m, out)
    with fits.open(out) as f:
        assert np.array_equal(f["IMAGE"].data, m.image, equal_nan=True)
        assert np.array_equal(f["VARIANCE"].data, m.variance, equal_nan=True)
        assert np.array_equal(f["MASK"].data, m.mask)
        h = f["IMAGE"].header
        assert (h["LTV1"], h["LTV2"], h["CRVAL1A"], h["CRVAL2A"]) == (-1000, -2000, 1000.0, 2000.0)
        # same grid: the sky at each array pixel is the input's, in every plane
        for name in ("IMAGE", "MASK", "VARIANCE"):
            np.testing.assert_allclose(sky_of(WCS(f[name].header)), sky_of(w), rtol=0, atol=1e-12)
        planes = {k.replace("HIERARCH ", "")[3:]: v for k, v in f["MASK"].header.items() if k.startswith("MP_")}
        assert planes == LSST_PLANES
        assert f[0].header["FLUXMAG0"] == 1e11 and "AR_HDU" not in f[0].header


# ---------------------------------------------------------------------------
# DECam community pipeline-like: SCI + weight (inverse variance) + DQ


def write_decam(path, rng, shape=(128, 128), weight=0.25):
    img = stars(shape, rng).astype(np.float32)
    wt = np.full(shape, weight, np.float32)
    dq = np.zeros(shape, np.int16)
    dq[10, 10], dq[11, 11], dq[12, 12], dq[13, 13] = 1, 2, 4, 7
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, sky_wcs(shape).to_header(), name="SCI"),
                  fits.ImageHDU(wt, name="WGT"), fits.ImageHDU(dq, name="DQ")]).writeto(path)
    return img, wt, dq


def test_decam_weight_is_inverse_variance_and_zero_weight_is_infinite(tmp_path, rng):
    path = tmp_path / "decam.fits"
    shape = (64, 64)
    img = stars(shape, rng).astype(np.float32)
    wt = rng.uniform(0.2, 0.4, shape).astype(np.float32)
    wt[5, 5] = 0
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(wt, name="WGT"),
                  fits.ImageHDU(np.zeros(shape, np.int16), name="DQ")]).writeto(path)
    e = read_exposure(path, mask="DQ", variance="WGT", variance_kind="invvar")
    keep = wt > 0
    np.testing.assert_allclose(e.variance[keep], 1.0 / wt[keep].astype(np.float64), rtol=1e-6)
    assert np.isposinf(e.variance[5, 5])
    assert np.array_equal(e.image, img)


def test_decam_dq_bits_kept_and_matched_variance_is_sum_k2_over_w(tmp_path, rng):
    """Gaussian identity: K is a Gaussian of sigma_k^2 = 9 - 4 = 5, so sum K^2 = 1 / (4 pi 5); a constant
    weight w gives V_out = (1/w) sum K^2 away from the edges; flux is conserved."""
    path = tmp_path / "decam.fits"
    img, wt, dq = write_decam(path, rng)
    e = read_exposure(path, mask="DQ", variance="WGT", variance_kind="invvar", psf=GaussianPsf(25, 25, SCI_SIGMA))
    assert [int(e.mask[i, i]) for i in range(10, 14)] == [1, 2, 4, 7]
    m = match(e).psfMatchedExposure
    inner = np.s_[30:-30, 30:-30]
    np.testing.assert_allclose(np.median(m.variance[inner]), (1 / 0.25) / (4 * np.pi * 5.0), rtol=0.03)
    flux_in, flux_out = e.image[inner].sum(), m.image[inner].sum()
    assert abs(flux_out - flux_in) / flux_in < 5e-3


def test_nan_region_becomes_nan_no_data_inf_variance_and_fz_round_trip(tmp_path, rng):
    shape = (128, 128)
    img = stars(shape, rng).astype(np.float32)
    img[60:80, 60:80] = np.nan
    path = tmp_path / "nan.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"),
                  fits.ImageHDU(np.full(shape, 2.0, np.float32), name="ERR")]).writeto(path)
    e = read_exposure(path, variance="ERR", variance_kind="stddev", psf=GaussianPsf(25, 25, SCI_SIGMA))
    assert np.all(e.variance == 4.0)
    m = match(e).psfMatchedExposure
    nd = (m.mask & m.getMask().getPlaneBitMask("NO_DATA")) != 0
    bad = ~np.isfinite(m.image)
    assert bad[70, 70] and bad[60 - 3, 70] and not bad[40, 40]
    assert np.array_equal(bad, nd) and np.array_equal(bad, np.isposinf(m.variance))
    out = tmp_path / "m.fits.fz"
    write_exposure(m, out)
    with fits.open(out) as f:
        assert isinstance(f["IMAGE"], fits.CompImageHDU)
        assert np.array_equal(f["IMAGE"].data, m.image, equal_nan=True)
        assert np.array_equal(f["VARIANCE"].data, m.variance)
        assert np.array_equal(f["MASK"].data, m.mask)


# ---------------------------------------------------------------------------
# HST / JWST-like


def test_hst_err_is_stddev_and_dq_bits_and_bunit(tmp_path, rng):
    shape = (64, 64)
    img = stars(shape, rng).astype(np.float32)
    err = np.sqrt(rng.uniform(3, 5, shape)).astype(np.float32)
    dq = np.zeros(shape, np.uint16)
    dq[3, 3], dq[4, 4], dq[5, 5] = 4096, 32768, 16
    sh = sky_wcs(shape).to_header()
    sh["BUNIT"] = "ELECTRONS/S"
    p = fits.PrimaryHDU()
    p.header["TELESCOP"] = "HST"
    path = tmp_path / "hst.fits"
    fits.HDUList([p, fits.ImageHDU(img, sh, name="SCI"), fits.ImageHDU(err, name="ERR"),
                  fits.ImageHDU(dq, name="DQ")]).writeto(path)
    e = read_exposure(path, mask="DQ", variance="ERR", variance_kind="stddev")
    np.testing.assert_allclose(e.variance, err.astype(np.float64) ** 2, rtol=1e-6)
    assert (int(e.mask[3, 3]), int(e.mask[4, 4]), int(e.mask[5, 5])) == (4096, 32768, 16)
    assert e.metadata["unit"] == "ELECTRONS/S" and "BUNIT" not in e.metadata["fitsHeader"]


def test_plain_image_warns_about_unread_err_and_dq(tmp_path, rng, caplog):
    shape = (64, 64)
    path = tmp_path / "hst.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(stars(shape, rng).astype(np.float32), name="SCI"),
                  fits.ImageHDU(np.ones(shape, np.float32), name="ERR"),
                  fits.ImageHDU(np.zeros(shape, np.int16), name="DQ")]).writeto(path)
    with caplog.at_level(logging.WARNING, logger="psfmatch"):
        read_exposure(path)
    text = caplog.text
    assert "ERR, DQ" in text and "variance_kind='invvar'" in text and "no variance plane given" in text


def test_kernel_sum_rescales_photflam_in_written_file(tmp_path, rng):
    shape = (128, 128)
    p = fits.PrimaryHDU()
    p.header["PHOTFLAM"] = 2e-19
    path = tmp_path / "hst.fits"
    fits.HDUList([p, fits.ImageHDU(stars(shape, rng).astype(np.float32), name="SCI"),
                  fits.ImageHDU(np.full(shape, 0.5, np.float32), name="ERR")]).writeto(path)
    e = read_exposure(path, variance="ERR", variance_kind="stddev", psf=GaussianPsf(25, 25, SCI_SIGMA))
    m = match(e, kernelSum=2.0).psfMatchedExposure
    # variance: kernelSum^2 * V * sum K^2 = 4 * 0.25 / (4 pi 5)
    np.testing.assert_allclose(np.median(m.variance[30:-30, 30:-30]), 1.0 / (20 * np.pi), rtol=0.03)
    out = tmp_path / "m.fits"
    write_exposure(m, out)
    assert fits.getheader(out, 0)["PHOTFLAM"] == pytest.approx(1e-19, rel=1e-12)
    assert e.metadata["fitsHeader"]["PHOTFLAM"] == 2e-19  # the input's metadata untouched


def test_physical_bunit_in_image_header_is_warned_and_written(tmp_path, rng):
    shape = (128, 128)
    sh = fits.Header()
    sh["BUNIT"] = "MJy/sr"
    path = tmp_path / "jw.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(stars(shape, rng).astype(np.float32), sh, name="SCI"),
                  fits.ImageHDU(np.full(shape, 2.0, np.float32), name="ERR")]).writeto(path)
    e = read_exposure(path, variance="ERR", variance_kind="stddev", psf=GaussianPsf(25, 25, SCI_SIGMA))
    with pytest.warns(PsfMatchWarning, match="MJy/sr"):
        m = match(e, kernelSum=2.0).psfMatchedExposure
    out = tmp_path / "m.fits"
    write_exposure(m, out)
    assert fits.getheader(out, "IMAGE")["BUNIT"] == "MJy/sr"


def test_bunit_inherited_from_primary_is_the_image_unit(tmp_path, rng):
    """Was a defect (fixed): BUNIT inherited from the primary header (INHERIT=T) is not the image unit: no warning
    when kernelSum rescales nJy pixels."""
    shape = (128, 128)
    p = fits.PrimaryHDU()
    p.header["BUNIT"] = "nJy"

    def ext():
        h = fits.Header()
        h["INHERIT"] = True
        return h

    path = tmp_path / "bunit_primary.fits"
    fits.HDUList([p, fits.ImageHDU(stars(shape, rng).astype(np.float32), ext(), name="IMAGE"),
                  fits.ImageHDU(np.zeros(shape, np.int32), name="MASK"),
                  fits.ImageHDU(np.full(shape, 4.0, np.float32), ext(), name="VARIANCE")]).writeto(path)
    e = read_exposure(path, psf=GaussianPsf(25, 25, SCI_SIGMA))
    assert e.metadata.get("unit") == "nJy"
    with pytest.warns(PsfMatchWarning, match="nJy"):
        match(e, kernelSum=2.0)


def test_3d_sci_cube_is_refused_not_replaced_by_dq(tmp_path):
    """Was a defect (fixed): a 3-d SCI cube is skipped and another 2-d HDU (the DQ plane) is silently read as the
    science image."""
    shape = (64, 80)
    path = tmp_path / "rateints.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((3,) + shape, np.float32), name="SCI"),
                  fits.ImageHDU(np.ones((3,) + shape, np.float32), name="ERR"),
                  fits.ImageHDU(np.full(shape, 7, np.uint32), name="PIXELDQ")]).writeto(path)
    with pytest.raises(UnsupportedFormatError, match=r"SCI.*3-d|3-d.*SCI"):
        read_exposure(path)


def write_two_chips(path, shape=(64, 80)):
    hdus = [fits.PrimaryHDU()]
    for v in (1, 2):
        hdus.append(fits.ImageHDU(np.full(shape, 10.0 * v, np.float32),
                                  sky_wcs(shape, crpix=(10 + 100 * v, 20)).to_header(), name="SCI", ver=v))
        hdus.append(fits.ImageHDU(np.full(shape, float(v), np.float32), name="ERR", ver=v))
        hdus.append(fits.ImageHDU(np.full(shape, v, np.int16), name="DQ", ver=v))
    fits.HDUList(hdus).writeto(path)


def test_second_chip_by_index_reads_its_own_planes(tmp_path):
    path = tmp_path / "acs.fits"
    write_two_chips(path)
    e = read_exposure(path, hdu=4, mask=6, variance=5, variance_kind="stddev")
    assert (e.image[0, 0], e.variance[0, 0], int(e.mask[0, 0])) == (20.0, 4.0, 2)
    assert list(e.wcs.wcs.crpix) == [210.0, 20.0]


def test_second_chip_by_extver_does_not_take_first_chips_planes(tmp_path):
    """Was a defect (fixed): hdu=('SCI', 2) with mask='DQ', variance='ERR' silently pairs chip 2's image with chip
    1's DQ and ERR."""
    path = tmp_path / "acs.fits"
    write_two_chips(path)
    try:
        e = read_exposure(path, hdu=("SCI", 2), mask="DQ", variance="ERR", variance_kind="stddev")
    except PsfMatchError as exc:  # refusing the ambiguous name is as good
        assert "DQ" in str(exc) and "2" in str(exc)
        return
    assert e.image[0, 0] == 20.0
    assert (e.variance[0, 0], int(e.mask[0, 0])) == (4.0, 2)


def test_mask_and_variance_by_name_and_extver(tmp_path):
    """Was a defect (fixed): mask=('DQ', 2) (an HDU name and EXTVER of the same file) is taken as a file named 'DQ':
    MissingFileError."""
    path = tmp_path / "acs.fits"
    write_two_chips(path)
    e = read_exposure(path, hdu=("SCI", 2), mask=("DQ", 2), variance=("ERR", 2), variance_kind="stddev")
    assert (e.image[0, 0], e.variance[0, 0], int(e.mask[0, 0])) == (20.0, 4.0, 2)


# ---------------------------------------------------------------------------
# separate weight file, scaled integers, big-endian


def test_single_hdu_image_with_separate_weight_file(tmp_path, rng):
    shape = (64, 64)
    img = stars(shape, rng).astype(np.float32)
    wt = rng.uniform(0.2, 0.4, shape).astype(np.float32)
    fits.PrimaryHDU(img, sky_wcs(shape).to_header()).writeto(tmp_path / "img.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(wt)]).writeto(tmp_path / "img.weight.fits")
    for spec in (str(tmp_path / "img.weight.fits"), tmp_path / "img.weight.fits", (tmp_path / "img.weight.fits", 1)):
        e = read_exposure(tmp_path / "img.fits", variance=spec, variance_kind="invvar")
        np.testing.assert_allclose(e.variance, 1.0 / wt.astype(np.float64), rtol=1e-6)


def test_bscale_bzero_blank_unsigned_and_big_endian(tmp_path, rng):
    shape = (48, 56)
    img = stars(shape, rng)
    raw = np.round((img - 50) / 0.5).astype(np.int16)
    raw[5, 5] = -32768
    h = fits.PrimaryHDU(data=raw, do_not_scale_image_data=True)
    h.header["BSCALE"], h.header["BZERO"], h.header["BLANK"] = 0.5, 50.0, -32768
    h.writeto(tmp_path / "scaled.fits")
    e = read_exposure(tmp_path / "scaled.fits", variance=np.full(shape, 4.0))
    expect = raw.astype(np.float64) * 0.5 + 50.0
    assert np.isnan(e.image[5, 5])
    keep = raw != -32768
    assert np.array_equal(e.image[keep], expect[keep].astype(np.float32))
    u = (img * 10).astype(np.uint16)
    fits.PrimaryHDU(u).writeto(tmp_path / "u16.fits")
    e = read_exposure(tmp_path / "u16.fits", variance=np.full(shape, 4.0))
    assert np.array_equal(e.image, u.astype(np.float32))
    fits.PrimaryHDU(img.astype(">f8")).writeto(tmp_path / "f64.fits")
    var, msk = np.full(shape, 4.0, ">f8"), np.zeros(shape, ">i4")
    msk[1, 1] = 3
    e = read_exposure(tmp_path / "f64.fits", variance=var, mask=msk)
    assert e.image.dtype == np.float64 and e.image.dtype.isnative and np.array_equal(e.image, img)
    assert e.variance.dtype.isnative and np.all(e.variance == 4.0) and int(e.mask[1, 1]) == 3


def test_caller_arrays_are_not_mutated_or_shared(tmp_path, rng):
    shape = (64, 64)
    fits.PrimaryHDU(stars(shape, rng).astype(np.float64)).writeto(tmp_path / "img.fits")
    var = np.full(shape, 4.0)
    msk = np.zeros(shape, np.int32)
    msk[3, 3] = 1
    var0, msk0 = var.copy(), msk.copy()
    e = read_exposure(tmp_path / "img.fits", variance=var, mask=msk, psf=GaussianPsf(25, 25, SCI_SIGMA))
    assert not np.shares_memory(e.variance, var) and not np.shares_memory(e.mask, msk)
    e.variance[0, 0] = 99.0
    e.mask[0, 0] = 5
    assert np.array_equal(var, var0) and np.array_equal(msk, msk0)
    image0 = e.image.copy()
    match(e)
    assert np.array_equal(e.image, image0)


# ---------------------------------------------------------------------------
# WCS with distortion


def test_sip_wcs_read_matched_written_agrees_with_astropy(tmp_path, rng):
    shape = (128, 128)
    w = sky_wcs(shape, sip=True)
    path = tmp_path / "sip.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(stars(shape, rng).astype(np.float32), w.to_header(relax=True),
                                                   name="SCI"),
                  fits.ImageHDU(np.full(shape, 0.5, np.float32), name="ERR")]).writeto(path)
    with fits.open(path) as f:
        ref = sky_of(WCS(f["SCI"].header))
    e = read_exposure(path, variance="ERR", variance_kind="stddev", psf=GaussianPsf(25, 25, SCI_SIGMA))
    assert e.wcs.sip is not None
    np.testing.assert_array_equal(sky_of(e.wcs), ref)
    out = tmp_path / "m.fits"
    write_exposure(match(e).psfMatchedExposure, out)
    with fits.open(out) as f:
        back = WCS(f["IMAGE"].header)
        assert back.sip is not None
        np.testing.assert_allclose(sky_of(back), ref, rtol=0, atol=1e-12)


def test_tpv_wcs_round_trip(tmp_path, rng):
    shape = (128, 128)
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TPV", "DEC--TPV"
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 150.0, 2.0, -1000.0, 2000.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = 0.0, 7.3e-5, -7.3e-5, 0.0
    for ax in (1, 2):
        for i, v in ((0, 0.0), (1, 1.0), (2, 0.0), (4, 3e-3), (5, -2e-3), (7, -1e-2)):
            h[f"PV{ax}_{i}"] = v
    path = tmp_path / "tpv.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(stars(shape, rng).astype(np.float32), h, name="SCI"),
                  fits.ImageHDU(np.full(shape, 0.25, np.float32), name="WGT")]).writeto(path)
    with fits.open(path) as f:
        ref = sky_of(WCS(f["SCI"].header))
    e = read_exposure(path, variance="WGT", variance_kind="invvar", psf=GaussianPsf(25, 25, SCI_SIGMA))
    np.testing.assert_array_equal(sky_of(e.wcs), ref)
    out = tmp_path / "m.fits"
    write_exposure(match(e).psfMatchedExposure, out)
    with fits.open(out) as f:
        np.testing.assert_allclose(sky_of(WCS(f["IMAGE"].header)), ref, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# odd headers


def test_continue_hierarch_and_duplicate_cards_survive_to_output(tmp_path, rng):
    shape = (96, 96)
    p = fits.PrimaryHDU()
    long = "x" * 150 + " end"
    p.header["LONGSTR"] = long
    p.header["HIERARCH ESO DET CHIP1 NAME"] = "CCD-44 long name"
    p.header.append(("EXPTIME", 30.0, "first"), end=True)
    p.header.append(("EXPTIME", 31.0, "dup"), end=True)
    p.header["HISTORY"] = "h1"
    p.header["HISTORY"] = "h2"
    sh = sky_wcs(shape).to_header()
    sh["HIERARCH ESO DET OUT1 GAIN"] = 1.5
    sh["GAIN"] = 4.0
    path = tmp_path / "odd.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList([p, fits.ImageHDU(stars(shape, rng).astype(np.float32), sh, name="SCI"),
                      fits.ImageHDU(np.full(shape, 0.25, np.float32), name="WGT")]).writeto(path)
    e = read_exposure(path, variance="WGT", variance_kind="invvar", psf=GaussianPsf(25, 25, SCI_SIGMA))
    out = tmp_path / "m.fits"
    write_exposure(match(e).psfMatchedExposure, out)
    h0 = fits.getheader(out, 0)
    assert h0["LONGSTR"] == long
    assert h0["ESO DET CHIP1 NAME"] == "CCD-44 long name" and h0["ESO DET OUT1 GAIN"] == 1.5
    assert [c.value for c in h0.cards if c.keyword == "EXPTIME"] == [30.0, 31.0]
    assert list(h0["HISTORY"])[:2] == ["h1", "h2"] and h0["GAIN"] == 4.0
    assert "CTYPE1" not in h0  # the WCS is the IMAGE extension's only


# ---------------------------------------------------------------------------
# errors and failed writes


def test_unreadable_layouts_raise_typed_errors_naming_file(tmp_path):
    shape = (32, 40)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.ones(3))])]).writeto(tmp_path / "tab.fits")
    with pytest.raises(UnsupportedFormatError, match=r"tab\.fits: no 2-d image HDU.*give the file holding the image"):
        read_exposure(tmp_path / "tab.fits")
    fits.PrimaryHDU(np.ones(5)).writeto(tmp_path / "one.fits")
    with pytest.raises(UnsupportedFormatError, match=r"one\.fits.*PRIMARY \(1-d\)"):
        read_exposure(tmp_path / "one.fits")
    fits.PrimaryHDU(np.ones(shape, np.float32)).writeto(tmp_path / "img.fits")
    with pytest.raises(UnsupportedFormatError, match=r"img\.fits: no HDU 'WGT' for the variance.*PRIMARY"):
        read_exposure(tmp_path / "img.fits", variance="WGT", variance_kind="invvar")
    with pytest.raises(InvalidInputError, match="variance_kind must be 'variance', 'stddev' or 'invvar'; got 'weight'"):
        read_exposure(tmp_path / "img.fits", variance=np.ones(shape), variance_kind="weight")
    data = (tmp_path / "img.fits").read_bytes()
    (tmp_path / "trunc.fits").write_bytes(data[:4000])
    with pytest.raises(CorruptFileError, match=r"trunc\.fits\[HDU 0\].*truncated"):
        read_exposure(tmp_path / "trunc.fits")


def test_mismatched_weight_file_error_names_the_weight_file(tmp_path):
    """Was a defect (fixed): a weight map of the wrong shape is reported against the image file (CorruptFileError),
    without naming the weight file or a remedy."""
    fits.PrimaryHDU(np.ones((32, 40), np.float32)).writeto(tmp_path / "img.fits")
    fits.PrimaryHDU(np.ones((10, 10), np.float32)).writeto(tmp_path / "w10.fits")
    with pytest.raises(PsfMatchError, match=r"w10\.fits") as info:
        read_exposure(tmp_path / "img.fits", variance=str(tmp_path / "w10.fits"), variance_kind="invvar")
    assert not isinstance(info.value, CorruptFileError)  # neither file is damaged


def test_negative_stddev_is_refused_like_negative_variance(tmp_path):
    """Was a defect (fixed): a negative ERR (stddev) plane is squared into a positive variance silently; a negative
    variance plane is refused."""
    shape = (32, 40)
    fits.PrimaryHDU(np.ones(shape, np.float32)).writeto(tmp_path / "img.fits")
    with pytest.raises(CorruptFileError, match="negative"):
        read_exposure(tmp_path / "img.fits", variance=-np.ones(shape), variance_kind="variance")  # refused
    with pytest.raises(CorruptFileError, match="negative"):
        read_exposure(tmp_path / "img.fits", variance=-np.ones(shape), variance_kind="stddev")


def test_write_refuses_existing_file_and_leaves_no_temp(tmp_path, rng):
    path = tmp_path / "calexp.fits"
    write_calexp(path, rng)
    e = read_exposure(path, psf=GaussianPsf(25, 25, SCI_SIGMA))
    out = tmp_path / "out.fits"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="out.fits"):
        write_exposure(e, out)
    assert out.read_bytes() == b"keep me"
    # a write that fails half-way leaves nothing behind
    real = fits.HDUList.writeto

    def broken(self, fileobj, *args, **kwargs):
        with open(fileobj, "wb") as fh:
            fh.write(b"SIMPLE  =  T" + b" " * 100)
        raise OSError(28, "No space left on device")

    fits.HDUList.writeto = broken
    try:
        with pytest.raises((OSError, PsfMatchError)):
            write_exposure(e, tmp_path / "new.fits")
    finally:
        fits.HDUList.writeto = real
    assert sorted(os.listdir(tmp_path)) == ["calexp.fits", "out.fits"]


def test_float_mask_hdu_error_names_the_hdu_and_a_remedy(tmp_path):
    """Was a defect (fixed): a float mask HDU is refused as a CorruptFileError of the image file, without naming the
    mask HDU or a remedy."""
    shape = (32, 40)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(shape, np.float32), name="SCI"),
                  fits.ImageHDU(np.zeros(shape, np.float32), name="MSK")]).writeto(tmp_path / "f.fits")
    with pytest.raises(PsfMatchError, match=r"MSK") as info:
        read_exposure(tmp_path / "f.fits", mask="MSK", variance=np.ones(shape))
    assert "bool" in str(info.value) or "astype" in str(info.value)  # the remedy: booleans or integer bits
