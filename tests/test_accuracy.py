"""Accuracy of the match: physics checks of science (*) kernel against the reference (issue 2)."""

import numpy as np
import pytest
from scipy import signal

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.demo import render_stars
from psfmatch.moments import measure_shape
from psfmatch.psf import GaussianPsf, VariableGaussianPsf
from psfmatch.psf.base import pad_or_crop

TOL = 2e-3


def varying_psf(bbox):
    """sigma 1.6-2.0 px across the field, |e| up to ~0.06."""
    return VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.2, 0.0], e1=[0.0, 0.04, 0.0], e2=[0.0, 0.0, 0.045])


@pytest.fixture(scope="module")
def field_1024():
    bbox = Box2I((0, 0), (1024, 1024))
    psf = varying_psf(bbox)
    ref = GaussianPsf(31, 31, 2.6)
    rng = np.random.default_rng(7)
    xs = rng.uniform(40, 984, 40) + 0.0
    ys = rng.uniform(40, 984, 40)
    # keep the stars isolated
    keep = [i for i in range(len(xs)) if all(np.hypot(xs[i] - xs[j], ys[i] - ys[j]) > 40 for j in range(i))]
    xs, ys = xs[keep], ys[keep]
    flux = np.full(len(xs), 1e5)
    img = render_stars((1024, 1024), psf, xs, ys, flux)
    exposure = Exposure(img.astype(np.float32), variance=np.ones((1024, 1024), np.float32), psf=psf)
    config = ModelPsfMatchConfig()
    result = ModelPsfMatchTask(config=config).run(exposure, ref)
    return exposure, ref, result, xs, ys, flux


def test_field_parameters(field_1024):
    exposure, ref, result, *_ = field_1024
    psf = exposure.getPsf()
    sizes = [psf.parameters((x, y))[0] for x in (0, 1023) for y in (0, 1023)]
    assert 1.55 < min(sizes) < 1.65 and 1.95 < max(sizes) < 2.05
    assert result.metadata["nCandidatesUsed"] == 64


def test_residual_at_candidates_and_between(field_1024):
    exposure, ref, result, *_ = field_1024
    kernel = result.psfMatchingKernel
    psf = exposure.getPsf()
    P = result.metadata["psfSize"]
    rng = np.random.default_rng(1)
    cands = [(c.x, c.y) for c in result.kernelCellSet.candidates()]
    between = list(zip(rng.uniform(0, 1023, 40), rng.uniform(0, 1023, 40)))
    worst = 0.0
    for pos in cands + between:
        S = pad_or_crop(psf.computeKernelImage(pos), P, P)
        R = pad_or_crop(ref.computeKernelImage(pos), P, P)
        K = kernel.computeImage(pos)
        matched = signal.convolve(S, K, mode="same")  # the convention: a true convolution
        worst = max(worst, np.abs(matched - R).max() / R.max())
    assert worst <= TOL
    assert result.metadata["qa"]["candidates"]["residualMaxWorst"] <= TOL
    assert result.metadata["qa"]["between"]["residualMaxWorst"] <= TOL
    assert result.metadata["qa"]["between"]["n"] == 64  # as many held-out positions as cells


def test_point_sources_come_out_with_reference_psf(field_1024):
    exposure, ref, result, xs, ys, flux = field_1024
    out = result.psfMatchedExposure.image
    sigma_ref = measure_shape(ref.computeKernelImage((0, 0))).sigma
    for x, y, f in zip(xs, ys, flux):
        expect = f * ref.computeImage((x, y))
        box = ref.computeImageBBox((x, y))
        sy, sx = box.slices()
        got = out[sy, sx].astype(np.float64)
        assert np.abs(got - expect).max() / expect.max() <= TOL
        shape = measure_shape(got)
        assert abs(shape.sigma / sigma_ref - 1) < 0.005
        assert abs(shape.e1) < 0.005 and abs(shape.e2) < 0.005


def test_flux_conserved(field_1024):
    exposure, ref, result, xs, ys, flux = field_1024
    out = result.psfMatchedExposure.image
    for x, y, f in zip(xs, ys, flux):
        xi, yi = int(round(x)), int(round(y))
        assert abs(out[yi - 20:yi + 21, xi - 20:xi + 21].sum() / f - 1) < 1e-4


def test_kernel_sum_scales_flux_and_variance():
    bbox = Box2I((0, 0), (256, 256))
    psf = GaussianPsf(21, 21, 1.8)
    img = render_stars((256, 256), psf, [128.3], [127.6], [1e5])
    exposure = Exposure(img.astype(np.float32), variance=np.full((256, 256), 4.0, np.float32), psf=psf)
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 0
    task = ModelPsfMatchTask(config=config)
    r1 = task.run(exposure, GaussianPsf(31, 31, 2.6))
    r27 = task.run(exposure, GaussianPsf(31, 31, 2.6), kernelSum=2.7)
    f1 = r1.psfMatchedExposure.image[108:149, 108:149].sum()
    f27 = r27.psfMatchedExposure.image[108:149, 108:149].sum()
    assert abs(f1 / 1e5 - 1) < 1e-4
    assert abs(f27 / (2.7e5) - 1) < 1e-4
    v1 = r1.psfMatchedExposure.variance[128, 128]
    v27 = r27.psfMatchedExposure.variance[128, 128]
    assert v27 / v1 == pytest.approx(2.7 ** 2, rel=1e-5)
    assert bbox == exposure.getBBox()


class Lopsided:
    """A user PSF object with only computeKernelImage: a core plus an offset blob (asymmetric)."""

    def computeKernelImage(self, position):
        x, y = position  # positions unpack as (x, y)
        v, u = np.mgrid[-12:13, -12:13].astype(float)
        core = np.exp(-0.5 * (u * u + v * v) / 1.8 ** 2)
        blob = 0.25 * np.exp(-0.5 * ((u - 2.0) ** 2 + (v - 1.0) ** 2) / 1.2 ** 2)
        return core + blob


def test_lopsided_psf_comes_out_round_and_centred():
    psf = Lopsided()
    ref = GaussianPsf(31, 31, 3.2)
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 0
    # stars drawn with the lopsided PSF, convolved by the task
    H = W = 256
    img = np.zeros((H, W))
    stamp = psf.computeKernelImage((0, 0))
    stamp = stamp / stamp.sum()
    centres = [(80, 90), (170, 160)]
    for cx, cy in centres:
        img[cy - 12:cy + 13, cx - 12:cx + 13] += 1e4 * stamp
    exposure = Exposure(img.astype(np.float32), psf=psf)
    result = ModelPsfMatchTask(config=config).run(exposure, ref)
    K = result.psfMatchingKernel.computeImage((128, 128))
    # convolving the science PSF with the returned kernel image gives the reference
    P = result.metadata["psfSize"]
    S = pad_or_crop(stamp, P, P)
    R = ref.resized(P, P).computeKernelImage((0, 0))
    matched = signal.convolve(S, K, mode="same")
    assert np.abs(matched - R).max() / R.max() < TOL
    # ... and correlating (LSST's convention) would not: the convention is pinned
    wrong = signal.correlate(S, K, mode="same")
    assert np.abs(wrong - R).max() / R.max() > 10 * TOL
    # the stars in the matched exposure are round and centred on the PSF centre
    for cx, cy in centres:
        cut = result.psfMatchedExposure.image[cy - 15:cy + 16, cx - 15:cx + 16].astype(float)
        shape = measure_shape(cut)
        assert abs(shape.x) < 0.01 and abs(shape.y) < 0.01
        assert abs(shape.e1) < 0.005 and abs(shape.e2) < 0.005
        assert abs(shape.sigma / 3.2 - 1) < 0.005
    # the input PSF really is lopsided
    s_in = measure_shape(stamp)
    assert np.hypot(s_in.x, s_in.y) > 0.2


def test_delta_function_recovers_known_kernel():
    """lsst-reference 5.3: a delta-function science stamp, reference = delta (*) a Gaussian kernel."""
    from psfmatch.kernel import makeDeltaFunctionBasisList
    from psfmatch.solve import GramBuilder, constrained_basis, reduce_constrained, solve_candidates, \
        transform_equations

    k = 21
    v, u = np.mgrid[-10:11, -10:11].astype(float)
    truth = np.exp(-0.5 * (u ** 2 / 2.0 ** 2 + v ** 2 / 3.0 ** 2))
    truth /= truth.sum()
    P = 51
    S = np.zeros((P, P))
    S[P // 2, P // 2] = 1.0
    R = signal.convolve(S, truth, mode="same")
    basis = makeDeltaFunctionBasisList(k)
    eq = GramBuilder(basis, "full").build(S[None], R[None])
    imgs, order, ratios, s_p = constrained_basis(basis)
    red = reduce_constrained(transform_equations(eq, order, ratios, s_p))
    coeffs, rank, cond = solve_candidates(red, 1e-10)
    kernel = np.tensordot(coeffs[0], imgs, axes=1)
    assert rank[0] == k * k - 1
    np.testing.assert_allclose(kernel, truth, rtol=1e-5, atol=1e-12)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["AL", "DF"])
def test_pca_and_bases_accuracy(name):
    bbox = Box2I((0, 0), (512, 512))
    psf = varying_psf(bbox)
    config = ModelPsfMatchConfig()
    config.kernel.name = name
    config.kernel.active.usePcaForSpatialKernel = True
    fit = ModelPsfMatchTask(config=config).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    assert fit.kernel.basis.kind == "pca"
    assert fit.metadata["qa"]["candidates"]["residualMaxWorst"] <= TOL
    assert fit.metadata["qa"]["between"]["residualMaxWorst"] <= TOL
    assert abs(fit.kernel.getSum((3, 500)) - 1) < 1e-7
