"""Adversarial review of the astropy NDData / CCDData conversions, through ``run()`` and back.

Pins what the NDData path must give (the Exposure path's numbers exactly, the flux and variance scaling of
``kernelSum``, byte orders, non-finite uncertainties, FITS round trips) and the defects the review found, fixed.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.wcs import WCS, Sip

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.errors import InvalidInputError, PsfMatchWarning
from psfmatch.image import Mask
from psfmatch.psf import GaussianPsf

N = 64
SIGMA_IN, SIGMA_REF = 1.5, 2.5
FLUX = 1000.0


def _star(n=N, flux=FLUX, sky=10.0):
    y, x = np.mgrid[:n, :n]
    r2 = (x - 31.7) ** 2 + (y - 32.4) ** 2
    return flux * np.exp(-r2 / (2 * SIGMA_IN ** 2)) / (2 * np.pi * SIGMA_IN ** 2) + sky


def _task(kernel_size=11):
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.kernelSize = kernel_size
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = N
    return ModelPsfMatchTask(config=config)


def _match(exposure, kernel_sum=1.0, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PsfMatchWarning)
        return _task(**kwargs).run(exposure, GaussianPsf(21, 21, SIGMA_REF), kernelSum=kernel_sum).psfMatchedExposure


def _wcs(sip=False):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, -5.0]
    w.wcs.cdelt = [-1e-4, 1e-4]
    w.wcs.crpix = [30.0, 30.0]
    if sip:
        a, b = np.zeros((3, 3)), np.zeros((3, 3))
        a[2, 0], b[0, 2] = 1e-5, 2e-5
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


def _core_flux(arr, half=14):
    c = N // 2
    return float(np.sum(arr[c - half:c + half, c - half:c + half]))


# --------------------------------------------------------------------------------------------------------------
# correct behaviour, pinned


def test_ccddata_path_gives_the_exposure_path_numbers_exactly():
    """CCDData (StdDev uncertainty, boolean mask, Header meta) -> run -> CCDData equals the Exposure path bit for bit;
    the star's flux is kernelSum times the input's and MAGZERO moves by 2.5 log10(kernelSum)."""
    img = _star()
    std = np.full(img.shape, 2.0)
    bad = np.zeros(img.shape, bool)
    bad[10, 50] = True
    psf = GaussianPsf(21, 21, SIGMA_IN)
    ccd = CCDData(img, unit="adu", uncertainty=StdDevUncertainty(std), mask=bad, wcs=_wcs(),
                  meta=fits.Header({"MAGZERO": 25.0, "OBJECT": "M31"}))
    out = _match(Exposure.from_nddata(ccd, psf=psf), kernel_sum=2.0)
    ref = _match(Exposure(img, Mask.from_bool(bad, "BAD"), std ** 2, psf=psf, wcs=_wcs(),
                          metadata={"MAGZERO": 25.0}), kernel_sum=2.0)
    np.testing.assert_array_equal(out.image, ref.image)
    np.testing.assert_array_equal(out.variance, ref.variance)
    np.testing.assert_array_equal(out.mask, ref.mask)
    back = out.to_nddata(ccd=True)
    np.testing.assert_array_equal(back.uncertainty.array, ref.variance)
    assert back.unit == u.adu and back.uncertainty.unit == u.adu ** 2
    # physics: flux (sky-subtracted) scales with kernelSum; the zero point follows it
    assert _core_flux(back.data - 2 * 10.0) == pytest.approx(2 * FLUX, rel=2e-3)
    assert back.meta["MAGZERO"] == pytest.approx(25.0 + 2.5 * math.log10(2.0), abs=1e-12)
    assert ref.metadata["MAGZERO"] == pytest.approx(back.meta["MAGZERO"], abs=1e-12)
    assert back.meta["OBJECT"] == "M31" and ccd.meta["MAGZERO"] == 25.0  # the input's header is untouched


def test_kernel_sum_scales_data_by_s_and_variance_by_s_squared_through_nddata():
    nd = NDData(_star(), uncertainty=InverseVariance(np.full((N, N), 0.25)), unit="electron", psf=GaussianPsf(
        21, 21, SIGMA_IN).computeKernelImage((32, 32)))
    one = _match(Exposure.from_nddata(nd)).to_nddata()
    two = _match(Exposure.from_nddata(nd), kernel_sum=2.0).to_nddata()
    ok = np.isfinite(one.data)
    assert ok.sum() > 0.5 * N * N
    np.testing.assert_allclose(two.data[ok], 2 * one.data[ok], rtol=1e-12)
    np.testing.assert_allclose(two.uncertainty.array[ok], 4 * one.uncertainty.array[ok], rtol=1e-12)
    # a flat input variance V gives sum(K^2) V, and sum(K^2) < (sum K)^2 = 1 for a spread kernel
    v = one.uncertainty.array[N // 2, N // 2]
    assert 0.0 < v < 4.0
    np.testing.assert_array_equal(one.mask, two.mask)


@pytest.mark.parametrize("cls, value, base", [(StdDevUncertainty, np.nan, 2.0), (StdDevUncertainty, np.inf, 2.0),
                                              (InverseVariance, 0.0, 0.25), (InverseVariance, np.nan, 0.25),
                                              (VarianceUncertainty, np.nan, 4.0)])
def test_a_pixel_without_a_valid_uncertainty_is_no_data_over_the_kernel_in_the_output(cls, value, base):
    arr = np.full((N, N), base)
    arr[40, 20] = value
    exp = Exposure.from_nddata(NDData(_star(), uncertainty=cls(arr), unit="adu"), psf=GaussianPsf(21, 21, SIGMA_IN))
    assert not np.isfinite(exp.variance[40, 20]) and exp.variance[0, 0] == 4.0
    out = _match(exp)
    nd = out.to_nddata()
    box = (slice(35, 46), slice(15, 26))  # the 11x11 kernel's footprint around the pixel
    assert nd.mask[box].all() and np.isnan(nd.data[box]).all() and np.isinf(nd.uncertainty.array[box]).all()
    assert out.getMask().planes_set("NO_DATA")[box].all()
    inner = (slice(5, N - 5), slice(5, N - 5))
    assert nd.mask[inner].sum() == 121  # nothing else in the interior
    assert np.isfinite(nd.uncertainty.array[inner]).sum() == (N - 10) ** 2 - 121


def test_a_zero_uncertainty_is_a_zero_variance_not_a_flag():
    arr = np.full((N, N), 2.0)
    arr[40, 20] = 0.0
    exp = Exposure.from_nddata(NDData(_star(), uncertainty=StdDevUncertainty(arr), unit="adu"),
                               psf=GaussianPsf(21, 21, SIGMA_IN))
    assert exp.variance[40, 20] == 0.0 and exp.mask[40, 20] == 0
    nd = _match(exp).to_nddata()
    assert not nd.mask[5:-5, 5:-5].any() and np.isfinite(nd.uncertainty.array[5:-5, 5:-5]).all()


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i2", "<i2", ">u2"])
def test_big_endian_and_integer_data_are_taken_by_value(dtype):
    """Arrays as astropy reads them from FITS (big-endian, no conversion)."""
    data = np.round(_star()).astype(dtype)
    unc = StdDevUncertainty(np.full((N, N), 2.0).astype(">f8"))
    bits = np.zeros((N, N), ">i4")
    bits[3, 4] = 1 << 9
    exp = Exposure.from_nddata(NDData(data, uncertainty=unc, mask=bits, unit="adu"))
    assert exp.image.dtype.isnative and exp.variance.dtype.isnative and exp.mask.dtype == np.int32
    assert exp.image.dtype == (np.float64 if dtype == ">f8" else np.float32)
    np.testing.assert_array_equal(exp.image, data.astype(np.float64))
    np.testing.assert_array_equal(exp.variance, 4.0)
    assert exp.mask[3, 4] == 512 and exp.mask.sum() == 512
    assert exp.to_nddata().mask[3, 4]  # an unnamed bit is bad on the way out


def test_non_contiguous_views_and_masked_array_data():
    big = np.arange(400.0).reshape(20, 20)
    view = big[::2, 1::3].T  # non-contiguous, transposed
    unc = VarianceUncertainty(np.arange(1.0, 281.0).reshape(14, 20)[::2, ::2])
    exp = Exposure.from_nddata(NDData(view, uncertainty=unc))
    np.testing.assert_array_equal(exp.image, view)
    np.testing.assert_array_equal(exp.variance, unc.array)
    # a masked array: NDData moves its mask to nd.mask, which becomes the BAD plane
    ma = np.ma.array(np.ones((4, 4)), mask=np.eye(4, dtype=bool))
    exp = Exposure.from_nddata(NDData(ma, uncertainty=VarianceUncertainty(np.ones((4, 4)))))
    np.testing.assert_array_equal(exp.getMask().planes_set("BAD"), np.eye(4, dtype=bool))
    np.testing.assert_array_equal(exp.to_nddata().mask, np.eye(4, dtype=bool))


def test_a_scalar_uncertainty_and_a_scalar_mask_broadcast():
    exp = Exposure.from_nddata(NDData(np.ones((3, 4)), uncertainty=StdDevUncertainty(2.0), mask=True))
    np.testing.assert_array_equal(exp.variance, 4.0)
    assert exp.getMask().planes_set("BAD").all()


def test_a_convertible_uncertainty_unit_is_converted():
    """counts per minute against data in counts per second: sigma 60 /min = 1 /s."""
    exp = Exposure.from_nddata(NDData(np.ones((3, 4)), unit="count/s",
                                      uncertainty=StdDevUncertainty(np.full((3, 4), 60.0), unit="count/min")))
    np.testing.assert_allclose(exp.variance, 1.0, rtol=1e-12)
    exp = Exposure.from_nddata(NDData(np.ones((3, 4)), unit=u.dimensionless_unscaled,
                                      uncertainty=StdDevUncertainty(np.full((3, 4), 3.0), unit="%")))
    np.testing.assert_allclose(exp.variance, 9e-4, rtol=1e-12)


def test_sip_wcs_survives_the_match_and_a_ccddata_file(tmp_path):
    w = _wcs(sip=True)
    ccd = CCDData(_star(), unit="adu", uncertainty=StdDevUncertainty(np.full((N, N), 2.0)), wcs=w)
    out = _match(Exposure.from_nddata(ccd, psf=GaussianPsf(21, 21, SIGMA_IN))).to_nddata(ccd=True)
    px = np.array([[0.0, 0.0], [5.0, 60.0], [63.0, 63.0]])
    assert out.wcs.sip is not None and out.wcs is not ccd.wcs
    np.testing.assert_array_equal(out.wcs.all_pix2world(px, 0), w.all_pix2world(px, 0))
    out.write(tmp_path / "m.fits")
    back = CCDData.read(tmp_path / "m.fits")
    assert back.wcs.sip is not None
    np.testing.assert_allclose(back.wcs.all_pix2world(px, 0), w.all_pix2world(px, 0), rtol=0, atol=1e-12)
    assert ccd.wcs.sip.a[2, 0] == 1e-5  # the input's WCS untouched


def test_ccddata_to_match_to_file_and_back_loses_nothing(tmp_path):
    """CCDData (Header meta with HISTORY, dict-free) -> match (kernelSum 2) -> CCDData.write -> CCDData.read ->
    Exposure: data, variance, mask, unit, header, PSF and origin as they were written."""
    hdr = fits.Header({"MAGZERO": 25.0, "OBJECT": "M31", "EXPTIME": 30.0})
    hdr["HISTORY"] = "bias subtracted"
    bad = np.zeros((N, N), bool)
    bad[50, 12] = True
    ccd = CCDData(_star(), unit="electron", uncertainty=StdDevUncertainty(np.full((N, N), 2.0)), mask=bad,
                  wcs=_wcs(), meta=hdr, psf=GaussianPsf(21, 21, SIGMA_IN).computeKernelImage((32, 32)))
    before = ccd.meta.copy()
    matched = _match(Exposure.from_nddata(ccd, xy0=(100, 200)), kernel_sum=2.0)
    out = matched.to_nddata(ccd=True)
    out.write(tmp_path / "m.fits")
    back = CCDData.read(tmp_path / "m.fits")
    assert back.unit == u.electron and isinstance(back.uncertainty, VarianceUncertainty)
    np.testing.assert_array_equal(back.data, out.data)
    np.testing.assert_array_equal(back.uncertainty.array, out.uncertainty.array)
    np.testing.assert_array_equal(back.mask, out.mask)
    assert back.mask[50, 12] and back.meta["OBJECT"] == "M31" and back.meta["EXPTIME"] == 30.0
    assert back.meta["MAGZERO"] == pytest.approx(25.0 + 2.5 * math.log10(2.0), abs=1e-12)
    assert "bias subtracted" in str(back.meta["HISTORY"]) and "kernelSum" in str(back.meta["HISTORY"])
    again = Exposure.from_nddata(back)
    assert again.getXY0() == (100, 200) and again.metadata["unit"] == "electron"
    np.testing.assert_allclose(again.getPsf().computeKernelImage((0, 0)),
                               GaussianPsf(21, 21, SIGMA_REF).computeKernelImage((0, 0)), atol=1e-12)
    assert ccd.meta == before and ccd.meta["MAGZERO"] == 25.0  # the input untouched


def test_run_leaves_the_callers_nddata_untouched():
    meta = {"photoCalib": {"calibrationMean": 2.0, "calibrationErr": 0.1}, "MAGZERO": 25.0, "tags": ["a"]}
    data, std = _star(), np.full((N, N), 2.0)
    nd = NDData(data.copy(), uncertainty=StdDevUncertainty(std.copy()), mask=np.zeros((N, N), bool), unit="adu",
                meta=meta, wcs=_wcs())
    out = _match(Exposure.from_nddata(nd, psf=GaussianPsf(21, 21, SIGMA_IN)), kernel_sum=4.0).to_nddata()
    assert out.meta["photoCalib"]["calibrationMean"] == pytest.approx(0.5)
    assert out.meta["MAGZERO"] == pytest.approx(25.0 + 2.5 * math.log10(4.0))
    assert nd.meta["photoCalib"] == {"calibrationMean": 2.0, "calibrationErr": 0.1} and nd.meta["MAGZERO"] == 25.0
    np.testing.assert_array_equal(nd.data, data)
    np.testing.assert_array_equal(nd.uncertainty.array, std)
    assert not nd.mask.any() and list(nd.wcs.wcs.crpix) == [30.0, 30.0]
    out.meta["tags"].append("b")
    assert nd.meta["tags"] == ["a"]


# --------------------------------------------------------------------------------------------------------------
# defects the review found (fixed)


def test_kernel_sum_with_a_physical_flux_unit_is_not_silent():
    ccd = CCDData(_star(sky=0.0), unit="nJy", uncertainty=StdDevUncertainty(np.full((N, N), 2.0)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _task().run(Exposure.from_nddata(ccd, psf=GaussianPsf(21, 21, SIGMA_IN)),
                          GaussianPsf(21, 21, SIGMA_REF), kernelSum=2.0)
    out = res.psfMatchedExposure.to_nddata(ccd=True)
    said = [str(w.message) for w in caught if issubclass(w.category, PsfMatchWarning)]
    assert any("the image unit 'nJy' (a physical unit: the matched pixel values are 2 times the input's, in it) "
               "could not be rescaled" in m for m in said), said
    physical = (_core_flux(out.data) * out.unit).to_value(u.nJy)  # the values are doubled, the unit is not
    assert physical == pytest.approx(2 * FLUX, rel=2e-3)
    # counts need no word: their calibration is a zero point, rescaled where there is one
    for unit in ("adu", "electron/s", "count"):
        ccd = CCDData(_star(sky=0.0), unit=unit, uncertainty=StdDevUncertainty(np.full((N, N), 2.0)))
        with warnings.catch_warnings():
            warnings.simplefilter("error", PsfMatchWarning)
            _task().run(Exposure.from_nddata(ccd, psf=GaussianPsf(21, 21, SIGMA_IN)), GaussianPsf(21, 21, SIGMA_REF),
                        kernelSum=2.0)


def test_a_sky_alternate_wcs_in_meta_is_kept():
    h = fits.Header([("OBJECT", "x"), ("WCSNAMEA", "GAIA"), ("CTYPE1A", "RA---TAN"), ("CTYPE2A", "DEC--TAN"),
                     ("CRVAL1A", 10.0), ("CRVAL2A", -5.0), ("CRPIX1A", 3.0), ("CRPIX2A", 3.0)])
    nd = CCDData(np.ones((8, 8)), unit="adu", meta=h, uncertainty=VarianceUncertainty(np.ones((8, 8))))
    exp = Exposure.from_nddata(nd)
    assert exp.getXY0() == (0, 0)  # not an origin (correctly)
    out = exp.to_nddata().meta
    assert out.get("WCSNAMEA") == "GAIA" and out.get("CTYPE1A") == "RA---TAN" and out.get("CRVAL1A") == 10.0


def test_an_uncertainty_without_an_array_is_refused_or_estimated():
    """An uncertainty object without an array (StdDevUncertainty()) made the whole variance NaN: it is no
    uncertainty, and the variance is estimated from the pixels, as without one."""
    nd = NDData(_star(), uncertainty=StdDevUncertainty(None), unit="adu")
    exp = Exposure.from_nddata(nd)
    ref = Exposure.from_nddata(NDData(_star(), unit="adu"))
    assert np.isfinite(exp.variance).all() and np.array_equal(exp.variance, ref.variance)


def test_an_integer_mask_flag_at_bits_5_or_6_is_not_silently_unflagged(caplog):
    dq = np.zeros((8, 8), np.int16)
    dq[2, 3] = 64  # e.g. WFC3 "warm pixel"
    dq[5, 6] = 32
    with caplog.at_level(logging.WARNING, logger="psfmatch"):
        out = Exposure.from_nddata(NDData(np.ones((8, 8)), mask=dq,
                                          uncertainty=VarianceUncertainty(np.ones((8, 8))))).to_nddata()
    assert "it sets 32 (DETECTED: not a bad pixel (to_nddata leaves it unmasked)); 64 (DETECTED_NEGATIVE: " in \
        caplog.text and "pass mask_planes= naming them" in caplog.text
    assert not out.mask[2, 3] and not out.mask[5, 6]  # (as documented: the warning says so)
    # bits without a special meaning, and a mask given with its own planes, say nothing
    caplog.clear()
    dq[:] = 0
    dq[2, 3] = 16 | 512
    with caplog.at_level(logging.WARNING, logger="psfmatch"):
        Exposure.from_nddata(NDData(np.ones((8, 8)), mask=dq, uncertainty=VarianceUncertainty(np.ones((8, 8)))))
        Exposure.from_nddata(NDData(np.ones((8, 8)), mask=dq * 0 + 64, uncertainty=VarianceUncertainty(
            np.ones((8, 8)))), mask_planes={"WARM": 6})
    assert "integer mask" not in caplog.text


def test_a_masked_pixel_value_stays_in_its_flagged_pixels_and_no_data_leaves_it_out():
    """A masked value (BAD, the default plane) is convolved, as in LSST, but its bit now spreads as far as its
    value carries more than a tenth of the matched noise (a hot pixel of 1e6 on a sky of 100 +- 2 biased unflagged
    pixels by over 100 sigma beyond the footprint); mask_plane="NO_DATA" leaves it out.  Either way every
    unflagged pixel stays within the noise."""
    rng = np.random.default_rng(3)
    img = rng.normal(100.0, 2.0, (N, N))
    mask = np.zeros((N, N), bool)
    img[30, 30], mask[30, 30] = 1e6, True
    nd = CCDData(img, unit="adu", uncertainty=StdDevUncertainty(np.full((N, N), 2.0)), mask=mask)
    deviations = []
    for plane in ("BAD", "NO_DATA"):
        out = _match(Exposure.from_nddata(nd, psf=GaussianPsf(21, 21, SIGMA_IN), mask_plane=plane),
                     kernel_size=15).to_nddata()
        ok = ~out.mask
        deviations.append(np.abs(out.data[ok] - 100.0) / np.sqrt(out.uncertainty.array[ok]))
        # the flagged region is the kernel's whole square around the pixel (NO_DATA: its support)
        assert out.mask[30 - 7:30 + 8, 30 - 7:30 + 8].all()
        assert not out.mask[30 - 9:30 + 10, 30 + 9].any() and not out.mask[30 + 9, 30 - 9:30 + 10].any()
    for dev in deviations:
        assert dev.max() < 6.0 and dev.size > 0.5 * N * N


def test_run_with_an_nddata_names_the_converter():
    nd = NDData(_star(), uncertainty=StdDevUncertainty(np.ones((N, N))))
    with pytest.raises(InvalidInputError, match=r"got NDData .*from_nddata"):
        _task().run(nd, GaussianPsf(21, 21, SIGMA_REF))
