"""astropy NDData / CCDData <-> Exposure."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (CCDData, InverseVariance, NDData, StdDevUncertainty, UnknownUncertainty,
                            VarianceUncertainty)
from astropy.wcs import WCS

from psfmatch import Exposure
from psfmatch.errors import InvalidInputError
from psfmatch.io import exposure_from_nddata, exposure_to_nddata
from psfmatch.psf import GaussianPsf, ImagePsf


def wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, -5.0]
    w.wcs.cdelt = [-1e-4, 1e-4]
    w.wcs.crpix = [8.0, 6.0]
    return w


def same_wcs(a, b):
    """Whether two WCSs are equal once astropy has normalized them (a copy fills in CUNIT 'deg')."""
    return copy.deepcopy(a).wcs.compare(copy.deepcopy(b).wcs)


@pytest.fixture
def nd():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 16))
    mask = np.zeros(data.shape, bool)
    mask[2, 3] = mask[7, 9] = True
    psf = GaussianPsf(9, 9, 1.5).computeKernelImage((0, 0))
    return NDData(data, uncertainty=VarianceUncertainty(np.full(data.shape, 0.25), unit=u.adu ** 2), mask=mask,
                  wcs=wcs(), meta={"OBJECT": "field", "id": 7}, unit=u.adu, psf=psf)


def test_from_nddata_carries_everything(nd):
    snapshot = (nd.data.copy(), nd.mask.copy(), nd.uncertainty.array.copy())
    exp = Exposure.from_nddata(nd)
    np.testing.assert_array_equal(exp.image, nd.data)
    assert exp.image.dtype == np.float64
    bad = exp.getMask().planes_set("BAD")
    np.testing.assert_array_equal(bad, nd.mask)
    assert exp.mask[bad].tolist() == [1, 1]
    np.testing.assert_allclose(exp.variance, 0.25)
    assert exp.metadata["unit"] == "adu" and exp.metadata["OBJECT"] == "field" and exp.getId() == 7
    # a copy of the WCS: editing the exposure's must not move the NDData's
    assert exp.getWcs() is not nd.wcs and same_wcs(exp.getWcs(), nd.wcs)
    exp.getWcs().wcs.crpix = [100.0, 100.0]
    assert list(nd.wcs.wcs.crpix) == [8.0, 6.0]
    assert isinstance(exp.getPsf(), ImagePsf)
    np.testing.assert_allclose(exp.getPsf().computeKernelImage((0, 0)), nd.psf / nd.psf.sum())
    # the NDData was not modified and shares no array with the exposure
    np.testing.assert_array_equal(nd.data, snapshot[0])
    exp.image[0, 0] = 99.0
    exp.mask[0, 0] = 1
    assert nd.data[0, 0] == snapshot[0][0, 0] and not nd.mask[0, 0]


def test_round_trip_through_exposure(nd):
    back = Exposure.from_nddata(nd).to_nddata()
    np.testing.assert_array_equal(back.data, nd.data)
    np.testing.assert_array_equal(back.mask, nd.mask)
    assert isinstance(back.uncertainty, VarianceUncertainty)
    np.testing.assert_array_equal(back.uncertainty.array, nd.uncertainty.array)
    assert back.unit == u.adu and back.uncertainty.unit == u.adu ** 2
    assert back.wcs is not nd.wcs and same_wcs(back.wcs, nd.wcs)
    assert back.meta["OBJECT"] == "field" and "unit" not in back.meta
    np.testing.assert_allclose(back.psf, nd.psf / nd.psf.sum(), rtol=1e-12)


def test_explicit_psf_wins(nd):
    assert Exposure.from_nddata(nd, psf=GaussianPsf(5, 5, 1.0)).getPsf() == GaussianPsf(5, 5, 1.0)


@pytest.mark.parametrize("unc, expected", [
    (StdDevUncertainty(np.full((3, 4), 0.5)), 0.25),
    (InverseVariance(np.full((3, 4), 4.0)), 0.25),
    (VarianceUncertainty(np.full((3, 4), 0.25)), 0.25),
    # units converted to the data unit (Jy): 500 mJy = 0.5 Jy, 0.25e6 mJy^2 = 0.25 Jy^2, 4e-6 mJy^-2 = 4 Jy^-2
    (StdDevUncertainty(np.full((3, 4), 500.0), unit=u.mJy), 0.25),
    (VarianceUncertainty(np.full((3, 4), 0.25e6), unit=u.mJy ** 2), 0.25),
    (InverseVariance(np.full((3, 4), 4e-6), unit=u.mJy ** -2), 0.25),
])
def test_uncertainty_kinds_and_units(unc, expected):
    exp = Exposure.from_nddata(NDData(np.ones((3, 4)), uncertainty=unc, unit=u.Jy))
    np.testing.assert_allclose(exp.variance, expected, rtol=1e-12)


def test_zero_inverse_variance_is_infinite_variance():
    ivar = np.full((3, 4), 4.0)
    ivar[1, 1] = 0.0
    exp = Exposure.from_nddata(NDData(np.ones((3, 4)), uncertainty=InverseVariance(ivar)))
    assert np.isinf(exp.variance[1, 1]) and exp.variance[0, 0] == 0.25


def test_integer_mask_and_bad_planes():
    bits = np.zeros((4, 4), np.int32)
    bits[0, 0] = 1 << 5  # DETECTED: not bad
    bits[1, 1] = 1 << 1  # SAT
    exp = Exposure.from_nddata(NDData(np.zeros((4, 4)), mask=bits))
    np.testing.assert_array_equal(exp.mask, bits)
    nd = exp.to_nddata()
    assert nd.mask[1, 1] and not nd.mask[0, 0] and nd.mask.sum() == 1
    assert exp.to_nddata(bad_planes=["DETECTED"]).mask[0, 0]
    assert not exp.to_nddata(bad_planes=[]).mask.any()
    m = Exposure.from_nddata(NDData(np.zeros((4, 4)), mask=np.eye(4, dtype=bool)), mask_plane="NO_DATA")
    assert m.getMask().planes_set("NO_DATA").sum() == 4
    wide = bits.astype(np.int64)
    wide[2, 2] = 1 << 40  # a bit an int32 mask cannot hold: refused, not dropped
    with pytest.raises(InvalidInputError, match="mask values span 0..1099511627776: bits above 31 are set"):
        Exposure.from_nddata(NDData(np.zeros((4, 4)), mask=wide))


def test_ccddata_both_ways(tmp_path):
    ccd = CCDData(np.arange(20.0).reshape(4, 5), unit="electron", uncertainty=StdDevUncertainty(np.full((4, 5), 2.0)),
                  mask=np.zeros((4, 5), bool), meta=fits.Header({"EXPTIME": 30.0}))
    exp = Exposure.from_nddata(ccd, xy0=(3, 4))
    assert exp.getXY0() == (3, 4)
    np.testing.assert_allclose(exp.variance, 4.0)
    assert exp.metadata["fitsHeader"]["EXPTIME"] == 30.0 and exp.metadata["unit"] == "electron"
    out = exp.to_nddata(ccd=True)
    assert isinstance(out, CCDData) and out.unit == u.electron
    np.testing.assert_array_equal(out.data, ccd.data)
    # and the exposure still goes to FITS with its header
    exp.writeFits(tmp_path / "e.fits")
    assert Exposure.readFits(tmp_path / "e.fits").metadata["fitsHeader"]["EXPTIME"] == 30.0


def test_errors():
    with pytest.raises(InvalidInputError, match="needs an astropy NDData or CCDData; got ndarray"):
        exposure_from_nddata(np.ones((3, 3)))
    with pytest.raises(InvalidInputError, match=r"needs 2-d data; got shape \(2, 3, 3\)"):
        Exposure.from_nddata(NDData(np.ones((2, 3, 3))))
    with pytest.raises(InvalidInputError, match="UnknownUncertainty cannot be converted to a variance"):
        Exposure.from_nddata(NDData(np.ones((3, 3)), uncertainty=UnknownUncertainty(np.ones((3, 3)))))
    # astropy refuses such an NDData itself; the converter checks too (a bare uncertainty object)
    from psfmatch.io.nddata import _variance_from_uncertainty

    with pytest.raises(InvalidInputError, match="unit s does not match the data unit Jy"):
        _variance_from_uncertainty(StdDevUncertainty(np.ones((3, 3)), unit=u.s), u.Jy, (3, 3))
    with pytest.raises(InvalidInputError, match="gives negative variances"):
        Exposure.from_nddata(NDData(np.ones((3, 3)), uncertainty=VarianceUncertainty(-np.ones((3, 3)))))
    with pytest.raises(InvalidInputError, match="mask must be boolean or integer bits"):
        Exposure.from_nddata(NDData(np.ones((3, 3)), mask=np.ones((3, 3))))
    with pytest.raises(InvalidInputError, match=r"CCDData needs a unit .*metadata\['unit'\]"):
        Exposure(np.ones((3, 3), np.float32)).to_nddata(ccd=True)
    with pytest.raises(InvalidInputError, match="to_nddata needs an Exposure"):
        exposure_to_nddata(np.ones((3, 3)))


def test_exposure_from_fits_goes_to_ccddata_and_back(tmp_path):
    """``meta`` is a FITS Header again (as ``from_nddata`` took it), so ``CCDData.write`` keeps the cards."""
    hdu = fits.PrimaryHDU(np.ones((20, 30), np.float32))
    hdu.header["BUNIT"] = "adu"
    hdu.header["OBJECT"] = ("M31", "target")
    hdu.writeto(tmp_path / "in.fits")
    exp = Exposure.readFits(tmp_path / "in.fits", variance=np.ones((20, 30)))
    exp.metadata["fitsHeader"]["FILTER"] = "i DECam"
    exp.metadata["filter"] = "r"       # a scalar entry: a card of its own, beside the header's FILTER
    exp.metadata["qa"] = {"a": 1}      # not a card value: left out, with a warning
    ccd = exp.to_nddata(ccd=True)
    assert isinstance(ccd.meta, fits.Header) and ccd.meta["OBJECT"] == "M31"
    assert ccd.meta["FILTER"] == "i DECam" and ccd.meta["PMMETA filter"] == "r"
    assert "qa" not in ccd.meta and "fitsHeader" not in ccd.meta
    assert "PMMETA filter" not in exp.metadata["fitsHeader"]  # the exposure's header is not changed
    ccd.write(tmp_path / "ccd.fits")
    back = CCDData.read(tmp_path / "ccd.fits")
    assert back.header["OBJECT"] == "M31" and back.unit == u.adu
    # and back to an exposure, through the file: the entry and the card both as they were
    round_trip = Exposure.from_nddata(back)
    assert round_trip.metadata["filter"] == "r" and round_trip.metadata["fitsHeader"]["FILTER"] == "i DECam"
    assert not any(k.startswith("PMMETA") for k in round_trip.metadata["fitsHeader"])
    # NDData with a Header -> Exposure -> NDData: the same cards at the top level of meta
    ccd2 = CCDData(np.ones((20, 30)), unit="adu", meta=fits.Header({"OBJECT": "M31", "EXPTIME": 30.0}))
    again = Exposure.from_nddata(ccd2).to_nddata(ccd=True)
    assert again.meta["OBJECT"] == "M31" and again.meta["EXPTIME"] == 30.0


@pytest.mark.parametrize("text, unit", [
    ("ELECTRONS/S", u.electron / u.s), ("ELECTRONS", u.electron), ("COUNTS/S", u.count / u.s),
    ("counts", u.count), ("ADU", u.adu), ("e-/s", u.electron / u.s), ("adu", u.adu), ("MJy/sr", u.MJy / u.sr),
    ("nanomaggy", u.nanomaggy), ("DN", u.dn),
])
def test_fits_bunit_strings(text, unit):
    nd = Exposure(np.ones((4, 4), np.float32), variance=np.full((4, 4), 4.0), metadata={"unit": text}).to_nddata()
    assert nd.unit == unit and nd.uncertainty.unit == unit ** 2
    np.testing.assert_allclose(nd.uncertainty.array, 4.0)


def test_a_unit_astropy_does_not_know_keeps_its_text():
    nd = Exposure(np.ones((4, 4), np.float32), variance=np.full((4, 4), 4.0),
                  metadata={"unit": "MAGGIES/PIXEL"}).to_nddata()
    assert isinstance(nd.unit, u.UnrecognizedUnit) and nd.unit.to_string() == "MAGGIES/PIXEL"
    # astropy cannot square such a unit: the uncertainty is a standard deviation in it
    assert isinstance(nd.uncertainty, StdDevUncertainty) and nd.uncertainty.unit == nd.unit
    back = Exposure.from_nddata(nd)
    assert back.metadata["unit"] == "MAGGIES/PIXEL"
    np.testing.assert_allclose(back.variance, 4.0)
    # an astropy UnrecognizedUnit on NDData with a standard deviation, with or without its unit
    odd = u.Unit("FLUX/S", parse_strict="silent")
    for unc in (StdDevUncertainty(np.full((4, 4), 2.0), unit=odd), StdDevUncertainty(np.full((4, 4), 2.0))):
        exp = Exposure.from_nddata(NDData(np.ones((4, 4)), unit=odd, uncertainty=unc))
        np.testing.assert_allclose(exp.variance, 4.0)
        assert exp.metadata["unit"] == "FLUX/S"
    # astropy refuses such an NDData itself; the converter checks too (a bare uncertainty object)
    from psfmatch.io.nddata import _variance_from_uncertainty

    other = u.Unit("OTHER", parse_strict="silent")
    with pytest.raises(InvalidInputError, match="unit OTHER cannot be related to the data unit FLUX/S"):
        _variance_from_uncertainty(StdDevUncertainty(np.ones((4, 4)), unit=other), odd, (4, 4))
    with pytest.raises(InvalidInputError, match="unit FLUX/S cannot be related to the data unit FLUX/S .*without a "
                                                "unit"):
        _variance_from_uncertainty(VarianceUncertainty(np.ones((4, 4)), unit=odd), odd, (4, 4))


def test_the_origin_round_trips_through_nddata_and_ccddata_files(tmp_path):
    exp = Exposure(np.ones((5, 6), np.float32), psf=GaussianPsf(9, 9, 1.5), xy0=(1000, 3000),
                   metadata={"unit": "adu", "id": 4})
    nd = exp.to_nddata()
    assert nd.meta["LTV1"] == -1000 and nd.meta["LTV2"] == -3000 and nd.meta["id"] == 4
    back = Exposure.from_nddata(nd)
    assert back.getXY0() == (1000, 3000) and "LTV1" not in back.metadata and back.getId() == 4
    assert Exposure.from_nddata(nd, xy0=(1, 2)).getXY0() == (1, 2)
    # CCDData.write keeps the cards, CCDData.read gives them back
    exp.to_nddata(ccd=True).write(tmp_path / "ccd.fits")
    assert Exposure.from_nddata(CCDData.read(tmp_path / "ccd.fits")).getXY0() == (1000, 3000)
    assert "LTV1" not in Exposure(np.ones((2, 2), np.float32)).to_nddata().meta
    with pytest.raises(InvalidInputError, match=r"NDData meta: the image origin \(0.5, -?0.0\) from LTV1/LTV2 is not "
                                                r"integral; pass xy0="):
        Exposure.from_nddata(NDData(np.ones((2, 2)), meta={"ltv1": -0.5, "LTV2": 0}))


@pytest.mark.parametrize("kwargs, message", [
    ({"uncertainty": StdDevUncertainty(np.ones((5, 5)))}, r"uncertainty has shape \(5, 5\), which does not match "
                                                          r"the data's shape \(10, 12\)"),
    ({"mask": np.zeros((5, 5), bool)}, r"mask has shape \(5, 5\), which does not match the data's shape \(10, 12\)"),
    ({"mask": np.zeros((2, 10, 12), bool)}, r"mask has shape \(2, 10, 12\), which does not match"),
])
def test_uncertainty_and_mask_of_another_shape_are_refused(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        Exposure.from_nddata(NDData(np.ones((10, 12)), **kwargs))
    # a mask that broadcasts (one row for every row) is still taken
    exp = Exposure.from_nddata(NDData(np.ones((3, 4)), mask=np.array([True, False, False, False])))
    assert exp.getMask().planes_set("BAD")[:, 0].all() and exp.getMask().planes_set("BAD").sum() == 3


def test_bad_planes_must_be_planes_of_the_mask():
    """A misspelt plane in bad_planes was ignored: the NDData mask then masked nothing."""
    bits = np.zeros((4, 4), np.int32)
    bits[2, 3] = 1 << 1  # SAT
    exp = Exposure(np.ones((4, 4), np.float32), mask=bits)
    with pytest.raises(InvalidInputError, match=r"unknown mask plane 'SATT'; this mask has \['BAD', 'CR', "):
        exp.to_nddata(bad_planes=["SATT"])
    with pytest.raises(InvalidInputError, match=r"unknown mask planes 'SATT', 'BADD'"):
        exposure_to_nddata(exp, bad_planes=("SAT", "SATT", "BADD"))
    assert exp.to_nddata(bad_planes=["SAT"]).mask.sum() == 1
    assert exp.to_nddata(bad_planes="SAT").mask[2, 3]  # one name, not its letters


def test_to_nddata_with_a_plane_at_bit_31():
    """The default bad planes include every plane; one at bit 31 made to_nddata raise OverflowError."""
    exp = Exposure(np.ones((4, 4), np.float32))
    bit = [exp.getMask().addMaskPlane(f"P{i}") for i in range(23)][-1]
    assert bit == 31
    exp.mask[1, 2] |= exp.getMask().getPlaneBitMask("P22")
    nd = exp.to_nddata()
    assert nd.mask[1, 2] and nd.mask.sum() == 1
    assert exp.to_nddata(bad_planes=["P22"]).mask[1, 2] and not exp.to_nddata(bad_planes=["BAD"]).mask.any()


def test_without_uncertainty_a_variance_is_estimated_with_a_warning(caplog):
    """An NDData without uncertainty gave a variance of 0 (a coadd of such exposures was empty); as read_exposure."""
    rng = np.random.default_rng(1)
    ccd = CCDData(rng.normal(100.0, 5.0, size=(128, 128)).astype(np.float32), unit="adu")
    with caplog.at_level("WARNING", logger="psfmatch"):
        exp = Exposure.from_nddata(ccd)
    assert exp.variance.dtype == np.float32 and np.all(exp.variance == exp.variance[0, 0])
    np.testing.assert_allclose(exp.variance[0, 0], 25.0, rtol=0.1)  # the pixels' scatter, 5 ** 2
    assert ("the NDData has no uncertainty: no variance plane given; using a constant variance" in caplog.text
            and "Give it one (a VarianceUncertainty, StdDevUncertainty or InverseVariance) for a real one"
            in caplog.text)
    assert "Pass variance=" not in caplog.text  # (read_exposure's remedy)
    # integer data: estimated in the image's float type
    counts = Exposure.from_nddata(NDData(rng.poisson(400.0, size=(64, 64)).astype(np.int16)))
    np.testing.assert_allclose(counts.variance, 400.0, rtol=0.15)
    with pytest.raises(InvalidInputError, match=r"NDData has no uncertainty: the image has no finite pixel"):
        Exposure.from_nddata(NDData(np.full((3, 4), np.nan)))


def test_default_mask_flags_bits_without_a_plane_name():
    """HST DQ bits (512, 16384) that psfmatch has no name for came back unmasked from to_nddata."""
    dq = np.zeros((8, 8), np.int32)
    dq[5, 5] = 1 << 9
    dq[6, 6] = 1 << 14
    dq[7, 7] = 1       # BAD
    dq[1, 1] = 1 << 5  # DETECTED: not bad
    dq[2, 2] = (1 << 5) | (1 << 9)  # DETECTED and an unnamed flag: bad
    exp = Exposure.from_nddata(NDData(np.ones((8, 8)), mask=dq, uncertainty=VarianceUncertainty(np.ones((8, 8)))))
    nd = exp.to_nddata()
    np.testing.assert_array_equal(nd.mask, (dq & ~(1 << 5)) != 0)
    assert nd.mask.sum() == 4 and not nd.mask[1, 1]
    # named planes only when asked for
    np.testing.assert_array_equal(exp.to_nddata(bad_planes=["BAD"]).mask, dq == 1)


def test_metadata_keys_differing_in_case_round_trip(tmp_path, caplog):
    """Entries 'exptime' and 'EXPTIME' made from_nddata raise KeyError on the header to_nddata wrote."""
    exp = Exposure(np.ones((3, 4), np.float32), variance=np.ones((3, 4)),
                   metadata={"fitsHeader": fits.Header({"OBJECT": "m31"}), "exptime": 30.0, "EXPTIME": 31.0,
                             "unit": "adu"})
    ccd = exp.to_nddata(ccd=True)
    assert [c.keyword for c in ccd.meta.cards if c.keyword.startswith("PMMETA")] == ["PMMETA exptime",
                                                                                    "PMMETA EXPTIME"]
    for nd in (ccd, CCDData.read(_written(ccd, tmp_path / "ccd.fits"))):  # and through a file
        back = Exposure.from_nddata(nd)
        assert back.metadata["exptime"] == 30.0 and back.metadata["EXPTIME"] == 31.0
        assert back.metadata["fitsHeader"]["OBJECT"] == "m31"
        assert not any(k.startswith("PMMETA") for k in back.metadata["fitsHeader"])
    # a repeated card: the first value is kept, with a warning
    h = fits.Header([("OBJECT", "m31"), ("HIERARCH PMMETA gain", 1.0), ("HIERARCH PMMETA gain", 2.0)])
    with caplog.at_level("WARNING", logger="psfmatch"):
        back = Exposure.from_nddata(NDData(np.ones((3, 4)), meta=h, uncertainty=VarianceUncertainty(np.ones((3, 4)))))
    assert back.metadata["gain"] == 1.0 and list(back.metadata["fitsHeader"]) == ["OBJECT"]
    assert "'HIERARCH PMMETA gain' is repeated; keeping its first value 1.0, not 2.0" in caplog.text


def _written(ccd, path):
    ccd.write(path)
    return path


def test_units_from_bunit_and_dimensionless_are_kept():
    """A header BUNIT (NDData without unit) vanished; a dimensionless unit came back as no unit."""
    hdr = fits.Header({"BUNIT": "MJy/sr", "FILTER": "IRAC1"})
    exp = Exposure.from_nddata(NDData(np.ones((3, 4)), meta=hdr, uncertainty=VarianceUncertainty(np.ones((3, 4)))))
    assert exp.metadata["unit"] == "MJy/sr" and "BUNIT" not in exp.metadata["fitsHeader"]
    back = exp.to_nddata()
    assert back.unit == u.MJy / u.sr and back.uncertainty.unit == (u.MJy / u.sr) ** 2
    # the NDData's own unit wins over its header's
    ccd = CCDData(np.ones((3, 4)), unit="electron", meta=hdr, uncertainty=VarianceUncertainty(np.ones((3, 4))))
    assert Exposure.from_nddata(ccd).metadata["unit"] == "electron"
    # a dimensionless CCDData (a flat field) stays dimensionless, as CCDData too
    flat = CCDData(np.ones((3, 4)), unit=u.dimensionless_unscaled, uncertainty=VarianceUncertainty(np.ones((3, 4))))
    exp = Exposure.from_nddata(flat)
    assert exp.metadata["unit"] == ""
    assert exp.to_nddata().unit == u.dimensionless_unscaled
    out = exp.to_nddata(ccd=True)
    assert isinstance(out, CCDData) and out.unit == u.dimensionless_unscaled
    assert Exposure(np.ones((3, 4), np.float32)).to_nddata().unit is None  # no "unit" entry: no unit


def test_metadata_that_cannot_be_copied_is_refused_by_name(tmp_path):
    """A lock or an open file in the metadata raised a bare TypeError from copy.deepcopy."""
    import threading

    with pytest.raises(InvalidInputError, match=r"the NDData's meta cannot be copied to the exposure's metadata .*"
                       r"remove or convert the entries \['lock'\]"):
        Exposure.from_nddata(NDData(np.ones((3, 4)), meta={"lock": threading.Lock(), "id": 1}))
    exp = Exposure(np.ones((3, 4), np.float32))
    with open(tmp_path / "log.txt", "w") as handle:
        exp.metadata["log"] = handle
        with pytest.raises(InvalidInputError, match=r"the exposure's metadata cannot be copied to the NDData's meta "
                           r".*remove or convert the entries \['log'\]"):
            exposure_to_nddata(exp)


@pytest.mark.parametrize("cls, value", [(StdDevUncertainty, -2.0), (InverseVariance, -0.25),
                                        (VarianceUncertainty, -4.0)])
def test_negative_uncertainties_are_refused(cls, value):
    """A negative standard deviation (squared) or inverse variance (made inf) was taken silently."""
    arr = np.ones((3, 4))
    arr[2, 1] = value
    with pytest.raises(InvalidInputError, match=rf"its {cls.__name__} holds 1 negative value\(s\), the first "
                                                rf"{value:g} at pixel \(x=1, y=2\); give values >= 0"):
        Exposure.from_nddata(NDData(np.ones((3, 4)), uncertainty=cls(arr)))


@pytest.mark.parametrize("bad_planes, shown", [(3, "int 3"), ([1, "BAD"], r"list \[1, 'BAD'\]")])
def test_bad_planes_of_the_wrong_type_are_refused(bad_planes, shown):
    """bad_planes=3 raised a bare TypeError."""
    with pytest.raises(InvalidInputError, match=rf"bad_planes must be a mask plane name or a sequence of names "
                                                rf"\(e.g. \['BAD', 'SAT'\]\); got {shown}"):
        exposure_to_nddata(Exposure(np.ones((3, 4), np.float32)), bad_planes=bad_planes)


def test_a_cut_out_gets_a_fits_wcs_of_its_own(tmp_path):
    """``nd[50:150, 60:160]`` carries astropy's sliced WCS wrapper: it was kept as is and write_exposure then
    failed ("'HighLevelWCSWrapper' object has no attribute 'to_header'")."""
    from astropy.nddata import NDDataRef

    from psfmatch.io import read_exposure, write_exposure

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [100, 100]
    w.wcs.crval = [150, 2]
    w.wcs.cdelt = [-7.3e-5, 7.3e-5]
    nd = NDDataRef(np.zeros((200, 200)), uncertainty=VarianceUncertainty(np.ones((200, 200))), wcs=w)
    cut = nd[40:, 50:][10:110, 10:110]  # nested slices: nd[50:150, 60:160]
    exp = exposure_from_nddata(cut, xy0=(60, 50))
    got = exp.getWcs()
    assert isinstance(got, WCS) and got.pixel_shape == (100, 100)
    x, y = np.array([0.0, 99.0, 0.0, 37.0]), np.array([0.0, 0.0, 99.0, 61.0])
    np.testing.assert_allclose(got.pixel_to_world_values(x, y), cut.wcs.low_level_wcs.pixel_to_world_values(x, y),
                               rtol=1e-13)
    np.testing.assert_allclose(got.pixel_to_world_values(x, y), w.pixel_to_world_values(x + 60, y + 50), rtol=1e-13)
    assert list(w.wcs.crpix) == [100, 100]  # the NDData's WCS is untouched
    write_exposure(exp, tmp_path / "cut.fits")
    back = read_exposure(tmp_path / "cut.fits").getWcs()
    np.testing.assert_allclose(back.pixel_to_world_values(x, y), w.pixel_to_world_values(x + 60, y + 50), rtol=1e-13)
    # a plane of a cube: the plane's axis is dropped, the sky kept
    w3 = WCS(naxis=3)
    w3.wcs.ctype = ["RA---TAN", "DEC--TAN", "WAVE"]
    w3.wcs.crpix = [100, 100, 1]
    w3.wcs.crval = [150, 2, 5e-7]
    w3.wcs.cdelt = [-7.3e-5, 7.3e-5, 1e-9]
    cube = NDDataRef(np.zeros((5, 200, 200)), uncertainty=VarianceUncertainty(np.ones((5, 200, 200))), wcs=w3)
    plane = exposure_from_nddata(cube[2, 10:20, 30:50]).getWcs()
    assert plane.naxis == 2 and list(plane.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    np.testing.assert_allclose(plane.pixel_to_world_values(3, 4), w3.pixel_to_world_values(33, 14, 2)[:2],
                               rtol=1e-13)
    # a cut through the sky axes (x fixed: wavelength against declination) has no 2-d FITS WCS: refused
    with pytest.raises(InvalidInputError, match=r"the NDData's WCS is a slice \(SlicedLowLevelWCS\) of a WCS "
                                                r"\(astropy.wcs.wcs.WCS\) that psfmatch cannot turn into a FITS WCS "
                                                r".* or set nd.wcs = None"):
        exposure_from_nddata(cube[:, :, 7])


def test_a_wcs_other_than_astropy_wcs_is_refused():
    """Any other WCS object was kept and failed only when the matched exposure was written."""
    from astropy.wcs.wcsapi import BaseLowLevelWCS

    class PixelWcs(BaseLowLevelWCS):  # a minimal non-FITS WCS, as gwcs's are
        pixel_n_dim = world_n_dim = 2
        world_axis_physical_types = [None, None]
        world_axis_units = ["", ""]
        world_axis_object_components = [("x", 0, "value"), ("y", 0, "value")]
        world_axis_object_classes = {"x": (float, (), {}), "y": (float, (), {})}

        def pixel_to_world_values(self, *pixel):
            return pixel

        def world_to_pixel_values(self, *world):
            return world

    nd = NDData(np.ones((4, 5)), uncertainty=VarianceUncertainty(np.ones((4, 5))), wcs=PixelWcs())
    with pytest.raises(InvalidInputError, match=r"the NDData's WCS is a .*PixelWcs, not an astropy.wcs.WCS, which "
                                                r"psfmatch needs .* or set nd.wcs = None"):
        exposure_from_nddata(nd)
    for bad in ("WCS", nd.wcs, fits.Header({"CTYPE1": "RA---TAN"})):
        with pytest.raises(InvalidInputError, match=r"an exposure's WCS must be an astropy.wcs.WCS; got .*: convert "
                                                    r"it .* or pass wcs=None"):
            Exposure(np.ones((4, 5), np.float32), wcs=bad)
        exp = Exposure(np.ones((4, 5), np.float32), wcs=wcs())
        with pytest.raises(InvalidInputError, match=r"an exposure's WCS must be an astropy.wcs.WCS"):
            exp.setWcs(bad)
        assert isinstance(exp.getWcs(), WCS)  # unchanged by the refused call
