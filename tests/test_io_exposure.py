"""Exposure FITS I/O: psfmatch's layout round-trips, LSST-style and plain files, atomic writes, PSF persistence."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.errors import (CorruptFileError, InvalidInputError, MissingFileError, OutputExistsError, PsfMatchError,
                             UnsupportedFormatError)
from psfmatch.io import atomic_write, read_exposure, read_exposure_info, write_exposure
from psfmatch.io.psf_persist import fit_polynomial_psf
from psfmatch.psf import (DoubleGaussianPsf, GaussianPsf, ImagePsf, MoffatPsf, PsfexPsf, VariableGaussianPsf,
                          read_psf)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DECAM_HEADER = DATA / "psfex" / "GalSim-developers__GalSim" / "DECam_00154912_12_header.fits"
DES = DATA / "psfex" / "GalSim-developers__GalSim" / "DECam_00154912_12_psfcat.psf"


def simple_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [30.5, 20.5]
    w.wcs.cd = [[-5e-5, 1e-6], [2e-6, 5e-5]]
    return w


def make_exposure(dtype=np.float32, psf=None, wcs=None, xy0=(12, 34), metadata=None):
    rng = np.random.default_rng(5)
    image = rng.normal(size=(40, 60)).astype(dtype)
    mask = np.zeros(image.shape, np.int32)
    mask[3, 4] = 1 << 8
    mask[5, 6] = 0b101
    exp = Exposure(image, mask, (rng.uniform(1, 2, image.shape)).astype(dtype), psf=psf, wcs=wcs, xy0=xy0,
                   metadata=metadata)
    bit = exp.getMask().addMaskPlane("CROSSTALK_AFFECTED")
    exp.mask[7, 8] = 1 << bit
    return exp


def assert_same_pixels(a, b):
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.variance, b.variance)
    assert a.image.dtype == b.image.dtype and a.variance.dtype == b.variance.dtype
    assert a.getXY0() == b.getXY0()
    assert a.getMask().getMaskPlaneDict() == b.getMask().getMaskPlaneDict()


# ---------------------------------------------------------------------------
# psfmatch's layout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_pixels_planes_origin_wcs_metadata(tmp_path, dtype):
    header = fits.Header()
    header["EXPTIME"] = (30.0, "exposure time [s]")
    header["FILTER"] = "r"
    header["HISTORY"] = "flat-fielded"
    meta = {"id": 1234, "filter": "r", "visitInfo": {"exposureTime": 30.0, "airmass": 1.21},
            "photoCalib": {"calibrationMean": 0.87}, "note": "é ünïcode", "fitsHeader": header}
    exp = make_exposure(dtype, psf=GaussianPsf(15, 15, 2.1), wcs=simple_wcs(), metadata=meta)
    path = tmp_path / "exp.fits"
    exp.writeFits(path)
    back = Exposure.readFits(path)
    assert_same_pixels(exp, back)
    assert back.getPsf() == GaussianPsf(15, 15, 2.1)
    for key in ("id", "filter", "visitInfo", "photoCalib", "note"):
        assert back.metadata[key] == meta[key]
    assert back.getFilter() == "r" and back.getId() == 1234
    h = back.metadata["fitsHeader"]
    assert h["EXPTIME"] == 30.0 and h.comments["EXPTIME"] == "exposure time [s]"
    assert "flat-fielded" in str(h["HISTORY"])
    x, y = np.array([0.0, 17.5, 59.0]), np.array([0.0, 3.25, 39.0])
    np.testing.assert_allclose(back.getWcs().pixel_to_world_values(x, y), exp.getWcs().pixel_to_world_values(x, y),
                               rtol=0, atol=1e-12)
    # the MASK header names every plane, LSST's way
    mh = fits.getheader(path, "MASK")
    assert mh["MP_BAD"] == 0 and mh["MP_NO_DATA"] == 8 and mh["MP_CROSSTALK_AFFECTED"] == 9
    # the caller's exposure and header were not modified
    assert "PMFORMAT" not in header


def test_round_trip_without_psf_wcs_or_metadata(tmp_path):
    exp = make_exposure(xy0=(0, 0))
    write_exposure(exp, tmp_path / "e.fits")
    back = read_exposure(tmp_path / "e.fits")
    assert_same_pixels(exp, back)
    assert back.getPsf() is None and back.getWcs() is None
    # the planes come back native, writable and separate (read once, converted once, not copied again)
    planes = (back.image, back.mask, back.variance)
    assert all(p.dtype.isnative and p.flags.writeable for p in planes)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(planes) for b in planes[i + 1:])


@pytest.mark.skipif(not DECAM_HEADER.is_file(), reason=f"shared DECam header not found at {DECAM_HEADER}")
def test_real_tpv_wcs_round_trips(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = WCS(fits.getheader(DECAM_HEADER), naxis=2)
    exp = make_exposure(wcs=wcs)
    exp.writeFits(tmp_path / "e.fits")
    back = Exposure.readFits(tmp_path / "e.fits")
    x, y = np.array([0.0, 30.0, 59.0]), np.array([0.0, 20.0, 39.0])
    np.testing.assert_allclose(back.getWcs().pixel_to_world_values(x, y), wcs.pixel_to_world_values(x, y),
                               rtol=0, atol=1e-10)
    assert "TPV" in fits.getheader(tmp_path / "e.fits", "IMAGE")["CTYPE1"]


def test_non_serializable_metadata_is_skipped_with_a_warning(tmp_path, caplog):
    exp = make_exposure(metadata={"ok": [1, 2], "obj": object(), "np": {"n": np.int64(3), "a": np.arange(3.0)}})
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        exp.writeFits(tmp_path / "e.fits")
    assert "['obj'] are not JSON-serializable" in caplog.text
    back = Exposure.readFits(tmp_path / "e.fits")
    assert back.metadata["ok"] == [1, 2] and "obj" not in back.metadata
    assert back.metadata["np"] == {"n": 3, "a": [0.0, 1.0, 2.0]}  # numpy values as plain numbers and lists


# ---------------------------------------------------------------------------
# PSF persistence


class UserPsf:
    """A user model with only computeKernelImage: constant."""

    def computeKernelImage(self, position):
        return GaussianPsf(13, 13, 1.7).computeKernelImage(position)


class VaryingUserPsf:
    """A user model whose width grows linearly across the field."""

    def computeKernelImage(self, position):
        x, y = position
        return GaussianPsf(21, 21, 1.6 + 0.4 * x / 100.0 + 0.2 * y / 80.0).computeKernelImage(position)

    def getAveragePosition(self):
        return (50.0, 40.0)

    def isSpatiallyVarying(self):
        return True


def _psfs():
    bbox = Box2I((0, 0), (100, 80))
    out = [GaussianPsf(15, 15, 2.0), DoubleGaussianPsf(21, 21, 1.5, 3.5, 0.1), MoffatPsf(25, 25, 3.0, 3.5),
           VariableGaussianPsf(17, 17, bbox, sigma=(2.0, 0.1, -0.05), e1=(0.02,), e2=(0.0, 0.01, 0.0)),
           ImagePsf(GaussianPsf(11, 11, 1.5).computeKernelImage((0, 0)) + 1e-4, pixel_scale=0.2),
           GaussianPsf(15, 15, 2.0).resized(21, 21)]
    if DES.is_file():
        des = read_psf(DES)
        out += [des, des.resized(31, 31)]
    return out


@pytest.mark.parametrize("psf", _psfs(), ids=lambda p: type(p).__name__)
def test_psf_models_round_trip_exactly(tmp_path, psf):
    exp = Exposure(np.zeros((80, 100), np.float32), psf=psf)
    exp.writeFits(tmp_path / "e.fits")
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    assert type(back) is type(psf)
    for pos in [(0.0, 0.0), (37.5, 61.25), (99.0, 79.0), (1500.0, 2500.0)]:
        np.testing.assert_allclose(back.computeKernelImage(pos), psf.computeKernelImage(pos), rtol=1e-6,
                                   atol=1e-12)
    assert back.getAveragePosition() == pytest.approx(psf.getAveragePosition())


def test_other_constant_models_are_stored_as_images(tmp_path):
    from psfmatch.psf import PsfAdapter

    psf = PsfAdapter(UserPsf())
    psf.isSpatiallyVarying = lambda: False
    exp = Exposure(np.zeros((30, 30), np.float32), psf=psf)
    exp.writeFits(tmp_path / "e.fits")
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    assert isinstance(back, ImagePsf)
    np.testing.assert_allclose(back.computeKernelImage((3, 3)), psf.computeKernelImage((3, 3)), rtol=1e-12)
    assert fits.getheader(tmp_path / "e.fits", "PSF")["PMORIGTY"] == "PsfAdapter"


def test_other_varying_models_are_approximated_by_a_polynomial(tmp_path, caplog):
    from psfmatch.psf import PsfAdapter

    psf = PsfAdapter(VaryingUserPsf())
    exp = Exposure(np.zeros((80, 100), np.float32), psf=psf)
    with caplog.at_level(logging.WARNING):
        exp.writeFits(tmp_path / "e.fits")
    assert "as a degree-2 polynomial" in caplog.text
    back = Exposure.readFits(tmp_path / "e.fits").getPsf()
    assert isinstance(back, PsfexPsf)
    h = fits.getheader(tmp_path / "e.fits", "PSF")
    assert h["PMAPPROX"] and h["PMFITRES"] < 0.01
    for pos in [(0.0, 0.0), (50.0, 40.0), (99.0, 79.0), (25.0, 66.0)]:
        a, b = back.computeKernelImage(pos), psf.computeKernelImage(pos)
        assert np.abs(a - b).max() < 0.01 * b.max()


def test_fit_polynomial_psf_is_exact_for_a_quadratic_model():
    bbox = Box2I((10, 20), (100, 80))
    truth = VariableGaussianPsf(15, 15, bbox, sigma=(2.0, 0.2, 0.1))
    model, residual = fit_polynomial_psf(truth, bbox, degree=2, ngrid=5)
    assert residual < 0.02
    with pytest.raises(InvalidInputError, match="non-empty Box2I"):
        fit_polynomial_psf(truth, Box2I((0, 0), (0, 0)))


def test_matched_exposure_round_trips_with_its_reference_psf(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.normal(size=(200, 200)).astype(np.float32)
    exp = Exposure(image, variance=np.ones_like(image), psf=GaussianPsf(21, 21, 1.6), wcs=simple_wcs(),
                   metadata={"filter": "i"})
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 0
    result = ModelPsfMatchTask(config).run(exp, GaussianPsf(31, 31, 2.5))
    matched = result.psfMatchedExposure
    matched.writeFits(tmp_path / "matched.fits")
    back = Exposure.readFits(tmp_path / "matched.fits")
    assert back.getPsf() == matched.getPsf()
    assert isinstance(back.getPsf(), GaussianPsf) and back.getPsf().getSigma() == 2.5
    np.testing.assert_array_equal(back.image, matched.image)  # NaN border included
    assert np.isnan(back.image[0, 0]) and np.isinf(back.variance[0, 0])
    np.testing.assert_array_equal(back.mask, matched.mask)
    assert back.getFilter() == "i"


# ---------------------------------------------------------------------------
# atomic writes and overwriting


def test_no_overwrite_unless_asked(tmp_path):
    path = tmp_path / "e.fits"
    first = make_exposure()
    first.writeFits(path)
    before = path.read_bytes()
    second = Exposure(np.ones((5, 5), np.float32))
    with pytest.raises(OutputExistsError, match="exists already; pass overwrite=True") as info:
        second.writeFits(path)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, PsfMatchError)
    assert path.read_bytes() == before
    second.writeFits(path, overwrite=True)
    assert Exposure.readFits(path).image.shape == (5, 5)
    assert sorted(os.listdir(tmp_path)) == ["e.fits"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "out.fits"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as tmp:
            Path(tmp).write_bytes(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, overwrite=True) as tmp:
            Path(tmp).write_bytes(b"partial")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.fits"]
    with pytest.raises(OSError, match="nothing was written"):
        with atomic_write(tmp_path / "never.fits"):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_write(tmp_path / "nodir" / "x.fits"):
            pass


def test_atomic_write_refuses_a_file_that_appears_meanwhile(tmp_path):
    path = tmp_path / "race.fits"
    with pytest.raises(OutputExistsError):
        with atomic_write(path) as tmp:
            Path(tmp).write_bytes(b"mine")
            path.write_bytes(b"theirs")
    assert path.read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["race.fits"]


def test_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "e.fits"
    make_exposure().writeFits(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", fail)
    with pytest.raises(OSError, match="disk full"):
        make_exposure(xy0=(0, 0)).writeFits(path, overwrite=True)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["e.fits"]


# ---------------------------------------------------------------------------
# other layouts


def test_plain_image_with_variance_estimated(tmp_path, caplog):
    rng = np.random.default_rng(1)
    data = rng.normal(10.0, 2.0, size=(64, 48)).astype(np.float32)
    hdu = fits.PrimaryHDU(data)
    hdu.header.update(simple_wcs().to_header())
    hdu.header["EXPTIME"] = 45.0
    hdu.header["BUNIT"] = "adu"
    hdu.writeto(tmp_path / "img.fits")
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        exp = Exposure.readFits(tmp_path / "img.fits", psf=GaussianPsf(11, 11, 2.0))
    assert "no variance plane given" in caplog.text
    np.testing.assert_array_equal(exp.image, data)
    assert np.all(exp.variance == exp.variance[0, 0]) and exp.variance[0, 0] == pytest.approx(4.0, rel=0.1)
    assert not exp.mask.any()
    assert exp.metadata["fitsHeader"]["EXPTIME"] == 45.0 and "CTYPE1" not in exp.metadata["fitsHeader"]
    assert exp.metadata["unit"] == "adu"
    assert exp.getWcs() is not None and exp.getXY0() == (0, 0)


def test_plain_image_with_planes_from_hdus_and_files(tmp_path):
    data = np.arange(20.0).reshape(4, 5)
    err = np.full((4, 5), 0.5)
    dq = np.zeros((4, 5), np.int16)
    dq[1, 2] = 1
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"), fits.ImageHDU(err, name="ERR"),
                  fits.ImageHDU(dq, name="DQ")]).writeto(tmp_path / "mef.fits")
    exp = read_exposure(tmp_path / "mef.fits", hdu="SCI", variance="ERR", variance_kind="stddev", mask="DQ")
    np.testing.assert_allclose(exp.variance, 0.25)
    assert exp.mask[1, 2] == 1 and exp.mask.sum() == 1
    fits.PrimaryHDU(np.full((4, 5), 4.0)).writeto(tmp_path / "wht.fits")
    exp = read_exposure(tmp_path / "mef.fits", hdu=1, variance=str(tmp_path / "wht.fits"), variance_kind="invvar",
                        mask=(tmp_path / "mef.fits", "DQ"))
    np.testing.assert_allclose(exp.variance, 0.25)
    weights = np.full((4, 5), 4.0)
    weights[0, 0] = 0.0
    exp = read_exposure(tmp_path / "mef.fits", variance=weights, variance_kind="invvar",
                        mask=np.eye(4, 5, dtype=bool), mask_plane="SUSPECT")
    assert np.isinf(exp.variance[0, 0])
    assert exp.getMask().planes_set("SUSPECT")[1, 1] and not exp.getMask().planes_set("BAD").any()
    np.testing.assert_array_equal(exp.image, data)  # the first image HDU with data
    # a 64-bit mask HDU with a bit above 31: refused, not dropped
    dq64 = dq.astype(np.int64)
    dq64[3, 4] = 1 << 33
    fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(dq64, name="DQ")]).writeto(tmp_path / "dq64.fits")
    with pytest.raises(UnsupportedFormatError, match=r"dq64.fits: mask values span 0..8589934592: bits above 31 are "
                                                     "set"):
        read_exposure(tmp_path / "dq64.fits", mask="DQ")
    dq64[3, 4] = 1 << 31  # bit 31 of a wider type is kept
    fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(dq64, name="DQ")]).writeto(tmp_path / "dq64.fits",
                                                                                 overwrite=True)
    assert read_exposure(tmp_path / "dq64.fits", mask="DQ").mask[3, 4] == -(1 << 31)
    # arrays given by the caller are never adopted, even when their type is already the planes'
    var = np.full((4, 5), 2.0)
    msk = np.zeros((4, 5), dtype=np.int32)
    exp = read_exposure(tmp_path / "mef.fits", variance=var, mask=msk)
    assert exp.image.dtype == np.float64 and exp.variance.dtype == np.float64 and exp.mask.dtype == np.int32
    assert not np.shares_memory(exp.variance, var) and not np.shares_memory(exp.mask, msk)
    exp.variance[0, 0] = -1.0
    exp.mask[0, 0] = 4
    assert var[0, 0] == 2.0 and msk[0, 0] == 0


def test_lsst_style_file(tmp_path):
    primary = fits.PrimaryHDU()
    primary.header["EXPTIME"] = 15.0
    primary.header["FILTER"] = "g"
    hdus = [primary]
    image = np.arange(30, dtype=np.float32).reshape(5, 6)
    for name, data in (("IMAGE", image), ("MASK", np.full((5, 6), 4, np.int32)),
                       ("VARIANCE", np.full((5, 6), 2.0, np.float32))):
        h = fits.ImageHDU(data, name=name)
        h.header["EXTTYPE"] = name
        h.header["INHERIT"] = True
        h.header["LTV1"] = -100
        h.header["LTV2"] = -200
        h.header["CRVAL1A"] = 100
        h.header["CRVAL2A"] = 200
        h.header["CRPIX1A"] = 1
        h.header["CRPIX2A"] = 1
        h.header["CTYPE1A"] = "LINEAR"
        h.header["CTYPE2A"] = "LINEAR"
        if name == "MASK":
            for plane, bit in (("BAD", 0), ("SAT", 1), ("INTRP", 2), ("STREAK", 9), ("NOT_DEBLENDED", 10)):
                h.header[f"HIERARCH MP_{plane}"] = bit
        hdus.append(h)
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="id", format="K", array=[1])], name="ARCHIVE_INDEX"))
    fits.HDUList(hdus).writeto(tmp_path / "calexp.fits")
    exp = Exposure.readFits(tmp_path / "calexp.fits")
    np.testing.assert_array_equal(exp.image, image)
    assert exp.getXY0() == (100, 200)
    planes = exp.getMask().getMaskPlaneDict()
    assert planes["STREAK"] == 9 and planes["NOT_DEBLENDED"] == 10
    assert exp.getMask().planes_set("INTRP").all()
    np.testing.assert_allclose(exp.variance, 2.0)
    assert exp.metadata["fitsHeader"]["FILTER"] == "g"
    assert exp.getPsf() is None
    # only LTV: the IRAF convention
    with fits.open(tmp_path / "calexp.fits", mode="update") as hdul:
        for key in ("CRVAL1A", "CRVAL2A", "CTYPE1A", "CTYPE2A"):
            del hdul["IMAGE"].header[key]
        hdul["IMAGE"].header["LTV1"] = -7
    assert Exposure.readFits(tmp_path / "calexp.fits").getXY0() == (7, 200)
    assert Exposure.readFits(tmp_path / "calexp.fits", xy0=(1, 2)).getXY0() == (1, 2)
    info = read_exposure_info(tmp_path / "calexp.fits")
    assert info.layout == "lsst" and info.shape == (5, 6) and info.xy0 == (7, 200) and info.psf is None
    assert info.mask_planes["STREAK"] == 9 and info.dtype == np.float32


def test_exposure_info_without_the_pixels(tmp_path):
    path = tmp_path / "e.fits"
    exp = make_exposure(dtype=np.float64, psf=GaussianPsf(15, 15, 2.0), wcs=simple_wcs(), xy0=(12, 34),
                        metadata={"filter": "r", "unit": "nJy"})
    write_exposure(exp, path)
    info = read_exposure_info(path)
    assert info.layout == "psfmatch" and info.shape == (40, 60) and info.xy0 == (12, 34)
    assert info.getBBox() == exp.getBBox() and info.dtype == np.float64 and info.unit == "nJy"
    assert info.mask_planes == exp.getMask().getMaskPlaneDict()  # CROSSTALK_AFFECTED included
    assert info.psf == GaussianPsf(15, 15, 2.0) and info.metadata == {}
    np.testing.assert_allclose(info.wcs.pixel_to_world_values(3.0, 4.0), exp.getWcs().pixel_to_world_values(3.0, 4.0))
    both = read_exposure_info(path, psf=False, metadata=True)
    assert both.psf is None and both.metadata["filter"] == "r"
    # what it refuses, and why
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(tmp_path / "plain.fits")
    with pytest.raises(UnsupportedFormatError, match=r"plain\.fits: no IMAGE, MASK, VARIANCE HDU\(s\).*read_exposure"):
        read_exposure_info(tmp_path / "plain.fits")
    with pytest.raises(MissingFileError, match="does not exist"):
        read_exposure_info(tmp_path / "absent.fits")
    with fits.open(path) as hdul:
        hdul["VARIANCE"].data = np.ones((40, 61), np.float32)
        hdul.writeto(tmp_path / "shapes.fits")
    with pytest.raises(CorruptFileError, match=r"shapes\.fits: the planes differ in shape: .*'VARIANCE': \(40, 61\)"):
        read_exposure_info(tmp_path / "shapes.fits")
    with fits.open(path) as hdul:
        hdul["MASK"].data = np.zeros((2, 40, 60), np.int32)
        hdul.writeto(tmp_path / "cube.fits")
    with pytest.raises(CorruptFileError, match=r"cube\.fits\[MASK\]: not a 2-d image \(NAXIS = 3\)"):
        read_exposure_info(tmp_path / "cube.fits")


@pytest.mark.skipif(not DES.is_file(), reason=f"shared PSFEx data not found at {DES}")
def test_psf_given_as_a_path(tmp_path):
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(tmp_path / "img.fits")
    exp = Exposure.readFits(tmp_path / "img.fits", psf=str(DES), variance=np.ones((8, 8)))
    assert isinstance(exp.getPsf(), PsfexPsf)


# ---------------------------------------------------------------------------
# errors


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_exposure(tmp_path / "missing.fits")
    (tmp_path / "junk.fits").write_text("junk")
    with pytest.raises(CorruptFileError, match="junk.fits: not a readable FITS file"):
        read_exposure(tmp_path / "junk.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="D", array=[1.0])])]).writeto(tmp_path / "table.fits")
    with pytest.raises(UnsupportedFormatError, match=r"no 2-d image HDU .*; it holds no image \(only tables or empty "
                       r"headers\): give the file holding the image"):
        read_exposure(tmp_path / "table.fits")
    with pytest.raises(UnsupportedFormatError, match="no HDU 'SCI'"):
        read_exposure(tmp_path / "table.fits", hdu="SCI")
    with pytest.raises(UnsupportedFormatError, match="not a 2-d image HDU"):
        read_exposure(tmp_path / "table.fits", hdu=1)
    with pytest.raises(UnsupportedFormatError, match="no IMAGE extension for the 'lsst' layout"):
        read_exposure(tmp_path / "table.fits", layout="lsst")
    with pytest.raises(InvalidInputError, match="layout must be"):
        read_exposure(tmp_path / "table.fits", layout="hst")
    fits.PrimaryHDU(np.ones((4, 5))).writeto(tmp_path / "img.fits")
    with pytest.raises(InvalidInputError, match=r"the variance plane \(<variance array>\) has shape \(3, 3\), the "
                                                r"image \(4, 5\); give the variance plane of this image"):
        read_exposure(tmp_path / "img.fits", variance=np.ones((3, 3)))
    with pytest.raises(UnsupportedFormatError, match="no HDU 'VAR' for the variance"):
        read_exposure(tmp_path / "img.fits", variance="VAR")
    with pytest.raises(FileNotFoundError, match="variance file .* does not exist"):
        read_exposure(tmp_path / "img.fits", variance=str(tmp_path / "v.fits"))
    with pytest.raises(CorruptFileError, match="the variance has negative values"):
        read_exposure(tmp_path / "img.fits", variance=-np.ones((4, 5)))
    with pytest.raises(InvalidInputError, match="variance_kind must be"):
        read_exposure(tmp_path / "img.fits", variance=np.ones((4, 5)), variance_kind="sigma")
    with pytest.raises(UnsupportedFormatError, match=r"<mask array>: the mask must hold integer bits; got dtype "
                                                     r"float64: pass mask= as an array of booleans"):
        read_exposure(tmp_path / "img.fits", variance=np.ones((4, 5)), mask=np.ones((4, 5)))
    with pytest.raises(InvalidInputError, match="write_exposure needs an Exposure"):
        write_exposure(np.ones((3, 3)), tmp_path / "x.fits")


def test_damaged_psfmatch_files(tmp_path):
    path = tmp_path / "e.fits"
    make_exposure(psf=GaussianPsf(11, 11, 2.0)).writeFits(path)
    with fits.open(path, mode="update") as hdul:
        hdul["PSF"].header["PMPSFTYP"] = "FancyPsf"
    with pytest.raises(CorruptFileError, match=r"\[PSF\]: PMPSFTYP = 'FancyPsf' is not a PSF type"):
        read_exposure(path)
    assert read_exposure(path, psf=GaussianPsf(5, 5, 1.0)).getPsf() == GaussianPsf(5, 5, 1.0)
    with fits.open(path, mode="update") as hdul:
        hdul["PSF"].header["PMPSFTYP"] = "GaussianPsf"
        hdul["PSF"].header["PMPARAMS"] = '{"width": 10, "height": 11, "sigma": 2.0}'
    with pytest.raises(CorruptFileError, match=r"the stored GaussianPsf cannot be decoded .*width must be"):
        read_exposure(path)
    path2 = tmp_path / "e2.fits"
    make_exposure().writeFits(path2)
    with fits.open(path2, mode="update") as hdul:
        cell = hdul["METADATA"].data["JSON"][0]
        cell[:] = np.frombuffer(b"{not json"[:cell.size].ljust(cell.size, b"x"), dtype=np.uint8)
    with pytest.raises(CorruptFileError, match=r"\[METADATA\]: the JSON column cannot be decoded"):
        read_exposure(path2)
    path3 = tmp_path / "e3.fits"
    make_exposure().writeFits(path3)
    with fits.open(path3, mode="update") as hdul:
        hdul["IMAGE"].header["CRVAL1A"] = 3.5
    with pytest.raises(CorruptFileError, match=r"\[IMAGE\]: the image origin \(3.5, 34.0\)"):
        read_exposure(path3)


def test_metadata_of_format_1_files_is_still_read(tmp_path):
    """Format 1 stored the metadata JSON as a string column; format 2 stores its bytes (fast to write)."""
    import json

    exp = make_exposure()
    exp.metadata["note"] = "x" * 5000
    path = tmp_path / "v2.fits"
    exp.writeFits(path)
    with fits.open(path) as hdul:
        assert hdul[0].header["PMVERS"] == 2 and hdul["METADATA"].columns["JSON"].format.endswith("B")
        text = hdul["METADATA"].data["JSON"][0].tobytes().decode("ascii")
        hdus = [h.copy() for h in hdul]
    old = fits.BinTableHDU.from_columns([fits.Column(name="JSON", format=f"{len(text)}A", array=np.array([text]))],
                                        name="METADATA")
    v1 = tmp_path / "v1.fits"
    fits.HDUList([h if h.name != "METADATA" else old for h in hdus]).writeto(v1)
    got = read_exposure(v1)
    assert got.metadata["note"] == "x" * 5000
    assert {k: v for k, v in got.metadata.items() if k != "fitsHeader"} == \
        {k: v for k, v in read_exposure(path).metadata.items() if k != "fitsHeader"} == \
        {k: v for k, v in json.loads(text).items()}


def test_a_compressed_image_promising_terabytes_is_refused_before_decompression(tmp_path):
    from psfmatch.io.fits import MAX_DECOMPRESSED_BYTES

    path = tmp_path / "bomb.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((32, 32), np.float32), name="IMAGE")]).writeto(path)
    ok = read_exposure(path)  # the honest file reads
    assert ok.image.shape == (32, 32)
    raw = path.read_bytes()
    for key in (b"ZNAXIS1 =", b"ZNAXIS2 ="):
        i = raw.find(key)
        raw = raw[:i] + key + b"%21d" % 1_000_000 + raw[i + 30:]
    path.write_bytes(raw)
    assert 4 * 10 ** 12 > MAX_DECOMPRESSED_BYTES
    with pytest.raises(CorruptFileError, match=r"IMAGE\]: the compressed image would decompress to 4000000000000 bytes"):
        read_exposure(path)


# ---------------------------------------------------------------------------
# header cards, WCS, origin and pixel types of foreign files


def test_user_cards_named_like_psfmatch_bookkeeping_survive_reading_and_writing(tmp_path):
    """DECam's PMOSTEMP and PMN-TEMP, proper motions PMRA/PMDEC and a user's MP_ card are not psfmatch's own."""
    hdu = fits.PrimaryHDU(np.ones((20, 30), np.float32))
    cards = {"PMOSTEMP": 14.1, "PMN-TEMP": 13.0, "PMRA": 12.5, "PMDEC": -3.0, "MP_EPOCH": 2000.0, "OBJECT": "M31"}
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(tmp_path / "in.fits")
    exp = read_exposure(tmp_path / "in.fits", variance=np.ones((20, 30)))
    assert {k: exp.metadata["fitsHeader"].get(k) for k in cards} == cards
    exp.writeFits(tmp_path / "out.fits")
    primary = fits.getheader(tmp_path / "out.fits", 0)
    assert {k: primary.get(k) for k in cards} == cards
    assert primary["PMFORMAT"] == "psfmatch-exposure"  # the writer's own, once
    back = read_exposure(tmp_path / "out.fits").metadata["fitsHeader"]
    assert {k: back.get(k) for k in cards} == cards and "PMFORMAT" not in back and "PMVERS" not in back
    assert "MP_BAD" not in back  # the MASK extension's plane cards stay there


def test_wcs_names_are_removed_only_from_the_header_the_wcs_comes_from(tmp_path):
    # HST-style: EQUINOX of RA_TARG and a time series' MJDREF in a primary header without a WCS
    primary = fits.Header([("RA_TARG", 10.0), ("EQUINOX", 2000.0), ("MJDREF", 51544.0), ("EPOCH", 2000.0)])
    sci = fits.ImageHDU(np.ones((20, 30), np.float32), name="SCI")
    sci.header.update(simple_wcs().to_header())
    fits.HDUList([fits.PrimaryHDU(header=primary), sci]).writeto(tmp_path / "hst.fits")
    exp = read_exposure(tmp_path / "hst.fits", hdu="SCI", variance=np.ones((20, 30)))
    kept = exp.metadata["fitsHeader"]
    assert (kept["EQUINOX"], kept["MJDREF"], kept["EPOCH"], kept["RA_TARG"]) == (2000.0, 51544.0, 2000.0, 10.0)
    assert exp.getWcs() is not None and "CRVAL1" not in kept and "CTYPE1" not in kept  # the SCI header's WCS
    # an image in the primary header: its WCS cards are the WCS, and are not kept twice
    hdu = fits.PrimaryHDU(np.ones((20, 30), np.float32), header=simple_wcs().to_header())
    hdu.header["OBJECT"] = "x"
    hdu.writeto(tmp_path / "plain.fits")
    exp = read_exposure(tmp_path / "plain.fits", variance=np.ones((20, 30)))
    assert exp.getWcs() is not None and "CRVAL1" not in exp.metadata["fitsHeader"]
    assert "EQUINOX" not in exp.metadata["fitsHeader"] and exp.metadata["fitsHeader"]["OBJECT"] == "x"


def test_a_wcs_in_the_primary_header_is_inherited_by_the_image_extension(tmp_path, caplog):
    primary = simple_wcs().to_header()
    primary["OBJECT"] = "field"
    sci = fits.ImageHDU(np.ones((30, 40), np.float32), name="SCI")
    sci.header["INHERIT"] = True
    fits.HDUList([fits.PrimaryHDU(header=primary), sci]).writeto(tmp_path / "inherit.fits")
    with caplog.at_level(logging.INFO, logger="psfmatch.io.fits"):
        exp = read_exposure(tmp_path / "inherit.fits", variance=np.ones((30, 40)))
    assert exp.getWcs() is not None and exp.getWcs().wcs.compare(WCS(primary).wcs)
    np.testing.assert_allclose(exp.getWcs().pixel_to_world_values(3.0, 4.0), WCS(primary).pixel_to_world_values(3, 4))
    assert "using the primary header's (FITS INHERIT convention)" in caplog.text
    # the WCS cards it came from are the exposure's WCS now, not kept as header cards; the others are
    assert "CRVAL1" not in exp.metadata["fitsHeader"] and exp.metadata["fitsHeader"]["OBJECT"] == "field"
    # and it is written out with the exposure (in the IMAGE header)
    exp.writeFits(tmp_path / "out.fits")
    assert read_exposure(tmp_path / "out.fits").getWcs().wcs.compare(exp.getWcs().wcs)
    # INHERIT = F, or no INHERIT card (a binned thumbnail must not take the full image's WCS): nothing inherited
    for value in (False, None):
        with fits.open(tmp_path / "inherit.fits", mode="update") as hdul:
            if value is None:
                del hdul["SCI"].header["INHERIT"]
            else:
                hdul["SCI"].header["INHERIT"] = value
        assert read_exposure(tmp_path / "inherit.fits", variance=np.ones((30, 40))).getWcs() is None


def test_an_image_extension_named_image_keeps_its_own_cards(tmp_path):
    """An ``IMAGE`` extension alone is a plain image, not an LSST-style file: its GAIN, EXPTIME and HISTORY stay."""
    ext = fits.ImageHDU(np.ones((10, 12), np.float32), name="IMAGE")
    ext.header["GAIN"] = 1.7
    ext.header["EXPTIME"] = 90.0
    ext.header["HISTORY"] = "flat-fielded"
    fits.HDUList([fits.PrimaryHDU(), ext]).writeto(tmp_path / "image.fits")
    exp = read_exposure(tmp_path / "image.fits", variance=np.ones((10, 12)))
    header = exp.metadata["fitsHeader"]
    assert header["GAIN"] == 1.7 and header["EXPTIME"] == 90.0 and list(header["HISTORY"]) == ["flat-fielded"]
    exp.writeFits(tmp_path / "out.fits")
    assert fits.getheader(tmp_path / "out.fits", 0)["GAIN"] == 1.7
    # an LSST-style file's IMAGE header cards are kept too (not its WCS, origin or bookkeeping)
    mask = fits.ImageHDU(np.zeros((10, 12), np.int32), name="MASK")
    fits.HDUList([fits.PrimaryHDU(), ext.copy(), mask]).writeto(tmp_path / "lsst.fits")
    exp = read_exposure(tmp_path / "lsst.fits", variance=np.ones((10, 12)))
    assert exp.metadata["fitsHeader"]["GAIN"] == 1.7 and "EXTNAME" not in exp.metadata["fitsHeader"]


def test_non_standard_header_cards_are_repaired_on_writing(tmp_path, caplog):
    """A lower-case keyword or an unquoted string reads fine; writing it back repairs it instead of failing."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    2",
             "NAXIS1  =                    8", "NAXIS2  =                    6",
             "exptime =                 30.0 / lowercase keyword", "RA      = 12:30:00.0 / unquoted sexagesimal",
             "END"]
    header = "".join(c.ljust(80) for c in cards).encode("ascii")
    data = np.ones((6, 8), ">f4").tobytes()
    (tmp_path / "odd.fits").write_bytes(header + b" " * (-len(header) % 2880) + data + b"\0" * (-len(data) % 2880))
    exp = read_exposure(tmp_path / "odd.fits", variance=np.ones((6, 8)))
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        exp.writeFits(tmp_path / "out.fits")
    assert "header cards ['EXPTIME', 'RA'] are not standard FITS and were repaired on writing" in caplog.text
    primary = fits.getheader(tmp_path / "out.fits", 0)
    assert primary["EXPTIME"] == 30.0 and primary["RA"] == "12:30:00.0"
    # the exposure's own cards were repaired on copies: astropy still finds them to fix
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp.metadata["fitsHeader"].tostring()
    assert any("Fixed 'EXPTIME' card" in str(w.message) for w in caught)
    # a card nothing can mend (not ASCII) is left out, with a warning; the rest is written
    exp.metadata["fitsHeader"] = fits.Header([fits.Card.fromstring("OBSERVER= 'J\u00f6rg'"), ("OBJECT", "M31")])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        exp.writeFits(tmp_path / "out2.fits")
    assert "header cards ['OBSERVER" in caplog.text and "cannot be repaired: they are not written" in caplog.text
    primary = fits.getheader(tmp_path / "out2.fits", 0)
    assert "OBSERVER" not in primary and primary["OBJECT"] == "M31"


@pytest.mark.parametrize("bitpix, scale, expected", [
    (32, {"BSCALE": 0.001, "BZERO": 5.0}, np.float64),   # scaled 32-bit integers: float64, as astropy gives them
    (16, {"BSCALE": 0.5, "BZERO": 3.0}, np.float32),
    (16, {"BZERO": 32768}, np.float32),                  # the unsigned convention: uint16
    (32, {"BLANK": -1}, np.float64),                     # BLANK alone: astropy scales too
    (32, {}, np.float32),
    (-64, {}, np.float64),
    (-32, {"BSCALE": 2.0}, np.float32),
])
def test_exposure_info_gives_the_pixel_type_read_exposure_gives(tmp_path, bitpix, scale, expected):
    dtype = {32: ">i4", 16: ">i2", -64: ">f8", -32: ">f4"}[bitpix]
    img = fits.ImageHDU(name="IMAGE")
    img.header["BITPIX"] = bitpix  # raw stored values, scaled by the cards on reading
    img.header["NAXIS"] = 2
    img.header["NAXIS1"] = 12
    img.header["NAXIS2"] = 10
    for key, value in scale.items():
        img.header[key] = value
    raw = np.arange(120).reshape(10, 12).astype(dtype)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(raw, name="IMAGE"),
                         fits.ImageHDU(np.zeros((10, 12), np.int32), name="MASK"),
                         fits.ImageHDU(np.ones((10, 12), np.float32), name="VARIANCE")])
    for key, value in scale.items():
        hdul["IMAGE"].header[key] = value
    hdul.writeto(tmp_path / "scaled.fits", output_verify="ignore")
    with fits.open(tmp_path / "scaled.fits") as check:  # the file stores what the case says
        assert check["IMAGE"].header["BITPIX"] == bitpix
    read = read_exposure(tmp_path / "scaled.fits").image.dtype
    assert read == expected and read_exposure_info(tmp_path / "scaled.fits").dtype == read


def test_origin_of_a_binned_iraf_section(tmp_path, caplog):
    """LTV gives the origin only with an identity (or no) LTM: a binned section's physical grid is not the parent's."""
    def origin(**cards):
        hdu = fits.PrimaryHDU(np.ones((20, 30), np.float32))
        for key, value in cards.items():
            hdu.header[key] = value
        hdu.writeto(tmp_path / "x.fits", overwrite=True)
        return read_exposure(tmp_path / "x.fits", variance=np.ones((20, 30))).getXY0()

    with caplog.at_level(logging.INFO, logger="psfmatch.io.fits"):
        # CCDSUM = '2 2': LTM = 0.5, LTV = 0.25 (was refused as a damaged, non-integral origin)
        assert origin(LTM1_1=0.5, LTM2_2=0.5, LTV1=0.25, LTV2=0.25) == (0, 0)
    assert "LTV1/LTV2 are not taken as the image origin" in caplog.text and "pass xy0=" in caplog.text
    assert origin(LTM1_1=0.5, LTM2_2=0.5, LTV1=-50.0, LTV2=0.0) == (0, 0)  # was (50, 0)
    assert origin(LTM1_1=1.0, LTM2_2=1.0, LTV1=-50.0, LTV2=-7.0) == (50, 7)
    assert origin(LTV1=-50.0) == (50, 0)
    with pytest.raises(CorruptFileError, match=r"origin \(0.5, -?0.0\) from LTV1/LTV2 is not integral; pass xy0="):
        origin(LTV1=-0.5)
    hdu = fits.PrimaryHDU(np.ones((20, 30), np.float32))
    hdu.header["LTV1"] = -0.5
    hdu.writeto(tmp_path / "y.fits")
    assert read_exposure(tmp_path / "y.fits", variance=np.ones((20, 30)), xy0=(3, 4)).getXY0() == (3, 4)


def test_origin_of_a_binned_section_with_an_alternate_wcs(tmp_path, caplog):
    """The alternate linear WCS A gives the origin only with a unit matrix: a binned section (CDELT1A = 2) had the
    origin CRVAL1A, as though its pixels were the parent's."""
    def origin(**cards):
        hdu = fits.PrimaryHDU(np.ones((20, 30), np.float32))
        hdu.header.update({"CTYPE1A": "LINEAR", "CTYPE2A": "LINEAR", "CRPIX1A": 1.0, "CRPIX2A": 1.0,
                           "CRVAL1A": 40.0, "CRVAL2A": 60.0})
        for key, value in cards.items():
            hdu.header[key] = value
        hdu.writeto(tmp_path / "a.fits", overwrite=True)
        return read_exposure(tmp_path / "a.fits", variance=np.ones((20, 30))).getXY0()

    assert origin() == (40, 60)
    assert origin(CD1_1A=1.0, CD2_2A=1.0) == (40, 60)
    assert origin(CDELT1A=1.0, CDELT2A=1.0, PC1_1A=1.0, PC2_2A=1.0) == (40, 60)
    with caplog.at_level(logging.INFO, logger="psfmatch.io.fits"):
        assert origin(CDELT1A=2.0, CDELT2A=2.0) == (0, 0)  # was (40, 60)
    assert ("CRVAL1A/CRVAL2A are not taken as the image origin: the alternate WCS's matrix [[2.0, 0.0], [0.0, 2.0]] "
            "is not the identity (a binned or transformed section); xy0 = (0, 0); pass xy0=") in caplog.text
    assert origin(CD1_1A=2.0, CD2_2A=2.0) == (0, 0)
    assert origin(PC1_2A=1.0, PC2_1A=-1.0, PC1_1A=0.0, PC2_2A=0.0) == (0, 0)  # rotated by 90 degrees
    with pytest.raises(CorruptFileError, match=r"the origin cards \(CRVAL1A/CRVAL2A and their matrix, LTV1/LTV2 or "
                                               r"LTMi_j\) are not numbers; pass xy0="):
        origin(CDELT1A="two")


def test_signed_16_bit_mask_from_a_file_is_not_sign_extended(tmp_path):
    dq = np.zeros((10, 12), np.int16)
    dq[2, 3] = np.int16(-32768)  # bit 15 only, as a signed BITPIX = 16 plane stores it
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((10, 12), np.float32), name="SCI"),
                  fits.ImageHDU(dq, name="DQ")]).writeto(tmp_path / "dq.fits")
    exp = read_exposure(tmp_path / "dq.fits", hdu="SCI", mask="DQ", variance=np.ones((10, 12)))
    assert int(exp.mask[2, 3]) == 0x8000 and exp.mask.sum() == 0x8000


def test_plane_names_are_checked_before_anything_is_written(tmp_path):
    # (refused when the exposure is made, before any file can be written)
    with pytest.raises(InvalidInputError, match="mask plane name '(bad|BAD)' differs from the plane '(BAD|bad)' "
                                                "only in case, which FITS keywords ignore"):
        Exposure(np.ones((5, 5), np.float32), mask_planes={"BAD": 0, "bad": 1})
    with pytest.raises(InvalidInputError, match=r"mask plane name 'A\*B' holds the characters \['\*'\]"):
        Exposure(np.ones((5, 5), np.float32), mask_planes={"BAD": 0, "A*B": 1})
    exp = Exposure(np.ones((5, 5), np.float32))
    exp.getMask()._planes["A*B"] = 1  # a registry edited behind the checks: still refused when written
    with pytest.raises(InvalidInputError, match=r"mask plane name 'A\*B' holds the characters \['\*'\]"):
        exp.writeFits(tmp_path / "m.fits")
    assert os.listdir(tmp_path) == []
    # the longest name the header can store, and short lower-case ones, come back as written
    exp = Exposure(np.ones((5, 5), np.float32))
    for name in ("Y" * 63, "streak", "SAT CORE"):
        exp.getMask().addMaskPlane(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncated-comment warning from astropy
        exp.writeFits(tmp_path / "m.fits")
    assert read_exposure(tmp_path / "m.fits").getMask().getMaskPlaneDict() == exp.getMask().getMaskPlaneDict()


def test_a_plain_file_with_an_image_hdu_among_others_reads_that_one(tmp_path):
    """[PRIMARY, WEIGHT, IMAGE] without MASK/VARIANCE is a plain image: the HDU named IMAGE, not the first 2-d."""
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.full((6, 8), 7.0, np.float32), name="WEIGHT"),
                  fits.ImageHDU(np.ones((6, 8), np.float32), name="IMAGE")]).writeto(tmp_path / "w.fits")
    exp = read_exposure(tmp_path / "w.fits", variance=np.ones((6, 8)))
    assert np.all(exp.image == 1.0)


def test_writing_repairs_cards_without_touching_the_warning_filters(tmp_path, monkeypatch, caplog):
    """Repairs were told by warnings caught process-wide, which also caught (and hid) other threads' warnings
    and called their standard cards repaired. verify's outcome tells them now."""
    import psfmatch.io.fits as fmod

    def forbidden(*args, **kwargs):
        raise AssertionError("the writer changed the process's warning filters")

    monkeypatch.setattr(fmod, "catch_warnings", forbidden)
    header = fits.Header()
    header.append(fits.Card.fromstring("exptime = 30".ljust(80)))
    header["OBJECT"] = ("M31", "target")
    exp = Exposure(np.ones((6, 8), np.float32), metadata={"fitsHeader": header},
                   mask_planes={"BAD": 0, "A_VERY_LONG_PLANE_NAME_THAT_NEEDS_A_HIERARCH_CARD_TO_FIT": 1})
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        exp.writeFits(tmp_path / "o.fits")
    assert "header cards ['EXPTIME'] are not standard FITS and were repaired" in caplog.text
    monkeypatch.undo()  # (the reader takes astropy's repair warnings out of the filters' reach, under the lock)
    back = read_exposure(tmp_path / "o.fits")
    assert back.metadata["fitsHeader"]["EXPTIME"] == 30 and back.metadata["fitsHeader"]["OBJECT"] == "M31"
    assert back.getMask().getMaskPlaneDict()["A_VERY_LONG_PLANE_NAME_THAT_NEEDS_A_HIERARCH_CARD_TO_FIT"] == 1


# ---------------------------------------------------------------------------
# header cards, WCS and compression (defects found by review)


def test_a_card_changed_after_reading_is_written_with_its_new_value(tmp_path):
    """astropy keeps a card's old text when its value or comment is set: the writer wrote the value read."""
    write_exposure(Exposure(np.zeros((6, 8), np.float32),
                            metadata={"fitsHeader": fits.Header({"EXPTIME": 30.0, "FILTER": "r"})}),
                   tmp_path / "in.fits")
    exp = read_exposure(tmp_path / "in.fits")
    header = exp.metadata["fitsHeader"]
    header["EXPTIME"] = 60.0
    header["FILTER"] = ("i", "corrected")
    header.comments["EXPTIME"] = "two exposures"
    write_exposure(exp, tmp_path / "out.fits")
    back = read_exposure(tmp_path / "out.fits").metadata["fitsHeader"]
    assert back["EXPTIME"] == 60.0 and back.comments["EXPTIME"] == "two exposures"
    assert back["FILTER"] == "i" and back.comments["FILTER"] == "corrected"
    # a header read by astropy and edited before the exposure is made
    fits.PrimaryHDU(np.zeros((6, 8), np.float32), header=fits.Header({"GAIN": 1.0})).writeto(tmp_path / "raw.fits")
    hdr = fits.getheader(tmp_path / "raw.fits")
    hdr["GAIN"] = 4.2
    write_exposure(Exposure(fits.getdata(tmp_path / "raw.fits"), metadata={"fitsHeader": hdr}), tmp_path / "o2.fits")
    assert read_exposure(tmp_path / "o2.fits").metadata["fitsHeader"]["GAIN"] == 4.2
    assert hdr["GAIN"] == 4.2 and len(hdr) == len(fits.getheader(tmp_path / "raw.fits"))  # the caller's, untouched


def _hst_like_file(path, tables=True):
    """A SCI extension with a SIP WCS and a Paper IV lookup-table distortion (CPDISj/DPj, WCSDVARR tables)."""
    h = fits.Header({"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "CRPIX1": 32., "CRPIX2": 32.,
                     "CRVAL1": 120., "CRVAL2": 10., "CD1_1": -1e-5, "CD2_2": 1e-5, "A_ORDER": 2, "B_ORDER": 2,
                     "A_2_0": 1e-6, "B_0_2": 1e-6, "FILTER": "F606W"})
    for ax in (1, 2):
        h["CPDIS%d" % ax] = "Lookup"
        for v in ("EXTVER: %d" % ax, "NAXES: 2", "AXIS.1: 1", "AXIS.2: 2"):
            h.append(fits.Card.fromstring("DP%d     = '%s'" % (ax, v)))
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(np.ones((64, 64), np.float32), h, name="SCI")]
    for ax in (1, 2) if tables else ():
        table = fits.ImageHDU(np.full((8, 8), 0.5 * ax, np.float32), name="WCSDVARR")
        table.header["EXTVER"] = ax
        for k, v in {"CRPIX1": 0., "CRPIX2": 0., "CRVAL1": 0., "CRVAL2": 0., "CDELT1": 8., "CDELT2": 8.}.items():
            table.header[k] = v
        hdus.append(table)
    fits.HDUList(hdus).writeto(path)


def test_a_wcs_with_a_lookup_table_distortion_is_read(tmp_path, caplog):
    """An HST-style SCI header (SIP plus CPDISj/DPj pointing at WCSDVARR tables) lost its whole WCS."""
    _hst_like_file(tmp_path / "flt.fits")
    exp = read_exposure(tmp_path / "flt.fits", variance=np.ones((64, 64)))
    wcs = exp.getWcs()
    assert wcs is not None and wcs.sip is not None and wcs.cpdis1 is not None and wcs.cpdis2 is not None
    with fits.open(tmp_path / "flt.fits") as hdul:
        ref = WCS(hdul["SCI"].header, hdul)
    pix = np.array([[3.0, 40.0], [60.0, 7.5]])
    np.testing.assert_array_equal(wcs.all_pix2world(pix, 0), ref.all_pix2world(pix, 0))
    # the distortion cards are the WCS's: not kept as metadata (they would point at tables the output lacks)
    assert list(exp.metadata["fitsHeader"].keys()) == ["FILTER"]
    # psfmatch's files cannot store the tables: the rest of the WCS is written, and the loss is said
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        exp.writeFits(tmp_path / "out.fits")
    assert "lookup-table distortion (cpdis1, cpdis2) is not written" in caplog.text
    back = read_exposure(tmp_path / "out.fits").getWcs()
    assert back.sip is not None and back.cpdis1 is None
    # without the tables the lookup part is left out, with a warning, and the rest of the WCS is kept
    _hst_like_file(tmp_path / "notables.fits", tables=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        wcs = read_exposure(tmp_path / "notables.fits", variance=np.ones((64, 64))).getWcs()
    assert wcs is not None and wcs.sip is not None and wcs.cpdis1 is None
    assert "notables.fits[SCI]: the WCS's lookup-table distortion (CPDIS1, DP1, CPDIS2, DP2) cannot be read" in \
        caplog.text


def _raw_fits(cards, pad=b" ", tail=b""):
    raw = "".join(c.ljust(80) for c in cards).encode("latin-1")
    raw = raw.ljust(-(-len(raw) // 2880) * 2880, pad)
    data = np.arange(64 * 64, dtype=">f4").tobytes()
    return raw + data.ljust(-(-len(data) // 2880) * 2880, b"\0") + tail


_RAW_BASE = ["SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    2",
             "NAXIS1  =                   64", "NAXIS2  =                   64", "EXPTIME =                  5.0"]


@pytest.mark.parametrize("label, raw, repair", [
    ("nonascii", _raw_fits(_RAW_BASE + ["OBSERVER= 'Jos\xe9'", "END"]), "non-ASCII characters are present"),
    ("zeros", _raw_fits(_RAW_BASE + ["END"], tail=b"\0" * 2880), "Unexpected extra padding at the end of the file"),
    ("nuls", _raw_fits(_RAW_BASE + ["END"], pad=b"\0"), "Header block contains null bytes instead of spaces"),
    ("blank", _raw_fits(_RAW_BASE + ["BLANK   =                  -99", "END"]), "Invalid 'BLANK' keyword in header"),
])
def test_quirks_astropy_repairs_read_the_same_with_warnings_as_errors(tmp_path, caplog, label, raw, repair):
    """README: reading works the same under ``python -W error``; these quirks raised CorruptFileError there."""
    path = tmp_path / f"{label}.fits"
    path.write_bytes(raw)
    read = {}
    for mode in ("ignore", "error"):
        caplog.clear()
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
            warnings.simplefilter(mode)
            read[mode] = read_exposure(path, variance=np.ones((64, 64)))
        # what astropy repaired is logged, naming the file
        assert f"{label}.fits: astropy repaired a non-standard file while reading it: {repair}" in caplog.text
    assert_same_pixels(read["ignore"], read["error"])
    np.testing.assert_array_equal(read["error"].image, np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    assert list(read["error"].metadata["fitsHeader"].items()) == list(read["ignore"].metadata["fitsHeader"].items())
    assert read["error"].metadata["fitsHeader"]["EXPTIME"] == 5.0


def test_damage_astropy_warns_about_still_follows_the_warning_filters(tmp_path):
    """Only the harmless repairs are taken out of the filters' reach: junk after the last HDU is not one."""
    (tmp_path / "zeros.fits").write_bytes(_raw_fits(_RAW_BASE + ["END"], tail=b"\0" * 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_exposure(tmp_path / "zeros.fits", variance=np.ones((64, 64))).image.shape == (64, 64)
    path = tmp_path / "junk.fits"
    path.write_bytes(_raw_fits(_RAW_BASE + ["END"], tail=b"x" * 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CorruptFileError, match=r"junk.fits.*There may be extra bytes after the last HDU"):
            read_exposure(path, variance=np.ones((64, 64)))
    with pytest.warns(fits.verify.VerifyWarning, match="There may be extra bytes after the last HDU"):
        exp = read_exposure(path, variance=np.ones((64, 64)))
    assert exp.image.shape == (64, 64)


def _afw_like_file(path):
    prim = fits.PrimaryHDU()
    for key, value in {"EXPTIME": 30.0, "AR_HDU": 5, "PSF_ID": 3, "HIERARCH SKYWCS_ID": 4,
                       "HIERARCH PHOTOCALIB_ID": 6, "HIERARCH ARCHIVE_ID_SUMMARYSTATS": 7}.items():
        prim.header[key] = value
    hdus = [prim] + [fits.ImageHDU(np.ones((16, 20), dt), name=n)
                     for n, dt in (("IMAGE", np.float32), ("MASK", np.int32), ("VARIANCE", np.float32))]
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="id", format="J", array=[1])], name="ARCHIVE_INDEX"))
    fits.HDUList(hdus).writeto(path)


def test_lsst_archive_pointers_are_not_copied_into_the_output(tmp_path):
    """AR_HDU, PSF_ID... point into an afw file's archive HDUs; in psfmatch's output they pointed at wrong HDUs."""
    _afw_like_file(tmp_path / "calexp.fits")
    archive = {"AR_HDU", "PSF_ID", "SKYWCS_ID", "PHOTOCALIB_ID", "ARCHIVE_ID_SUMMARYSTATS"}
    exp = read_exposure(tmp_path / "calexp.fits", psf=GaussianPsf(15, 15, 1.5))
    assert list(exp.metadata["fitsHeader"].keys()) == ["EXPTIME"]
    exp.writeFits(tmp_path / "matched.fits")
    assert not archive & set(fits.getheader(tmp_path / "matched.fits", 0))
    # a header taken from such a file by astropy: left out on writing too
    with fits.open(tmp_path / "calexp.fits") as hdul:
        exp.metadata["fitsHeader"] = hdul[0].header.copy()
    exp.writeFits(tmp_path / "matched2.fits")
    primary = fits.getheader(tmp_path / "matched2.fits", 0)
    assert not archive & set(primary) and primary["EXPTIME"] == 30.0
    # elsewhere (no AR_HDU) a card named like one is the caller's own
    exp.metadata["fitsHeader"] = fits.Header({"HIERARCH DETECTOR_ID": 12})
    exp.writeFits(tmp_path / "other.fits")
    assert fits.getheader(tmp_path / "other.fits", 0)["DETECTOR_ID"] == 12


def test_an_alternate_wcs_round_trips(tmp_path):
    """A WCS read with ``key="B"`` was written as CTYPE1B... cards and read back as no WCS."""
    header = fits.Header({"CTYPE1B": "RA---TAN", "CTYPE2B": "DEC--TAN", "CRVAL1B": 10., "CRVAL2B": 20.,
                          "CRPIX1B": 30., "CRPIX2B": 30., "CDELT1B": -1e-4, "CDELT2B": 1e-4})
    wcs = WCS(header, key="B")
    write_exposure(Exposure(np.zeros((64, 64), np.float32), wcs=wcs), tmp_path / "alt.fits")
    back = read_exposure(tmp_path / "alt.fits").getWcs()
    assert back is not None and list(back.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    pix = np.array([[0.0, 0.0], [63.0, 17.0]])
    np.testing.assert_allclose(back.wcs_pix2world(pix, 0), wcs.wcs_pix2world(pix, 0), rtol=0, atol=1e-12)
    assert wcs.wcs.alt == "B"  # the exposure's WCS is not changed


def test_a_repeated_keyword_in_an_image_extension_keeps_every_card(tmp_path):
    header = fits.Header()
    header.append(("FILTER", "g", "filter wheel 1"))
    header.append(("FILTER", "open", "filter wheel 2"))
    header.append(("TRIMSEC", "[1:64,1:64]"))
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"FILTER": "prim", "OBSERVER": "me"})),
                  fits.ImageHDU(np.ones((8, 8), np.float32), header, name="SCI")]).writeto(tmp_path / "ext.fits")
    cards = read_exposure(tmp_path / "ext.fits", variance=np.ones((8, 8))).metadata["fitsHeader"].cards
    # the primary's FILTER stands for the keyword; without one in the primary both of the image's are kept
    assert [(c.keyword, c.value) for c in cards] == [("FILTER", "prim"), ("OBSERVER", "me"),
                                                     ("TRIMSEC", "[1:64,1:64]")]
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8), np.float32), header, name="SCI")]).writeto(
        tmp_path / "ext2.fits")
    cards = read_exposure(tmp_path / "ext2.fits", variance=np.ones((8, 8))).metadata["fitsHeader"].cards
    assert [(c.keyword, c.value, c.comment) for c in cards] == [
        ("FILTER", "g", "filter wheel 1"), ("FILTER", "open", "filter wheel 2"), ("TRIMSEC", "[1:64,1:64]", "")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f8"])
def test_an_fz_name_writes_a_lossless_tile_compressed_file(tmp_path, dtype):
    """``.fits.fz`` gave an uncompressed file; now the planes are CompImageHDUs, read back bit for bit."""
    rng = np.random.default_rng(2)
    image = (rng.normal(size=(64, 80)) * 1e5).astype(dtype)
    image[0, :5] = [np.nan, np.inf, -np.inf, -0.0, 1e-40]
    y, x = np.mgrid[:15, :15]
    stamp = np.exp(-((x - 7) ** 2 + (y - 7) ** 2) / 6.0)
    exp = Exposure(image, variance=(rng.uniform(1, 2, image.shape)).astype(dtype), psf=ImagePsf(stamp / stamp.sum()),
                   xy0=(5, -6), metadata={"fitsHeader": fits.Header({"EXPTIME": 3.0})})
    exp.mask[3, 3] = np.int32(-2 ** 31) | 5  # bit 31 too
    exp.mask[2, 9] = 1 << 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_exposure(exp, tmp_path / "e.fits.fz")
        write_exposure(exp, tmp_path / "e.fits")
    with fits.open(tmp_path / "e.fits.fz") as hdul:
        kinds = {h.name: (type(h).__name__, getattr(h, "_compression_type", None)) for h in hdul}
    assert kinds == {"PRIMARY": ("PrimaryHDU", None), "IMAGE": ("CompImageHDU", "GZIP_2"),
                     "MASK": ("CompImageHDU", "RICE_1"), "VARIANCE": ("CompImageHDU", "GZIP_2"),
                     "PSF": ("CompImageHDU", "GZIP_2"), "METADATA": ("BinTableHDU", None)}
    with fits.open(tmp_path / "e.fits.fz", disable_image_compression=True, checksum=True) as hdul:
        assert all(h.verify_checksum() == 1 for h in hdul)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = read_exposure(tmp_path / "e.fits.fz")
    plain = read_exposure(tmp_path / "e.fits")
    for a, b in ((back, plain), (back, exp)):
        assert a.image.dtype == b.image.dtype and a.variance.dtype == b.variance.dtype
        assert a.image.tobytes() == np.ascontiguousarray(b.image, a.image.dtype).tobytes()
        assert a.variance.tobytes() == np.ascontiguousarray(b.variance, a.variance.dtype).tobytes()
        np.testing.assert_array_equal(a.mask, b.mask)
    assert back.getXY0() == exp.getXY0() and back.metadata["fitsHeader"]["EXPTIME"] == 3.0
    np.testing.assert_array_equal(back.getPsf().computeKernelImage((10, 10)),
                                  plain.getPsf().computeKernelImage((10, 10)))
    info = read_exposure_info(tmp_path / "e.fits.fz")
    assert info.dtype == back.image.dtype and info.xy0 == (5, -6) and info.shape == (64, 80)


def test_a_coadd_reads_tile_compressed_inputs(tmp_path):
    pytest.importorskip("dask")
    from psfmatch.batch import coadd

    rng = np.random.default_rng(3)
    paths = {".fits": [], ".fits.fz": []}
    for i in range(2):
        exp = Exposure(rng.normal(size=(40, 50)).astype(np.float32),
                       variance=rng.uniform(1, 2, (40, 50)).astype(np.float32), psf=GaussianPsf(15, 15, 2.0),
                       xy0=(4, 5))
        exp.mask[3, 3] = 1
        for ext, names in paths.items():
            names.append(tmp_path / f"m{i}{ext}")
            write_exposure(exp, names[-1])
    with fits.open(paths[".fits.fz"][0]) as hdul:  # read a window at a time through astropy's section
        assert all(isinstance(hdul[name], fits.CompImageHDU) for name in ("IMAGE", "MASK", "VARIANCE"))
    for ext, names in paths.items():
        coadd(names, tmp_path / f"coadd{ext.replace('.', '_')}.fits", tile_size=16, num_workers=1)
    a, b = read_exposure(tmp_path / "coadd_fits.fits"), read_exposure(tmp_path / "coadd_fits_fz.fits")
    assert_same_pixels(a, b)


def test_the_unread_planes_warning_names_only_what_was_not_read(tmp_path, caplog):
    """With mask= given, only the weight map is said to be unread (the mask was listed too), and the other HDUs'
    pixels are not loaded to find them (a 30-CCD file was decompressed whole to read one CCD)."""
    import logging

    img = np.ones((16, 16), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(np.zeros((16, 16), np.int16),
                                                                                   name="MSK"),
                  fits.ImageHDU(img, name="WGT"), fits.ImageHDU(np.ones((8, 8), np.float32), name="SMALL")]
                 ).writeto(tmp_path / "des.fits")
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        read_exposure(tmp_path / "des.fits", mask="MSK")
    said = [r.getMessage() for r in caplog.records if "are not read" in r.getMessage()]
    assert len(said) == 1 and "HDU(s) WGT, of the image's shape, are not read: give the variance as variance= " \
        "(variance_kind='invvar' for a weight map" in said[0] and "MSK" not in said[0] and "SMALL" not in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        read_exposure(tmp_path / "des.fits", mask=2, variance="WGT", variance_kind="invvar")
    assert not any("are not read" in r.getMessage() for r in caplog.records)
    # only headers are looked at: the other HDUs' data are never loaded
    from astropy.io.fits.hdu.image import _ImageBaseHDU

    loaded = []
    original = _ImageBaseHDU.data.fget

    def spy(self):
        loaded.append(self.name)
        return original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_ImageBaseHDU, "data", property(spy))
        read_exposure(tmp_path / "des.fits", hdu="SCI", variance=np.ones((16, 16)))
    assert set(loaded) <= {"SCI"}


def test_a_mask_header_naming_two_planes_for_one_bit_reads(tmp_path, caplog):
    """An alias card (MP_ALIAS = 0 beside MP_BAD = 0) made the file unreadable once the registries were checked;
    the alias is left out, with a warning."""
    import logging

    path = tmp_path / "dup.fits"
    Exposure(np.ones((8, 8), np.float32)).writeFits(path)
    with fits.open(path, mode="update") as hdul:
        hdul["MASK"].header["MP_ALIAS"] = 0
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        planes = read_exposure(path).getMask().getMaskPlaneDict()
        info = read_exposure_info(path)
    assert planes["BAD"] == 0 and "ALIAS" not in planes and info.mask_planes == planes
    assert "dup.fits[MASK]: mask planes ALIAS (bit 0, also BAD) name a bit another plane has" in caplog.text


def test_hdu_names_only_a_plain_files_image_and_kernel_files_are_refused(tmp_path):
    """hdu= was ignored for psfmatch and LSST-style files (--hdu 7 matched the IMAGE HDU), and a kernel file given
    as an exposure was read as a 27x1 plain image."""
    from psfmatch.errors import UnsupportedFormatError
    from psfmatch.psf import GaussianPsf

    path = tmp_path / "e.fits"
    Exposure(np.ones((16, 16), np.float32), psf=GaussianPsf(9, 9, 1.5)).writeFits(path)
    for hdu in (7, "MASK"):
        with pytest.raises(InvalidInputError, match=rf"hdu={hdu!r} chooses the image of a plain FITS file; this is "
                                                    r"a psfmatch exposure file, whose image is its IMAGE HDU"):
            read_exposure(path, hdu=hdu)
    assert read_exposure(path, hdu="IMAGE").getBBox() == read_exposure(path, hdu=1).getBBox()
    from psfmatch.io import write_kernel
    from psfmatch.kernel.basis import KernelBasis
    from psfmatch.kernel.kernel import LinearCombinationKernel

    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    write_kernel(LinearCombinationKernel(KernelBasis(delta[None], "delta-function"), [[1.0]]), tmp_path / "k.fits")
    with pytest.raises(UnsupportedFormatError, match=r"k\.fits: a psfmatch matching-kernel file \(PMFORMAT = "
                                                     r"'psfmatch-kernel'\), not an exposure"):
        read_exposure(tmp_path / "k.fits")


def test_read_wcs_has_the_image_pixel_shape(tmp_path):
    """read_exposure's WCS had pixel_shape None (NAXISn were removed before WCS(header)): calc_footprint() gave None
    with an astropy warning.  Setting it must not change what is written."""
    exp = make_exposure(wcs=simple_wcs())
    write_exposure(exp, tmp_path / "a.fits")
    back = read_exposure(tmp_path / "a.fits")
    wcs = back.getWcs()
    assert wcs.pixel_shape == (60, 40) and wcs.array_shape == back.image.shape
    assert read_exposure_info(tmp_path / "a.fits").wcs.pixel_shape == (60, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        footprint = wcs.calc_footprint()
    np.testing.assert_allclose(footprint, simple_wcs().calc_footprint(axes=(60, 40)), rtol=1e-12)
    # the read-back exposure writes the same cards (checksums aside) as the one it came from
    write_exposure(back, tmp_path / "b.fits")
    for name in ("PRIMARY", "IMAGE", "MASK", "VARIANCE"):
        cards = [[(c.keyword, c.value) for c in fits.getheader(tmp_path / f, name).cards
                  if c.keyword not in ("CHECKSUM", "DATASUM")] for f in ("a.fits", "b.fits")]
        assert cards[0] == cards[1], name


def test_image_psf_reads_back_bit_for_bit(tmp_path):
    """An ImagePsf's unit-sum array was normalized again on reading: 1 in 20 random arrays changed (by ~4e-19),
    while psf_persist promises an exact round trip."""
    rng = np.random.default_rng(0)
    arrays = [rng.random((int(rng.integers(3, 40)) | 1, int(rng.integers(3, 40)) | 1)) + 0.01 for _ in range(20)]
    psfs = [ImagePsf(a, pixel_scale=0.2) for a in arrays]
    assert any(p.array.sum() != 1.0 for p in psfs)  # the cases renormalizing changed
    for i, psf in enumerate(psfs):
        exp = Exposure(np.ones((8, 8), np.float32), variance=np.ones((8, 8), np.float32), psf=psf)
        write_exposure(exp, tmp_path / f"e{i}.fits")
        back = read_exposure(tmp_path / f"e{i}.fits").getPsf()
        assert type(back) is ImagePsf and back == psf and back.pixel_scale == 0.2
        np.testing.assert_array_equal(back.array, psf.array)
        assert not back.array.flags.writeable
    # an image stored for another model that is not unit-sum is still normalized when read
    class Bright:  # a user's constant model: stored as an image of its kernel
        def computeKernelImage(self, position=None):
            return 3.0 * GaussianPsf(9, 9, 1.5).computeKernelImage(position)

        def isSpatiallyVarying(self):
            return False

    exp = Exposure(np.ones((8, 8), np.float32), variance=np.ones((8, 8), np.float32), psf=Bright())
    write_exposure(exp, tmp_path / "bright.fits")
    back = read_exposure(tmp_path / "bright.fits").getPsf()
    assert back.array.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(back.array, GaussianPsf(9, 9, 1.5).computeKernelImage(), rtol=1e-12)


def test_metadata_keys_that_are_not_strings_are_skipped_with_a_warning(tmp_path, caplog):
    """Non-string keys were written as str(key): 1 and "1" collided and one entry was lost without a word."""
    md = {1: "amp 1 gain 1.5", "1": "first readout", 2.0: "x", "2.0": "y", ("a", 1): "t", "ok": 3}
    exp = Exposure(np.ones((6, 6), np.float32), variance=np.ones((6, 6), np.float32), metadata=md)
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        write_exposure(exp, tmp_path / "e.fits")
    assert re.search(r"metadata entries whose keys are not strings are not written .*: 1 \(int\), 2\.0 \(float\), "
                     r"\('a', 1\) \(tuple\); use string keys", caplog.text)
    back = {k: v for k, v in read_exposure(tmp_path / "e.fits").metadata.items() if k != "fitsHeader"}
    assert back == {"1": "first readout", "2.0": "y", "ok": 3}
    assert exp.metadata == md  # the caller's metadata is untouched


def test_metadata_keys_that_are_not_strings_at_any_depth_are_skipped_with_a_warning(tmp_path, caplog):
    """Nested {1: .., "1": ..} made json.dumps(sort_keys=True) raise a bare TypeError; nested {1: .., 2: ..} came
    back as {"1": .., "2": ..} without a word."""
    import copy

    md = {"stats": {1: "int key", "1": "str key"}, "amps": {1: "A", 2: "B"},
          "rows": [{"gain": 1.5}, {"gain": 1.6, 3: "x"}], "ok": {"a": {"b": [1, {"c": 2}]}}}
    given = copy.deepcopy(md)
    exp = Exposure(np.ones((6, 6), np.float32), variance=np.ones((6, 6), np.float32), metadata=md)
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        write_exposure(exp, tmp_path / "e.fits")
    assert re.search(r"metadata entries whose keys are not strings are not written .*: stats\[1\] \(int\), "
                     r"amps\[1\] \(int\), rows\[1\]\[3\] \(int\); use string keys", caplog.text)
    back = {k: v for k, v in read_exposure(tmp_path / "e.fits").metadata.items() if k != "fitsHeader"}
    assert back == {"ok": {"a": {"b": [1, {"c": 2}]}}}
    assert exp.metadata == given and exp.metadata["amps"] == {1: "A", 2: "B"}  # the caller's metadata is untouched


def test_metadata_in_object_arrays_and_nested_to_the_recursion_limit_is_skipped_not_raised(tmp_path, caplog):
    import logging
    import sys

    from psfmatch.io import read_exposure, write_exposure

    from psfmatch.io.fits import _metadata_to_hdu

    # every depth up to past the recursion limit: the entry is written or skipped, never a bare RecursionError
    # (one depth, which depends on the stack, passed the entry's check and failed the final encoding)
    deep, limit = [], sys.getrecursionlimit()
    for depth in range(1, limit + 10):
        deep = [deep]
        if depth >= limit - 120:
            _metadata_to_hdu({"ok": 1, "deep": deep})
    md = {"ok": 1, "arr": np.array([{1: "a", "1": "b"}], dtype=object), "arr2": np.array([{1: "A"}], dtype=object),
          "deep": deep}
    exposure = Exposure(np.zeros((8, 8), np.float32), metadata=md)
    path = tmp_path / "e.fits"
    with caplog.at_level(logging.WARNING, logger="psfmatch.io.fits"):
        write_exposure(exposure, path)
    assert "arr[0][1] (int)" in caplog.text and "arr2[0][1] (int)" in caplog.text
    back = read_exposure(path).metadata
    assert back.get("ok") == 1 and "arr" not in back and "arr2" not in back


@pytest.mark.parametrize("bad, shown", [(None, "None"), (3, "int 3"), (["e.fits"], r"list \['e.fits'\]")])
def test_a_path_that_is_not_a_path_is_refused_typed_naming_the_argument(tmp_path, bad, shown):
    """None, a number or a list as the path escaped as os.fspath's bare TypeError."""
    exposure = make_exposure(psf=GaussianPsf(11, 11, 1.5))
    calls = [("read_exposure", lambda: read_exposure(bad)), ("read_exposure", lambda: Exposure.readFits(bad)),
             ("read_exposure_info", lambda: read_exposure_info(bad)),
             ("write_exposure", lambda: write_exposure(exposure, bad)),
             ("write_exposure", lambda: exposure.writeFits(bad))]
    for who, call in calls:
        with pytest.raises(InvalidInputError, match=rf"^{who}'s path must be a file path \(str or os\.PathLike\); "
                                                    rf"got {shown}; pass the file's name"):
            call()
    with pytest.raises(InvalidInputError, match=rf"^the output path must be a file path .*; got {shown};"):
        with atomic_write(bad):
            pass
    assert list(tmp_path.iterdir()) == []
    # a pathlib.Path and a bytes name are paths
    write_exposure(exposure, tmp_path / "e.fits")
    assert read_exposure(os.fsencode(tmp_path / "e.fits")).getPsf() == exposure.getPsf()
    assert read_exposure_info(tmp_path / "e.fits").shape == exposure.image.shape
