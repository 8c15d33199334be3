"""astropy NDData / CCDData <-> Exposure."""

from __future__ import annotations

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
    assert exp.getWcs() is nd.wcs
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
    assert back.wcs.wcs.compare(nd.wcs.wcs)
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
