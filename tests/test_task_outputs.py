"""Contracts of the task's outputs: variance, mask, borders, inputs untouched, the kernel object, errors."""

import pickle

import re

import numpy as np
import pytest

from psfmatch import (Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, NoKernelCandidatesError,
                      InvalidInputError, Point2D)
from psfmatch.convolve import convolve_masked_image, mask_footprint
from psfmatch.image import MaskedImage
from psfmatch.psf import GaussianPsf, VariableGaussianPsf


def small_task(order=2):
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = order
    return ModelPsfMatchTask(config=config)


@pytest.fixture(scope="module")
def varying_fit():
    bbox = Box2I((0, 0), (384, 384))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.2, -0.1], e1=[0.0, 0.05, 0.0])
    fit = small_task().fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    return psf, fit


def test_variance_matches_monte_carlo(varying_fit):
    psf, fit = varying_fit
    kernel = fit.kernel
    rng = np.random.default_rng(5)
    H = W = 80
    yy, xx = np.mgrid[0:H, 0:W]
    var = (1.0 + 3.0 * xx / W + 2.0 * (yy / H) ** 2).astype(np.float64)
    n = 800
    outs = []
    for _ in range(n):
        noise = rng.normal(size=(H, W)) * np.sqrt(var)
        outs.append(convolve_masked_image(MaskedImage(noise, variance=var, xy0=(150, 140)), kernel, tile=128).image)
    outs = np.array(outs)
    pred = convolve_masked_image(MaskedImage(np.zeros((H, W)), variance=var, xy0=(150, 140)), kernel).variance
    emp = outs.var(axis=0)
    h = kernel.getWidth() // 2
    inner = (slice(h, H - h), slice(h, W - h))
    e, p = emp[inner], pred[inner]
    assert e.mean() / p.mean() == pytest.approx(1.0, abs=0.015)
    # quadrant averages: the spatial variation of the variance is right too
    m = e.shape[0] // 2
    for blk in [(slice(0, m), slice(0, m)), (slice(0, m), slice(m, None)), (slice(m, None), slice(0, m)),
                (slice(m, None), slice(m, None))]:
        assert e[blk].mean() / p[blk].mean() == pytest.approx(1.0, abs=0.03)
    # the variance of a convolved white noise is sum K^2 V: far below V for a smoothing kernel
    assert np.all(p < var[inner])


def test_mask_footprint_and_borders(varying_fit):
    psf, fit = varying_fit
    kernel = fit.kernel
    H = W = 120
    x0, y0 = 100, 130
    img = np.ones((H, W))
    var = np.ones((H, W))
    mi = MaskedImage(img, variance=var, xy0=(x0, y0))
    bad = mi.getMask().getPlaneBitMask("BAD")
    nodata = mi.getMask().getPlaneBitMask("NO_DATA")
    mi.mask[60, 50] = bad
    mi.image[30, 90] = np.nan
    detected = mi.getMask().getPlaneBitMask("DETECTED")
    mi.mask[60, 80] = detected
    out = convolve_masked_image(mi, kernel, mask_threshold=1e-3)
    h = kernel.getWidth() // 2
    fp = mask_footprint(kernel, 1e-3, bbox=mi.getBBox())
    # a DETECTED pixel (a value meant to be used) becomes a footprint of the documented shape; a BAD one (a value
    # that may be wrong, convolved all the same) covers every non-zero kernel pixel, the whole square
    for bit, shape, x in ((detected, fp, 80), (bad, np.ones_like(fp), 50)):
        got = (out.mask & bit) != 0
        expect = np.zeros((H, W), bool)
        ys, xs = np.nonzero(shape)
        expect[60 + ys - h, x + xs - h] = True
        expect[:h] = expect[-h:] = False
        expect[:, :h] = expect[:, -h:] = False
        assert np.array_equal(got, expect)
    assert 9 < fp.sum() < fp.size  # thresholded: more than a pixel, less than the whole square
    # the border: NaN, inf, NO_DATA only
    border = np.zeros((H, W), bool)
    border[:h] = border[-h:] = border[:, :h] = border[:, -h:] = True
    assert np.all(np.isnan(out.image[border])) and np.all(np.isinf(out.variance[border]))
    assert np.all(out.mask[border] == nodata)
    # NaN input spreads over the full kernel support as NaN / inf / NO_DATA
    touched = np.zeros((H, W), bool)
    touched[30 - h:30 + h + 1, 90 - h:90 + h + 1] = True
    assert np.all(np.isnan(out.image[touched])) and np.all(np.isinf(out.variance[touched]))
    assert np.all(out.mask[touched] & nodata)
    rest = ~touched & ~border
    assert np.all(np.isfinite(out.image[rest])) and np.all(np.isfinite(out.variance[rest]))
    assert not np.any(out.mask[rest] & nodata)
    # a unit image stays 1 (kernel sum 1) away from the border and the NaN
    np.testing.assert_allclose(out.image[rest], 1.0, atol=1e-9)


def test_lsst_dilation_with_zero_threshold(varying_fit):
    _, fit = varying_fit
    fp = mask_footprint(fit.kernel, 0.0)
    assert fp.all()  # AL Gaussians are non-zero over the whole square, as in LSST


def test_input_untouched_and_output_new():
    bbox = Box2I((0, 0), (256, 256))
    psf = GaussianPsf(21, 21, 1.9)
    rng = np.random.default_rng(2)
    img = rng.normal(size=(256, 256)).astype(np.float32)
    img[5, 7] = np.nan
    mask = np.zeros((256, 256), np.int32)
    mask[100, 100] = 1
    var = np.ones((256, 256), np.float32)
    exposure = Exposure(img, mask, var, psf=psf, metadata={"id": 1})
    before = [exposure.image.copy(), exposure.mask.copy(), exposure.variance.copy()]
    result = small_task(0).run(exposure, GaussianPsf(31, 31, 2.6))
    for a, b in zip(before, [exposure.image, exposure.mask, exposure.variance]):
        np.testing.assert_array_equal(a, b)
    out = result.psfMatchedExposure
    assert out.image.dtype == np.float32 and out.variance.dtype == np.float32
    assert out.getPsf() is not psf and exposure.getPsf() is psf
    assert not np.shares_memory(out.image, exposure.image)
    assert bbox == out.getBBox()


def test_kernel_object_contract(varying_fit):
    _, fit = varying_fit
    k = fit.kernel
    assert k.isSpatiallyVarying()
    size = fit.metadata["kernelSize"]
    assert k.computeImage((10, 20)).shape == (size, size)
    k2 = pickle.loads(pickle.dumps(k))
    np.testing.assert_array_equal(k2.computeImage((77.5, 300)), k.computeImage((77.5, 300)))
    # refactored term images reproduce the kernel
    f = k.spatial_function.evaluate(50.0, 60.0)
    np.testing.assert_allclose(np.tensordot(f, k.term_images(), axes=1), k.computeImage((50, 60)), atol=1e-14)
    assert k.getSpatialParameters().shape == (len(k.basis), 6)
    assert np.all(k.getSpatialParameters()[0, 1:] == 0) and k.getSpatialParameters()[0, 0] == 1.0
    np.testing.assert_array_equal(k.computeImageLsst((5, 5)), k.computeImage((5, 5))[::-1, ::-1])
    xs = np.linspace(0, 383, 7)
    sums = k.computeImages(xs, xs[::-1]).sum(axis=(1, 2))
    np.testing.assert_allclose(sums, 1.0, atol=1e-7)


def test_candidates_record_status_and_qa(varying_fit):
    _, fit = varying_fit
    cands = list(fit.cellSet.candidates())
    assert len(cands) == 9
    for c in cands:
        assert c.status.value == "GOOD"
        assert c.kernel_image.sum() == pytest.approx(1.0, abs=1e-10)
        assert c.rank > 0 and np.isfinite(c.condition_number)
        assert 0 <= c.qa["residualMax"] < 3e-3  # a strongly varying PSF on a 3x3 grid of cells


def test_spatial_terms_the_grid_cannot_determine_are_held_at_zero():
    # a 3x3 grid of candidates determines degree 2 along each axis: an order-3 model keeps its x^2 y and
    # x y^2 terms and holds x^3 and y^3 at 0 (it was lowered to order 2 before)
    bbox = Box2I((0, 0), (384, 384))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.1, 0.1])
    fit = small_task(order=3).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    md = fit.metadata
    assert md["spatialKernelOrderRequested"] == 3 and md["spatialKernelOrder"] == 3
    assert not any("lowered" in n for n in md["notes"])
    assert any("order-3 spatial model is fitted with degree at most 2 along x and 2 along y: the candidates lie on "
               "3 distinct column(s) and 3 row(s) of the 3x3 grid" in n for n in md["notes"])
    sf = fit.kernel.spatial_function
    coeffs = fit.kernel.getSpatialParameters()
    assert sf.kind == "chebyshev1" and sf.order == 3
    held = [j for j, (p, q) in enumerate(sf.terms) if p > 2 or q > 2]
    assert [sf.terms[j] for j in held] == [(3, 0), (0, 3)]
    assert np.all(coeffs[:, held] == 0) and np.abs(coeffs[1:, [sf.terms.index((2, 1)), sf.terms.index((1, 2))]]).max() > 0
    assert md["nSpatialUnknowns"] == (len(coeffs) - 1) * 8


@pytest.mark.parametrize("auto", [False, True])
def test_a_strip_fits_the_variation_along_its_length(auto):
    # one row of cells: the PSF's variation along x is fitted (it was a constant kernel, residual 0.18), and
    # the kernel is constant along y; sigma_k^2 = sigma_ref^2 - sigma_sci(x)^2 at each end
    bbox = Box2I((0, 0), (2048, 128))
    sci = VariableGaussianPsf(25, 25, bbox, sigma=[2.0, 0.4, 0.0])
    config = ModelPsfMatchConfig()
    config.autoKernel = auto
    fit = ModelPsfMatchTask(config=config).fitKernel(sci, GaussianPsf(25, 25, 3.0), bbox)
    md = fit.metadata
    assert md["spatialKernelOrder"] == 2 and not any("lowered" in n for n in md["notes"])
    assert any("fitted with degree at most 0 along y: the candidates lie on 16 distinct column(s) and 1 row(s) of the "
               "16x1 grid, which determine no more (use smaller cells (sizeCellY <= 42" in n for n in md["notes"])
    assert md["qa"]["candidates"]["residualMaxWorst"] < 0.01 and md["qa"]["between"]["residualMaxWorst"] < 0.01
    kernel = fit.kernel
    for x in (100.0, 1947.0):
        k_lo, k_hi = kernel.computeImages([x], [0.0])[0], kernel.computeImages([x], [127.0])[0]
        np.testing.assert_allclose(k_lo, k_hi, rtol=0, atol=1e-12)
        s = sci.computeKernelImage(Point2D(x, 64.0))
        yy, xx = np.mgrid[:25, :25] - 12.0
        sig_sci2 = (s * xx ** 2).sum() / s.sum()
        n = k_lo.shape[0] // 2
        yk, xk = np.mgrid[:k_lo.shape[0], :k_lo.shape[1]] - float(n)
        sig_k2 = (k_lo * xk ** 2).sum() / k_lo.sum()
        assert sig_k2 == pytest.approx(3.0 ** 2 - sig_sci2, rel=0.03)


def test_user_psf_objects_and_positions():
    class OnlyKernel:
        def __init__(self, sigma):
            self.sigma = sigma
            self.calls = []

        def computeKernelImage(self, position):
            self.calls.append((position.x, position.y))
            x, y = position
            v, u = np.mgrid[-10:11, -10:11]
            return np.exp(-0.5 * (u * u + v * v) / self.sigma ** 2)

    sci, ref = OnlyKernel(1.7), OnlyKernel(2.5)
    exposure = Exposure(np.zeros((200, 300), np.float32), psf=sci, xy0=(1000, 2000))
    result = small_task(1).run(exposure, ref)
    assert all(1000 <= x < 1300 and 2000 <= y < 2200 for x, y in sci.calls)
    assert result.metadata["qa"]["candidates"]["residualMaxWorst"] < 2e-3
    out_psf = result.psfMatchedExposure.getPsf()
    assert out_psf.computeKernelImage((1100, 2100)).shape == (31, 31)
    assert out_psf.computeShape((1100, 2100)).sigma == pytest.approx(2.5, rel=1e-3)


def test_no_usable_candidates():
    class Broken:
        def computeKernelImage(self, position):
            raise RuntimeError("model undefined here")

    exposure = Exposure(np.zeros((256, 256), np.float32), psf=Broken())
    with pytest.raises(NoKernelCandidatesError, match="could not be evaluated at any of the 4 cell centres"):
        small_task().run(exposure, GaussianPsf(31, 31, 2.6))


def test_some_candidates_fail():
    class Partial:
        def computeKernelImage(self, position):
            if position.x < 100 and position.y < 100:
                raise ValueError("no stars here")
            v, u = np.mgrid[-10:11, -10:11]
            return np.exp(-0.5 * (u * u + v * v) / 1.8 ** 2)

    exposure = Exposure(np.zeros((384, 384), np.float32), psf=Partial())
    result = small_task(1).run(exposure, GaussianPsf(31, 31, 2.6))
    md = result.metadata
    assert md["nCandidatesRejected"] == 1 and md["nCandidatesUsed"] == 8
    assert "no stars here" in md["rejectedCandidates"][0]["reason"]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "x"])
def test_bad_kernel_sum(bad):
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(21, 21, 1.8))
    with pytest.raises(InvalidInputError, match="kernelSum must be"):
        small_task(0).run(exposure, GaussianPsf(31, 31, 2.6), kernelSum=bad)


def test_negative_variance_rejected():
    exposure = Exposure(np.zeros((256, 256), np.float32), variance=-np.ones((256, 256)),
                        psf=GaussianPsf(21, 21, 1.8))
    with pytest.raises(InvalidInputError, match="variance has 65536 negative pixel"):
        small_task(0).run(exposure, GaussianPsf(31, 31, 2.6))


def test_not_an_exposure():
    with pytest.raises(InvalidInputError, match="exposure must be a psfmatch.Exposure; got ndarray"):
        small_task(0).run(np.zeros((10, 10)), GaussianPsf(31, 31, 2.6))


def test_truncated_reference_warns():
    from psfmatch.errors import TruncatedPsfWarning
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(21, 21, 1.8))
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.kernelSize = 21  # 31 px stamps (the automatic kernel would draw it on 59 px ones)
    task = ModelPsfMatchTask(config=config)
    with pytest.warns(TruncatedPsfWarning, match=r"truncated by its 31x31 stamp: its edge reaches 0.\d+ of its peak"):
        result = task.run(exposure, GaussianPsf(31, 31, 6.0))
    assert result.metadata["referenceEdgeToPeak"] > 1e-3
    # left to the automatic kernel, a 41 px kernel on 59 px stamps, on which the Gaussian draws itself whole
    auto = small_task(0).run(exposure, GaussianPsf(31, 31, 6.0))
    assert auto.metadata["psfSize"] == 59 and auto.metadata["referenceEdgeToPeak"] < 1e-3
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedPsfWarning)
        small_task(0).run(exposure, GaussianPsf(31, 31, 2.6))


@pytest.mark.parametrize("entry", ["run", "fitKernel"])
@pytest.mark.parametrize("case", ["truncated", "ill-posed"])
def test_warnings_point_to_the_callers_line(entry, case):
    """The fit's warnings name the line of user code that called run() or fitKernel(), not psfmatch's own.

    (Python shows a warning once per location: a warning attributed to a line of
    psfmatch would be shown once for a whole loop over exposures, and could not
    be filtered by the user's module.)
    """
    import warnings

    from psfmatch.errors import IllPosedMatchWarning, KernelQualityWarning, TruncatedPsfWarning
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    task = ModelPsfMatchTask(config=config)
    sigma_sci, sigma_ref = (1.8, 6.0) if case == "truncated" else (3.0, 2.0)
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(21, 21, sigma_sci))
    reference = GaussianPsf(31, 31, sigma_ref)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if entry == "run":
            task.run(exposure, reference)
        else:
            task.fitKernel(exposure.getPsf(), reference, exposure.getBBox())
    expected = {TruncatedPsfWarning, KernelQualityWarning} if case == "truncated" else \
        {IllPosedMatchWarning, KernelQualityWarning}
    ours = [w for w in caught if w.category in expected]
    assert {w.category for w in ours} == expected
    assert {w.filename for w in ours} == {__file__}


def test_exposure_smaller_than_kernel():
    exposure = Exposure(np.zeros((20, 40), np.float32), psf=GaussianPsf(21, 21, 1.8))
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = 21  # explicit (the automatic kernel would choose one that fits)
    with pytest.raises(InvalidInputError, match=r"exposure \(40x20 pixels\) is no larger than the kernel's border"):
        ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6))


def test_exposure_smaller_than_a_cell():
    exposure = Exposure(np.ones((60, 50), np.float32), psf=GaussianPsf(21, 21, 1.8))
    result = small_task(2).run(exposure, GaussianPsf(31, 31, 2.6))
    assert result.metadata["nCells"] == 1 and result.metadata["spatialKernelOrder"] == 0
    assert np.allclose(result.psfMatchedExposure.image[10:-10, 10:-10], 1.0)


def test_exposure_smaller_than_a_cell_notes_a_varying_psf_in_every_mode():
    bbox = Box2I((100, 100), (60, 60))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.1, 0.1])
    exposure = Exposure(np.ones((60, 60), np.float32), psf=psf, xy0=(100, 100))
    for auto in (True, False):
        config = ModelPsfMatchConfig()
        config.autoKernel = auto
        md = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6)).metadata
        assert md["nCandidatesUsed"] == 1 and md["spatialKernelOrder"] == 0
        note = "the 60x60 exposure is a single cell (sizeCellX x sizeCellY = 128x128)" if auto else "lowered from 2 to 0"
        assert any(note in n for n in md["notes"]), md["notes"]


def test_one_row_of_cells_names_the_cell_size_that_fits_the_whole_model():
    bbox = Box2I((0, 0), (1024, 200))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.2, 0.0])
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    fit = ModelPsfMatchTask(config=config).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    md = fit.metadata
    assert md["spatialKernelOrder"] == 2 and md["nSpatialUnknowns"] == 3 * (fit.kernel.getNKernelParameters() - 1)
    assert md["notes"] == ["the order-2 spatial model is fitted with degree at most 0 along y: the candidates lie on 8 "
                           "distinct column(s) and 1 row(s) of the 8x1 grid, which determine no more (use smaller cells "
                           "(sizeCellY <= 66: 3 cells along each axis) to fit the whole model)"]


def test_output_wcs_is_a_copy():
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [10.0, 10.0]
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 1.8), wcs=w)
    out = small_task(0).run(exposure, GaussianPsf(31, 31, 2.6)).psfMatchedExposure
    out.getWcs().wcs.crpix = [1.0, 1.0]
    assert list(exposure.getWcs().wcs.crpix) == [10.0, 10.0]


def test_infinite_memory_limit_turns_the_check_off():
    config = ModelPsfMatchConfig()
    config.maxMemoryGiB = float("inf")
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 1.8))
    exposure.image[64, 64] = 100.0
    out = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6)).psfMatchedExposure
    assert float(np.nansum(out.image)) == pytest.approx(100.0, rel=1e-5)


def test_a_reference_on_a_pedestal_is_not_told_to_use_a_larger_stamp():
    """A reference PSF image whose border is flat at 2% of its peak (an unsubtracted bias) reaches its stamp's edge:
    the remedy was a larger stamp, which holds more of the pedestal; it is now to subtract the level."""
    from psfmatch.errors import TruncatedPsfWarning
    from psfmatch.psf import ImagePsf

    y, x = np.mgrid[-20:21, -20:21]
    core = np.exp(-(x * x + y * y) / (2 * 2.5 ** 2))
    reference = ImagePsf(core + 0.02 * core.max())
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(25, 25, 1.5))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    with pytest.warns(TruncatedPsfWarning) as record:
        result = ModelPsfMatchTask(config=config).run(exposure, reference)
    (msg,) = [str(w.message) for w in record if issubclass(w.category, TruncatedPsfWarning)]
    assert msg.startswith("the reference PSF (41x41 stamp) is cropped to the fit's 31x31 PSF stamps: its edge reaches "
                          "0.02 of its peak")
    assert ("But its own stamp's border is flat at 2.0% of its peak all around: a pedestal (an unsubtracted bias or "
            "sky level) rather than a wing" in msg)
    assert msg.endswith("Remedy: subtract that level from the reference PSF image (read_psf(path, background=...), "
                        "on the command line image:FILE,background=..., with the file's border level, as read_psf's "
                        "own warning gives it)")
    assert "larger reference stamp" not in msg and "padPsfBy" not in msg and msg in result.metadata["notes"]
    # uncropped (stamps as large as its own), the same remedy
    config.doAutoPadPsf, config.padPsfBy = False, 16
    with pytest.warns(TruncatedPsfWarning, match=r"^the reference PSF is truncated by its stamp: its edge reaches "
                                                  r"0\.02 of its peak.*But its own stamp's border is flat at 2\.0% .*"
                                                  r"Remedy: subtract that level"):
        ModelPsfMatchTask(config=config).run(exposure, reference)


def test_truncated_reference_remedy_depends_on_who_crops_it():
    """Cropped by the fit's stamps: pad them (the padding that works is named); by its own stamp: a larger one."""
    import warnings

    from psfmatch.errors import TruncatedPsfWarning
    from psfmatch.psf import MoffatPsf
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(25, 25, 1.8))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    reference = MoffatPsf(81, 81, 6.0, 2.5)
    # the padding named holds the edge below 1e-3 of the peak (43 px) and the flux beyond below 1e-3 (69 px)
    with pytest.warns(TruncatedPsfWarning, match=r"the reference PSF \(81x81 stamp\) is cropped to the fit's 31x31 "
                                                  r"PSF stamps: its edge reaches .* padPsfBy = 44 with doAutoPadPsf = "
                                                  r"False \(69 px stamps\)"):
        ModelPsfMatchTask(config=config).run(exposure, reference)
    config.doAutoPadPsf = False
    config.padPsfBy = 44  # the remedy: no warning left
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedPsfWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = ModelPsfMatchTask(config=config).run(exposure, reference)
    assert result.metadata["psfSize"] == 69 and result.metadata["referenceEdgeToPeak"] < 1e-3
    assert result.metadata["referenceFluxOutside"] <= 1e-3
    # a 41 px Moffat stamp is truncated by itself: a larger reference stamp is named too
    config.doAutoPadPsf = True
    with pytest.warns(TruncatedPsfWarning, match=r"padPsfBy = 16 .*its own 41x41 stamp is truncated too \(use a "
                                                  r"larger reference stamp"):
        ModelPsfMatchTask(config=config).run(exposure, MoffatPsf(41, 41, 6.0, 2.5))


def test_a_reference_whose_wing_is_cropped_warns_by_its_flux_beyond_the_stamps():
    """A Moffat (FWHM 6 px, beta 3) cropped from 81 to the fit's 37 px stamps kept only 99.43% of its flux, the
    stamp renormalized: matched stars were 0.6-0.9% brighter in apertures than the reference, without a warning
    (its edge, 9e-4 of the peak, was below the edge threshold)."""
    import warnings

    from psfmatch.errors import KernelQualityWarning, TruncatedPsfWarning
    from psfmatch.psf import MoffatPsf

    reference = MoffatPsf(81, 81, 6.0, 3.0)
    star = GaussianPsf(25, 25, 1.7).computeKernelImage((150, 150))
    image = np.zeros((300, 300))
    image[138:163, 138:163] = 1e5 * star
    exposure = Exposure(image, variance=np.ones_like(image), psf=GaussianPsf(25, 25, 1.7))
    # left to itself, the automatic kernel pads the stamps towards holding the reference's flux, up to the
    # science stamp + kernel - 1 pixels the matched PSF can reach (49 here): a third of the loss
    with pytest.warns(TruncatedPsfWarning, match=r"cropped to the fit's 49x49 PSF stamps: 0.18% of its flux"):
        auto = ModelPsfMatchTask().run(exposure, reference)
    assert auto.metadata["psfSize"] == 49 and auto.metadata["referenceFluxOutside"] < 0.002
    lsst_stamps = ModelPsfMatchConfig()
    lsst_stamps.doAutoPadPsf = False
    lsst_stamps.padPsfBy = 12  # 37 px stamps, which the automatic kernel keeps as set
    with pytest.warns(TruncatedPsfWarning, match=r"the reference PSF \(81x81 stamp\) is cropped to the fit's 37x37 PSF "
                      r"stamps: 0.57% of its flux lies beyond them \(threshold 0.1%\), and the stamp is renormalized "
                      r"to unit sum: the matched PSF misses that wing and its core is 0.57% brighter than the "
                      r"reference's. Remedy: larger stamps for the fit, e.g. padPsfBy = (\d+) with doAutoPadPsf = "
                      r"False \((\d+) px stamps\)") as caught:
        result = ModelPsfMatchTask(config=lsst_stamps).run(exposure, reference)
    md = result.metadata
    assert md["psfSize"] == 37 and md["referenceEdgeToPeak"] < 1e-3
    assert md["referenceFluxOutside"] == pytest.approx(1 - reference.computeKernelImage((150, 150))[22:59, 22:59].sum(),
                                                       rel=1e-6)
    pad, stamps = (int(v) for v in re.search(r"padPsfBy = (\d+) .*\((\d+) px", str(caught[0].message)).groups())
    config = ModelPsfMatchConfig()
    config.doAutoPadPsf = False
    config.padPsfBy = pad  # the remedy: the flux beyond the stamps is within the threshold, and no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedPsfWarning)
        warnings.simplefilter("ignore", UserWarning)
        fixed = ModelPsfMatchTask(config=config).run(exposure, reference)
    assert fixed.metadata["psfSize"] == stamps and fixed.metadata["referenceFluxOutside"] <= 1e-3
    # what the warning is about: the matched star is brighter than the reference in a wide aperture
    yy, xx = np.mgrid[-20:21, -20:21]
    aperture = xx ** 2 + yy ** 2 <= 16.5 ** 2
    ref_img = reference.computeKernelImage((150, 150))[20:61, 20:61]
    before = result.psfMatchedExposure.image[130:171, 130:171] / 1e5
    assert before[aperture].sum() / ref_img[aperture].sum() > 1.008
    # with the wing inside the stamps, the kernel still does not build it: the peak-relative residual stays at
    # 1e-3 while the encircled flux differs by 0.6 % (a flag with a threshold below that)
    after = fixed.psfMatchedExposure.image[130:171, 130:171] / 1e5
    assert after[aperture].sum() / ref_img[aperture].sum() > 1.006
    q = fixed.metadata["qa"]
    assert q["between"]["residualMaxWorst"] < 2e-3 and q["between"]["apertureFluxMismatchWorst"] > 5e-3
    assert q["thresholds"]["qaMaxApertureFluxMismatch"] == 0.01 and "APERTURE_FLUX_MISMATCH" not in q["flags"]
    config.qaMaxApertureFluxMismatch = 0.004
    with pytest.warns(KernelQualityWarning, match=r"encircled flux differs .* qaMaxApertureFluxMismatch=0.004"):
        strict = ModelPsfMatchTask(config=config).run(exposure, reference)
    assert "APERTURE_FLUX_MISMATCH" in strict.metadata["qa"]["flags"]


def test_metadata_is_strict_json():
    import json

    class Partial:
        def computeKernelImage(self, position):
            if position.x > 150:
                raise ValueError("outside the model")
            v, u = np.mgrid[-10:11, -10:11]
            return np.exp(-0.5 * (u * u + v * v) / 1.8 ** 2)

    exposure = Exposure(np.zeros((256, 256), np.float32), psf=Partial())
    result = small_task(0).run(exposure, GaussianPsf(31, 31, 2.6))
    text = json.dumps(result.metadata, allow_nan=False)
    back = json.loads(text)
    assert back["nCandidatesRejected"] == 2
    assert back["rejectedCandidates"][0]["conditionNumber"] is None
    for key in ("ALBasisNGauss", "ALBasisDegGauss", "ALBasisSigGauss", "ALKernelSize", "ALBasisMode",
                "nCandidatesBuilt", "nCandidatesUsed", "spatialSolutionRank", "spatialConditionNum",
                "spatialKernelSum"):
        assert key in back


def test_more_qa_positions_per_candidate_check_a_small_exposure_more_densely():
    # 2x2 cells: the midpoints give 5 held-out positions (4 asked for); 3 per candidate asks for 12 (5 before the
    # finer divisions), 100 for more than the finest grid gives
    bbox = Box2I((0, 0), (256, 256))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.1, 0.1])
    counts = []
    for per in (1, 3, 100):
        config = ModelPsfMatchConfig()
        config.autoKernel = False
        config.qaPositionsPerCandidate = per
        counts.append(ModelPsfMatchTask(config=config).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
                      .metadata["qa"]["between"]["n"])
    assert counts == [4, 12, 256]  # (256: qaMaxPositions; the finest grid has 17 * 17 - 4 = 285)


@pytest.mark.parametrize("placement", ["spread", "centers"])
def test_candidate_placement(placement):
    from psfmatch import SpatialCellSet
    cs = SpatialCellSet(Box2I((10, 20), (1000, 500)), 128, 128, placement)
    pos = cs.candidate_positions()
    assert (cs.nx, cs.ny) == (7, 3) and len(pos) == 21
    for cell, p in zip(cs.cells, pos):
        assert cell.bbox.contains(p)  # one candidate inside each cell
    xs = sorted({p.x for p in pos})
    if placement == "spread":
        assert xs[0] == 10 and xs[-1] == 1009  # edge to edge: no extrapolation to the corners
    else:
        assert xs[0] == 10 + 142 // 2
    between = cs.between_positions()
    assert (10.0, 20.0) in {(p.x, p.y) for p in between} or placement == "spread"
    assert not {(p.x, p.y) for p in between} & {(p.x, p.y) for p in pos}
    # the whole grid of candidate coordinates, midpoints and edges is there, less the candidates
    ax = sorted({p.x for p in between} | set(xs))
    ay = sorted({p.y for p in between} | {p.y for p in pos})
    assert len(between) == len(ax) * len(ay) - len(pos)
    assert [(p.x, p.y) for p in between] == sorted(((p.x, p.y) for p in between), key=lambda t: (t[1], t[0]))
    # a capped list is a subsample of the full one, in the same order: the box's corners, then the points
    # midway between candidates along both axes, then the others, each group evenly spaced
    full = [(p.x, p.y) for p in between]
    corners = {(x, y) for x in (ax[0], ax[-1]) for y in (ay[0], ay[-1])} & set(full)
    if placement != "spread":  # (spread candidates sit on the corners: none is held out)
        assert len(corners) == 4
    for m in (10, 5, 4, 3):
        capped = [(p.x, p.y) for p in cs.between_positions(m)]
        assert len(capped) == m and len(set(capped)) == m and set(capped) <= set(full)
        assert capped == sorted(capped, key=full.index)
        assert len(set(capped) & corners) == min(m, len(corners))
    cand_x, cand_y = set(xs) | {10.0, 1009.0}, {p.y for p in pos} | {20.0, 519.0}
    inner = [c for c in full if c[0] not in cand_x and c[1] not in cand_y and c not in corners]
    others = [c for c in full if c not in corners and c not in inner]
    for m, group in ((len(corners) + 9, inner), (len(corners) + len(inner) + 9, others)):
        capped = [(p.x, p.y) for p in cs.between_positions(m)]
        assert corners <= set(capped)
        if group is others:  # the others only once every inner point is in
            assert set(inner) <= set(capped)
        gaps = np.diff([group.index(c) for c in capped if c in group])
        assert len(gaps) == 8 and gaps.max() - gaps.min() <= 1  # the group's share evenly spaced
    assert cs.between_positions(0) == []
    # asked for more than the midpoints give, the intervals are divided in 4, 8, then 16 parts
    dense = [(p.x, p.y) for p in cs.between_positions(10 ** 6)]
    n_axis = [16 * (len(set(a) | {e0, e1}) - 1) + 1 for a, e0, e1 in ((xs, 10, 1009), ({p.y for p in pos}, 20, 519))]
    assert len(dense) == n_axis[0] * n_axis[1] - len(pos) and set(full) <= set(dense)
    assert len(cs.between_positions(len(between) + 1)) == len(between) + 1
    # a finer lattice's points come in only once the coarser ones are all there
    quarters = 4 * (n_axis[0] - 1) // 16 + 1, 4 * (n_axis[1] - 1) // 16 + 1
    for m in (len(between) + 1, len(between) + 40, quarters[0] * quarters[1] - len(pos) + 7):
        got = [(p.x, p.y) for p in cs.between_positions(m)]
        assert len(got) == m and set(full) <= set(got) and got == sorted(got, key=lambda t: (t[1], t[0]))
    at_quarters = {(p.x, p.y) for p in cs.between_positions(quarters[0] * quarters[1] - len(pos))}
    assert at_quarters <= {(p.x, p.y) for p in cs.between_positions(quarters[0] * quarters[1] - len(pos) + 7)}
    with pytest.raises(InvalidInputError, match="candidate placement must be one of"):
        SpatialCellSet(Box2I((0, 0), (10, 10)), 128, 128, "random")


def test_kernel_chosen_by_scale_by_fwhm_is_checked_against_the_exposure():
    """scaleByFwhm can choose a kernel larger than the configured one: larger than the exposure, the output was
    silently all border."""
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.kernelSize = 11
    config.kernel.active.scaleByFwhm = True
    exposure = Exposure(np.ones((30, 30), np.float32), psf=GaussianPsf(21, 21, 1.8))
    with pytest.raises(InvalidInputError, match=r"exposure \(30x30 pixels\) is no larger than the kernel's border "
                                                r"\(17 pixels on each side of a 35x35 kernel, the size the fit chose"):
        ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 6.0))


@pytest.mark.parametrize("n", [19, 15])
def test_automatic_kernel_fits_small_exposures(n):
    """The automatic kernel keeps its sizes within the exposure: the default 21 px it would not use must not
    refuse a 15 px exposure."""
    exposure = Exposure(np.ones((n, n), np.float32), psf=GaussianPsf(21, 21, 1.8))
    exposure.image[n // 2, n // 2] = 101.0
    result = ModelPsfMatchTask().run(exposure, GaussianPsf(31, 31, 2.6))
    k = result.psfMatchingKernel.getWidth()
    assert 2 * (k // 2) < n
    assert np.isfinite(result.psfMatchedExposure.image[n // 2, n // 2])
    explicit = ModelPsfMatchConfig()
    explicit.kernel.active.kernelSize = 21  # an explicit size is the user's: refused as before
    with pytest.raises(InvalidInputError, match=r"use a smaller kernelSize"):
        ModelPsfMatchTask(config=explicit).run(exposure, GaussianPsf(31, 31, 2.6))


def test_polynomial_model_far_from_the_origin_warns_of_its_precision():
    from psfmatch.errors import KernelQualityWarning
    bbox = Box2I((100000, 0), (512, 512))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.1, 0.05])
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialModelType = "polynomial"
    config.kernel.active.spatialKernelOrder = 4
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    with pytest.warns(KernelQualityWarning, match=r"spatialModelType='polynomial' over the box at \(100000, 0\): "
                                                  r"raw-pixel monomials of order 4 .* hold the kernel to only about "
                                                  r"[\d.e-]+ of its values; use spatialModelType='chebyshev1'"):
        fit = ModelPsfMatchTask(config=config).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    assert any("raw-pixel monomials" in n for n in fit.metadata["notes"])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)
        config.kernel.active.spatialModelType = "chebyshev1"
        ModelPsfMatchTask(config=config).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)


def test_fit_memory_estimate_bounds_a_delta_function_fit():
    """The estimate counted one copy of the normal equations; a delta-function fit holds four at once."""
    import tracemalloc

    from psfmatch.task import estimate_fit_memory
    bbox = Box2I((0, 0), (384, 384))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.1, 0.05])
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.name = "DF"
    config.kernel.active.kernelSize = 15
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64  # 36 candidates
    need, parts = estimate_fit_memory(config, 36, 21)
    tracemalloc.start()
    tracemalloc.reset_peak()
    ModelPsfMatchTask(config=config).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < need
    assert peak > 0.5 * (need - parts["work arrays"])  # and not absurdly above it either


def test_a_reference_image_truncated_by_its_own_smaller_stamp_warns():
    """An image reference padded with zeros to the fit's stamps showed no edge at all: no warning."""
    from psfmatch.errors import TruncatedPsfWarning
    from psfmatch.psf import ImagePsf
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 1.8))
    small = ImagePsf(GaussianPsf(15, 15, 2.6).computeKernelImage((0, 0)))  # edge at 0.027 of the peak
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    with pytest.warns(TruncatedPsfWarning, match=r"truncated by its own 15x15 stamp, padded with zeros to the "
                                                  r"fit's 31x31: its edge reaches 0.027 of its peak"):
        result = ModelPsfMatchTask(config=config).run(exposure, small)
    assert result.metadata["referenceEdgeToPeak"] == pytest.approx(0.0267, abs=1e-3)


def test_metadata_that_cannot_be_copied_is_refused_before_any_work():
    import threading
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 1.8))
    exposure.metadata["lock"] = threading.Lock()
    with pytest.raises(InvalidInputError, match=r"the exposure's metadata cannot be copied to the matched exposure "
                                                r"\(TypeError: .*\): remove or convert the entries \['lock'\]"):
        small_task(0).run(exposure, GaussianPsf(31, 31, 2.6))


def test_a_psf_image_on_other_pixels_than_the_exposure_warns():
    """An ImagePsf that records 0.03 arcsec pixels (HST-like) on an exposure of 0.2 arcsec pixels was matched
    without a word: the kernel is then fitted for pixels 7 times smaller than the image's."""
    import warnings

    from astropy.wcs import WCS

    from psfmatch.errors import PsfMatchWarning
    from psfmatch.psf import ImagePsf

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.crval = [150.0, 2.0]
    stamp = GaussianPsf(21, 21, 1.6).computeKernelImage((0, 0))
    img = np.random.default_rng(1).normal(size=(96, 96)).astype(np.float32)
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.kernelSize = 11
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 48
    for scale, warns in ((0.03, True), (0.2, False), (0.201, False), (None, False)):
        exposure = Exposure(img, variance=np.ones_like(img), psf=ImagePsf(stamp, pixel_scale=scale), wcs=wcs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6))
        said = [str(w.message) for w in caught if w.category is PsfMatchWarning]
        assert bool(said) is warns, (scale, said)
        if warns:
            assert said[0].startswith("the science PSF image has pixels of 0.03 arcsec, the exposure's WCS 0.2 "
                                      "arcsec") and "target_pixel_scale=exposure" in said[0]
            assert "on the command line image:FILE,target_pixel_scale=0.2)" in said[0]


def test_an_exposure_far_beyond_its_psf_models_region_warns():
    """A PSFEx model of a 2048x4096 CCD on a transposed 4096x2048 exposure was extrapolated to twice its region
    (references of sigma 13.5 px were chosen from it) without a word."""
    import warnings

    from psfmatch.errors import PsfMatchWarning

    region = Box2I((0, 0), (200, 400))
    psf = VariableGaussianPsf(21, 21, region, sigma=[1.8, 0.1, 0.05])
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 100

    def said(shape):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exposure = Exposure(np.zeros(shape, np.float32), psf=psf)
            ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 3.0))
        return [str(w.message) for w in caught if w.category is PsfMatchWarning and "fitted on" in str(w.message)]

    assert said((400, 200)) == [] and said((420, 210)) == []  # its region, and 5% beyond it
    msgs = said((200, 400))  # transposed
    assert len(msgs) == 1 and msgs[0].startswith(
        "the exposure (x 0..399, y 0..199) reaches beyond the region the science PSF model was fitted on (x 0..199, "
        "y 0..399) at x > 199 by 100% of that region's size")
    assert "width and height swapped?" in msgs[0]
    assert msgs[0].endswith("see read_psfex(origin=), psfex:FILE,origin=N on the command line)")


def test_fitted_region_is_seen_through_wrappers():
    """A model wrapped in PsfAdapter (a duck-typed model given to as_psf) or resized by the base class stated no
    region: the transposed exposure got no warning."""
    import warnings

    from psfmatch.errors import PsfMatchWarning
    from psfmatch.psf import PsfAdapter
    from psfmatch.psf.base import _ResizedPsf, model_domain

    region = Box2I((0, 0), (200, 400))
    inner = VariableGaussianPsf(21, 21, region, sigma=[1.8, 0.1, 0.05])

    class Duck:  # a user's model: kernel images and a domain, nothing else
        def computeKernelImage(self, position):
            return inner.computeKernelImage(position)

        def getBBox(self):
            return region

    class NoDomain:
        def computeKernelImage(self, position):
            return inner.computeKernelImage(position)

        def getBBox(self):
            raise RuntimeError("no domain")

    assert model_domain(PsfAdapter(Duck())) == region
    assert model_domain(_ResizedPsf(PsfAdapter(Duck()), 25, 25)) == region
    assert model_domain(PsfAdapter(NoDomain())) is None and model_domain(GaussianPsf(21, 21, 2.0)) is None
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 100
    for psf in (PsfAdapter(Duck()), _ResizedPsf(PsfAdapter(Duck()), 25, 25)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exposure = Exposure(np.zeros((200, 400), np.float32), psf=psf)  # transposed
            ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 3.0))
        msgs = [str(w.message) for w in caught if w.category is PsfMatchWarning and "fitted on" in str(w.message)]
        assert len(msgs) == 1 and "at x > 199 by 100% of that region's size" in msgs[0]


def test_size_holding_is_the_side_from_which_every_crop_holds_the_flux():
    from psfmatch.diagnostics import flux_outside, size_holding

    # a core with a negative ring and a positive wing beyond it (as PSFEx stamps have): the flux outside a
    # crop first overshoots below zero, then comes back; every crop from the answer on holds within 1e-3
    y, x = np.mgrid[-20:21, -20:21]
    r = np.hypot(x, y)
    stamp = np.exp(-0.5 * (r / 1.5) ** 2) - 0.02 * np.exp(-0.5 * ((r - 6) / 1.0) ** 2) \
        + 0.004 * np.exp(-0.5 * ((r - 12) / 2.0) ** 2)
    side = size_holding(stamp, 1e-3)
    assert all(abs(flux_outside(stamp, s)) <= 1e-3 for s in range(side, 42, 2))
    assert abs(flux_outside(stamp, side - 2)) > 1e-3
    assert min(flux_outside(stamp, s) for s in range(1, 42, 2)) < 0  # (not monotonic: the ring's overshoot)
    # an even flat stamp: a 3x3 crop leaves 44% outside
    assert size_holding(np.ones((4, 4)), 1e-3) == 4 and size_holding(np.zeros((5, 5)), 1e-3) == 1
