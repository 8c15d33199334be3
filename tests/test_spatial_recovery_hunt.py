"""Recovery of known spatial PSF variations, and the LSST API surface (review: spatial recovery hunt).

Physics checks use analytic identities: for point-sampled Gaussians the kernel's unweighted second
moments are ``C_ref - C_sci(x, y)`` (per axis and the cross term), its first moment is the
reference-minus-science centroid, and its sum is ``kernelSum``; unweighted moments add under
convolution for any shape (PSFEx-like mixtures included).
"""

import functools
import re
import warnings

import numpy as np
import pytest

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, Point2D
from psfmatch.errors import KernelQualityWarning, PsfMatchError
from psfmatch.psf import GaussianPsf, Psf, PsfexPsf, VariableGaussianPsf
from psfmatch.psf.analytic import elliptical_gaussian
from psfmatch.psf.base import pad_or_crop_stack
from psfmatch.qa import match_quality

SREF = 3.2


def moments(k):
    """(sum, cx, cy, Ixx, Iyy, Ixy): unweighted moments of a stamp about its centre pixel."""
    h, w = k.shape
    y, x = np.mgrid[0:h, 0:w]
    x = x - w // 2
    y = y - h // 2
    s = k.sum()
    cx, cy = (k * x).sum() / s, (k * y).sum() / s
    return (s, cx, cy, (k * (x - cx) ** 2).sum() / s, (k * (y - cy) ** 2).sum() / s,
            (k * (x - cx) * (y - cy)).sum() / s)


def _exposure(psf, W, H, xy0=(0, 0), image=None):
    img = np.zeros((H, W), np.float32) if image is None else image
    return Exposure(img, variance=np.ones((H, W), np.float32), psf=psf, xy0=xy0)


def _config(order=2, kind="chebyshev1", placement="spread", cell=128, auto=False):
    cfg = ModelPsfMatchConfig()
    cfg.autoKernel = auto
    a = cfg.kernel.active
    a.spatialKernelOrder = order
    a.spatialModelType = kind
    a.candidatePlacement = placement
    a.sizeCellX = cell
    a.sizeCellY = cell
    return cfg


def _run(exp, ref, cfg, kernelSum=1.0):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ModelPsfMatchTask(config=cfg).run(exp, ref, kernelSum=kernelSum)
    return res, caught


# --- a non-square exposure away from the origin, with sigma, e1 and e2 varying over the field -------------
X0, Y0, W, H = 1000, 2000, 512, 384
BOX = Box2I((X0, Y0), (W, H))
VARPSF = VariableGaussianPsf(25, 25, BOX, sigma=[1.8, 0.3, 0.0], e1=[0.0, 0.0, 0.1], e2=[0.05, 0.05, 0.0])
POSITIONS = [(X0, Y0), (X0 + W - 1, Y0 + H - 1), (X0, Y0 + H - 1), (X0 + W - 1, Y0), (X0 + W / 2, Y0 + H / 2),
             (X0 + 37.3, Y0 + 301.7), (X0 + 400.5, Y0 + 20.25), (X0 + 5, Y0 + 190), (X0 + 255, Y0 + 383)]


@functools.lru_cache(maxsize=None)
def _var_run(order, kind):
    return _run(_exposure(VARPSF, W, H, (X0, Y0)), GaussianPsf(41, 41, SREF), _config(order, kind))


def _expected_kernel_moments(psf, x, y):
    s, e1, e2 = psf.parameters((x, y))
    s2 = s * s
    return SREF ** 2 - s2 * (1 + e1), SREF ** 2 - s2 * (1 - e1), -s2 * e2


@pytest.mark.parametrize("kind", ["chebyshev1", "polynomial"])
def test_kernel_moments_follow_the_known_variation_everywhere_not_only_at_candidates(kind):
    res, _ = _var_run(2, kind)
    K = res.psfMatchingKernel
    for x, y in POSITIONS:
        s, cx, cy, kxx, kyy, kxy = moments(K.computeImage((x, y)))
        exx, eyy, exy = _expected_kernel_moments(VARPSF, x, y)
        assert abs(s - 1.0) < 1e-10
        assert abs(cx) < 1e-9 and abs(cy) < 1e-9
        assert abs(kxx - exx) < 0.03 and abs(kyy - eyy) < 0.03 and abs(kxy - exy) < 0.03, (x, y)
    assert res.metadata["qa"]["flags"] == []


def test_kernel_sum_is_kernel_sum_at_every_position_including_outside_cells():
    res, _ = _run(_exposure(VARPSF, W, H, (X0, Y0)), GaussianPsf(41, 41, SREF), _config(2), kernelSum=2.5)
    K = res.psfMatchingKernel
    xs = np.array([p[0] for p in POSITIONS])
    ys = np.array([p[1] for p in POSITIONS])
    sums = K.computeImages(xs, ys).sum(axis=(1, 2))
    np.testing.assert_allclose(sums, 2.5, rtol=0, atol=1e-9)
    np.testing.assert_allclose(K.computeImage((X0 + 3.3, Y0 + 7.7), normalize=True).sum(), 1.0, atol=1e-12)


def test_the_two_spatial_model_types_give_the_same_kernel():
    a = _var_run(2, "chebyshev1")[0].psfMatchingKernel
    b = _var_run(2, "polynomial")[0].psfMatchingKernel
    xs = np.array([p[0] for p in POSITIONS])
    ys = np.array([p[1] for p in POSITIONS])
    assert np.abs(a.computeImages(xs, ys) - b.computeImages(xs, ys)).max() < 1e-9


@pytest.mark.parametrize("order, flagged", [(0, True), (1, True), (2, False)])
def test_qa_flags_an_order_that_cannot_follow_the_variation(order, flagged):
    res, caught = _var_run(order, "chebyshev1")
    qa = res.metadata["qa"]
    worst = max(qa["candidates"]["residualMaxWorst"], qa["between"]["residualMaxWorst"])
    assert ("RESIDUAL_HIGH" in qa["flags"]) is flagged
    assert (worst > 0.01) is flagged
    if order == 0:
        assert worst > 0.1  # sigma 1.5 .. 2.1 px with one kernel
        # the sign of the size mismatch follows the science PSF: broader science -> matched too broad
        cands = sorted(res.kernelCellSet.candidates(), key=lambda c: c.x)
        assert cands[0].qa["sizeMismatch"] < -0.02 and cands[-1].qa["sizeMismatch"] > 0.02
    else:
        assert worst < (0.02 if order == 1 else 2e-3)


def test_reported_qa_is_the_worst_of_a_dense_grid_with_centred_candidates_extrapolating_to_corners():
    psf = VariableGaussianPsf(25, 25, Box2I((300, -200), (700, 450)),
                              sigma=[1.8, 0.25, 0.1, 0.1, -0.05, 0.05, 0.08, 0.0, 0.0, -0.06],
                              e1=[0.0, 0.05, -0.03], e2=[0.02, 0.0, 0.04])
    res, _ = _run(_exposure(psf, 700, 450, (300, -200)), GaussianPsf(41, 41, SREF),
                  _config(1, placement="centers"))
    K = res.psfMatchingKernel
    P = res.metadata["psfSize"]
    xs, ys = np.meshgrid(np.linspace(300, 999, 15), np.linspace(-200, 249, 11))
    xs, ys = xs.ravel(), ys.ravel()
    S = pad_or_crop_stack(psf.computeKernelImages(list(zip(xs, ys))), P, P)
    R = np.broadcast_to(res.psfMatchedExposure.getPsf().computeKernelImage((0, 0)), S.shape)
    dense = float(match_quality(S, R, K.computeImages(xs, ys))["residualMax"].max())
    qa = res.metadata["qa"]
    reported = max(qa["candidates"]["residualMaxWorst"], qa["between"]["residualMaxWorst"])
    assert dense > 0.05  # an order-1 model of a cubic variation, extrapolated to the corners
    assert reported >= 0.98 * dense


class _ShiftedPsf(Psf):
    """A round Gaussian (sigma 2) whose centroid moves linearly over the field: (0.4 u, -0.3 v)."""

    def __init__(self, box):
        self.box = box

    def uv(self, x, y):
        b = self.box
        return ((x - (b.getMinX() - 0.5)) / b.getWidth() * 2 - 1, (y - (b.getMinY() - 0.5)) / b.getHeight() * 2 - 1)

    def _kernel_image(self, x, y):
        u, v = self.uv(x, y)
        return elliptical_gaussian(25, 25, 4.0, 4.0, 0.0, 0.4 * u, -0.3 * v)

    def getAveragePosition(self):
        return self.box.getCenter()


def test_kernel_centroid_is_the_reference_minus_science_centroid_over_the_field():
    psf = _ShiftedPsf(BOX)
    res, caught = _run(_exposure(psf, W, H, (X0, Y0)), GaussianPsf(41, 41, 3.0), _config(2))
    K = res.psfMatchingKernel
    for x, y in POSITIONS:
        u, v = psf.uv(x, y)
        s, cx, cy, *_ = moments(K.computeImage((x, y)))
        assert abs(s - 1) < 1e-10
        assert cx == pytest.approx(-0.4 * u, abs=0.01) and cy == pytest.approx(0.3 * v, abs=0.01)
    for c in res.kernelCellSet.candidates():  # the adaptive shift of the stars is the science offset, negated
        u, v = psf.uv(c.x, c.y)
        assert c.qa["kernelShiftDx"] == pytest.approx(-0.4 * u, abs=2e-3)
        assert c.qa["kernelShiftDy"] == pytest.approx(0.3 * v, abs=2e-3)
    assert "KERNEL_SHIFT" in res.metadata["qa"]["flags"]
    assert any(issubclass(w.category, KernelQualityWarning) and "moves the stars" in str(w.message) for w in caught)


def test_psfex_like_polynomial_mixture_moments_add_under_convolution():
    n = 31
    G0 = elliptical_gaussian(n, n, 1.7 ** 2, 1.7 ** 2, 0.0)
    Gx = elliptical_gaussian(n, n, 2.2 ** 2, 1.7 ** 2, 0.0)
    Gy = elliptical_gaussian(n, n, 1.7 ** 2, 1.9 ** 2, 0.5)
    w, h = 600, 400
    pz, ps = (w / 2 + 0.5, h / 2 + 0.5), (w, h)
    basis = np.array([G0 + 0.5 * (Gx - G0) + 0.25 * (Gy - G0), 0.5 * (Gx - G0), 0.25 * (Gy - G0)])
    psf = PsfexPsf(basis, degree=1, polzero=pz, polscal=ps, psf_samp=1.0)  # 1-based file convention
    m0, mx, my = (np.array(moments(G)[3:]) for G in (G0, Gx, Gy))
    res, _ = _run(_exposure(psf, w, h), GaussianPsf(41, 41, 3.0), _config(1))
    K = res.psfMatchingKernel
    mr = np.array(moments(res.psfMatchedExposure.getPsf().computeKernelImage((0, 0)))[3:])
    for x, y in [(0, 0), (599, 399), (300, 200), (10, 390), (590, 5)]:
        u, v = (x + 1 - pz[0]) / ps[0], (y + 1 - pz[1]) / ps[1]
        a, b = 0.5 + 0.5 * u, 0.25 + 0.25 * v
        truth = (1 - a - b) * m0 + a * mx + b * my
        np.testing.assert_allclose(moments(psf.computeKernelImage((x, y)))[3:], truth, atol=1e-9)
        np.testing.assert_allclose(moments(K.computeImage((x, y)))[3:], mr - truth, atol=0.06)


def test_every_public_path_gives_the_same_kernel():
    """computeImage, afw's form, term images, computeImages and the convolution of point sources agree."""
    x0, y0, w, h = -150, 7000, 300, 200
    psf = VariableGaussianPsf(25, 25, Box2I((x0, y0), (w, h)), sigma=[1.8, 0.3, -0.2, 0.1, 0.05, 0.0],
                              e1=[0.0, 0.05, 0.1], e2=[0.05, 0.1, 0.0])
    pts = [(x0 + 21, y0 + 21), (x0 + w - 22, y0 + h - 22), (x0 + 150, y0 + 100), (x0 + 33, y0 + 170)]
    img = np.zeros((h, w), np.float32)
    for x, y in pts:
        img[y - y0, x - x0] = 1000.0
    res, _ = _run(_exposure(psf, w, h, (x0, y0), img), GaussianPsf(41, 41, 3.0), _config(2, cell=64))
    K = res.psfMatchingKernel
    k = K.getWidth()
    r = k // 2
    out = res.psfMatchedExposure.image
    uu, vv = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1))
    for x, y in pts:
        cut = out[y - y0 - r:y - y0 + r + 1, x - x0 - r:x - x0 + r + 1] / 1000.0
        # out(p + u) = K_{p+u}(u): the kernel evaluated at each output pixel
        ims = K.computeImages((x + uu).ravel(), (y + vv).ravel())
        want = ims[np.arange(k * k), (vv + r).ravel(), (uu + r).ravel()].reshape(k, k)
        assert np.all(np.isfinite(cut))
        assert np.abs(cut - want).max() < 1e-6
    x, y = x0 + 77.7, y0 + 3.2
    ref = K.computeImage((x, y))
    f = K.getSpatialFunction().evaluate(x, y)
    assert np.abs(np.tensordot(f, K.term_images(), 1) - ref).max() < 1e-12
    filled = np.zeros((k, k))
    assert K.computeImage(filled, False, x, y) == pytest.approx(1.0, abs=1e-12)
    assert np.array_equal(filled, ref)
    assert np.array_equal(K.computeImage(Point2D(x, y)), ref)
    assert np.array_equal(K.computeImageLsst((x, y)), ref[::-1, ::-1])
    assert np.abs(K.computeImages([x], [y])[0] - ref).max() < 1e-15
    params = K.getKernelParameters((x, y))
    assert np.abs(np.tensordot(params, np.array(K.getKernelList()), 1) - ref).max() < 1e-12


def test_the_convolution_is_exact_across_fft_tiles_with_an_origin():
    rng = np.random.default_rng(1)
    x0, y0, w, h = 517, -91, 333, 210
    psf = VariableGaussianPsf(21, 21, Box2I((x0, y0), (w, h)), sigma=[1.8, 0.3, -0.2], e1=[0.0, 0.05, 0.1],
                              e2=[0.05])
    img = (rng.normal(size=(h, w)) * 10 + 100).astype(np.float32)
    var = rng.uniform(1, 5, size=(h, w)).astype(np.float32)
    cfg = _config(2, cell=64)
    cfg.convolveTileSize = 64
    exp = Exposure(img, variance=var, psf=psf, xy0=(x0, y0))
    res, _ = _run(exp, GaussianPsf(31, 31, 3.0), cfg, kernelSum=1.7)
    K = res.psfMatchingKernel
    r = K.getWidth() // 2
    o = res.psfMatchedExposure
    picks = [(r, r), (w - r - 1, h - r - 1), (r, h - r - 1), (w - r - 1, r), (63, 64), (64, 63), (127, 128),
             (128, 127)] + [(int(rng.integers(r, w - r)), int(rng.integers(r, h - r))) for _ in range(30)]
    for ix, iy in picks:
        Kx = K.computeImage((x0 + ix, y0 + iy))
        patch = img[iy - r:iy + r + 1, ix - r:ix + r + 1].astype(np.float64)[::-1, ::-1]
        vpatch = var[iy - r:iy + r + 1, ix - r:ix + r + 1].astype(np.float64)[::-1, ::-1]
        assert o.image[iy, ix] == pytest.approx((Kx * patch).sum(), rel=1e-5)
        assert o.variance[iy, ix] == pytest.approx((Kx ** 2 * vpatch).sum(), rel=1e-3)
    assert np.isnan(o.image[:r]).all() and np.isinf(o.variance[:, -r:]).all()


# --- Part 2: the LSST API surface ---------------------------------------------------------------------------


def test_lsst_config_defaults_and_ranges():
    c = ModelPsfMatchConfig()
    al = c.kernel["AL"]
    assert (c.kernel.name, c.doAutoPadPsf, c.autoPadPsfTo, c.padPsfBy) == ("AL", True, 1.4, 0)
    assert (al.kernelSize, al.spatialKernelOrder, al.spatialModelType, al.sizeCellX, al.sizeCellY) == \
        (21, 2, "chebyshev1", 128, 128)
    assert (al.alardNGauss, list(al.alardSigGauss), list(al.alardDegGauss)) == (3, [0.7, 1.5, 3.0], [4, 2, 2])
    assert (al.scaleByFwhm, al.usePcaForSpatialKernel, al.numPrincipalComponents) == (False, False, 5)
    df = c.kernel["DF"]
    assert (df.lambdaValue, df.lambdaScaling, df.centralRegularizationStencil, df.usePcaForSpatialKernel) == \
        (0.2, 1e-4, 9, True)
    c.autoPadPsfTo = 1.0
    with pytest.raises(ValueError, match=r"autoPadPsfTo: out of range \[1.0, 2.0\); got 2.0"):
        c.autoPadPsfTo = 2.0
    with pytest.raises(ValueError, match="nStarPerCell is an LSST field that psfmatch omits"):
        c.kernel.active.nStarPerCell = 5
    with pytest.raises(ValueError, match="spatialModelType: must be one of 'chebyshev1', 'polynomial'; got 'foo'"):
        c.kernel.active.spatialModelType = "foo"


@pytest.mark.parametrize("order", [0, 1, 3])
def test_spatial_parameters_have_lsst_layout(order):
    psf = VariableGaussianPsf(21, 21, Box2I((0, 0), (512, 512)), sigma=[1.8, 0.2, 0.1])
    res, _ = _run(_exposure(psf, 512, 512), GaussianPsf(31, 31, 3.0), _config(order, cell=96), kernelSum=2.0)
    K = res.psfMatchingKernel
    n_s = (order + 1) * (order + 2) // 2
    sp = K.getSpatialParameters()
    assert sp.shape == (27, n_s) and K.getNSpatialParameters() == n_s and K.getNKernelParameters() == 27
    assert sp[0, 0] == 2.0 and np.all(sp[0, 1:] == 0)  # basis 0: kernelSum, constant
    assert K.getKernelParameters((10.0, 500.0))[0] == 2.0
    assert K.isSpatiallyVarying() is (order > 0)
    assert K.getSum((10.0, 500.0)) == pytest.approx(2.0, abs=1e-10)


def test_psf_protocol_places_and_measures_as_lsst():
    psf = GaussianPsf(21, 21, 2.0)
    img = psf.computeImage(Point2D(10.3, 20.7))
    box = psf.computeImageBBox(Point2D(10.3, 20.7))
    s, cx, cy, *_ = moments(img)
    assert box.getMinX() + img.shape[1] // 2 + cx == pytest.approx(10.3, abs=1e-5)
    assert box.getMinY() + img.shape[0] // 2 + cy == pytest.approx(20.7, abs=1e-5)
    assert (box.getMinX(), box.getMinY()) == (0, 11)
    b = psf.computeBBox(Point2D(10.3, 20.7))
    assert (b.getMinX(), b.getMinY(), b.getWidth(), b.getHeight()) == (-10, -10, 21, 21)
    q = VARPSF.computeShape(Point2D(X0 + 400.0, Y0 + 50.0))
    sg, e1, e2 = VARPSF.parameters((X0 + 400.0, Y0 + 50.0))
    assert (q.getIxx(), q.getIyy(), q.getIxy()) == pytest.approx((sg * sg * (1 + e1), sg * sg * (1 - e1),
                                                                   sg * sg * e2), abs=1e-6)
    assert psf.resized(31, 31).computeKernelImage((0, 0)).shape == (31, 31)


def test_output_exposure_carries_the_reference_resized_to_the_stamp_size():
    res, _ = _var_run(2, "chebyshev1")
    out_psf = res.psfMatchedExposure.getPsf()
    P = res.metadata["psfSize"]
    assert P == 31  # nextOddInteger(21 * 1.4), larger than the science 25
    assert isinstance(out_psf, GaussianPsf) and out_psf.getSigma() == SREF
    assert out_psf.computeKernelImage((0, 0)).shape == (P, P)
    assert res.psfMatchedExposure.getBBox() == BOX


# --- defects ----------------------------------------------------------------------------------------------


def test_residual_remedy_names_the_explicit_spatial_order_it_honours():
    """With autoKernel on and spatialKernelOrder set explicitly, the RESIDUAL_HIGH remedy named
    autoKernelMaxSpatialOrder (no effect) instead of spatialKernelOrder."""
    psf = VariableGaussianPsf(21, 21, Box2I((0, 0), (512, 512)), sigma=[1.8, 0.3, 0.0])
    cfg = ModelPsfMatchConfig()  # autoKernel on (the default)
    cfg.kernel.active.spatialKernelOrder = 0  # the user's choice, honoured by autoKernel
    cfg.autoKernelMaxSpatialOrder = 4  # what the current remedy asks for: changes nothing
    res, caught = _run(_exposure(psf, 512, 512), GaussianPsf(31, 31, 3.0), cfg)
    assert res.metadata["spatialKernelOrder"] == 0
    assert res.metadata["qa"]["between"]["residualMaxWorst"] > 0.05
    msg = next(str(w.message) for w in caught if "matched-PSF residual" in str(w.message))
    assert re.search(r"\bspatialKernelOrder\b", msg), msg
    assert "autoKernelMaxSpatialOrder" not in msg, msg
    assert "a higher spatialKernelOrder (you set 0: the automatic mode keeps it)" in msg


def test_candidate_kernel_image_with_afw_solution_selector():
    """KernelCandidate.getKernelImage(KernelCandidate.ORIG), afw's call, raised a bare TypeError, and getKsum was
    missing; the kept solution's selector is accepted, the other is refused naming the call to make."""
    from psfmatch.cells import KernelCandidate
    from psfmatch.errors import InvalidInputError

    res, _ = _var_run(2, "chebyshev1")
    cand = next(res.kernelCellSet.candidates())
    assert cand.solution == "ORIG"
    for which in (KernelCandidate.ORIG, "orig", KernelCandidate.RECENT, None):
        assert np.array_equal(cand.getKernelImage(which), cand.getKernelImage())
    assert cand.getKsum(KernelCandidate.ORIG) == cand.getKernelSum() == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match=r"getKernelImage\(PCA\): this candidate keeps only its ORIG "
                                                r"solution \(its own; no PCA basis was used\); call getKernelImage\(\)"):
        cand.getKernelImage(KernelCandidate.PCA)
    with pytest.raises(InvalidInputError, match=r"getKsum: the solution must be KernelCandidate.ORIG, PCA or RECENT"):
        cand.getKsum(3)
