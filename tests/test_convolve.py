"""Applying a kernel to a masked image (psfmatch.convolve): the image, variance and mask contracts."""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from psfmatch import Box2I, Exposure, MemoryLimitError, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.convolve import (convolve_masked_image, dilate_mask, estimate_memory, footprint_rectangles,
                               mask_footprint, spatial_term_images)
from psfmatch.errors import InvalidInputError, KernelQualityWarning
from psfmatch.image import MaskedImage
from psfmatch.kernel import makeAlardLuptonBasisList
from psfmatch.kernel.kernel import LinearCombinationKernel
from psfmatch.kernel.spatial import SpatialFunction
from psfmatch.psf import GaussianPsf, VariableGaussianPsf


def _constant_kernel(sigma=1.5, k=15, kernel_sum=1.0):
    basis = makeAlardLuptonBasisList(k // 2, 1, (sigma,), (0,))
    return LinearCombinationKernel(basis, [1.0], kernel_sum=kernel_sum)


def _varying_kernel(kind="chebyshev1", bbox=Box2I((0, 0), (200, 160)), k=13, seed=3):
    """An AL kernel whose coefficients vary strongly (order 2) over ``bbox``."""
    basis = makeAlardLuptonBasisList(k // 2, 2, (1.0, 2.0), (2, 1))
    rng = np.random.default_rng(seed)
    sf = SpatialFunction(kind, 2, bbox)
    coeffs = np.zeros((len(basis), sf.nterms))
    coeffs[0, 0] = 1.0
    coeffs[1:] = rng.normal(0, 0.05, (len(basis) - 1, sf.nterms))
    if kind == "polynomial":  # raw pixel monomials: scale the terms to the box
        c = bbox.getCenter()
        scale = np.array([1.0 / (max(abs(c.x), 1) ** p * max(abs(c.y), 1) ** q) for p, q in sf.terms])
        coeffs[1:] *= scale
    return LinearCombinationKernel(basis, coeffs, sf, 1.0, bbox)


def test_constant_kernel_matches_scipy():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(90, 110))
    var = rng.uniform(1, 3, size=(90, 110))
    K = _constant_kernel()
    out = convolve_masked_image(MaskedImage(img, variance=var), K, tile=48)
    ref_i = ndimage.convolve(img, K.computeImage(), mode="constant")
    ref_v = ndimage.convolve(var, K.computeImage() ** 2, mode="constant")
    h = K.getWidth() // 2
    inner = (slice(h, -h), slice(h, -h))
    np.testing.assert_allclose(out.image[inner], ref_i[inner], atol=1e-12)
    np.testing.assert_allclose(out.variance[inner], ref_v[inner], rtol=1e-12)


def test_convolution_not_correlation():
    """A kernel with a single off-centre pixel moves the image by +offset (convolution convention)."""
    basis_img = np.zeros((1, 5, 5))
    basis_img[0, 2, 3] = 1.0  # u = (dy, dx) = (0, +1)
    from psfmatch.kernel.basis import KernelBasis
    K = LinearCombinationKernel(KernelBasis(basis_img, "delta-function", {}), [1.0])
    img = np.zeros((20, 20))
    img[10, 10] = 1.0
    out = convolve_masked_image(MaskedImage(img, variance=np.ones((20, 20))), K)
    assert out.image[10, 11] == pytest.approx(1.0)
    assert abs(out.image[10, 10]) < 1e-12


def test_kernel_sum_scales_flux_and_variance():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(64, 64))
    var = np.full((64, 64), 2.0)
    one = convolve_masked_image(MaskedImage(img, variance=var), _constant_kernel())
    two = convolve_masked_image(MaskedImage(img, variance=var), _constant_kernel(kernel_sum=2.0))
    inner = (slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(two.image[inner], 2 * one.image[inner], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(two.variance[inner], 4 * one.variance[inner], rtol=1e-12)


@pytest.mark.parametrize("kind", ["chebyshev1", "polynomial"])
def test_term_images_reproduce_the_kernel(kind):
    """The kernel re-expressed on Chebyshev products over the image box equals the kernel everywhere."""
    bbox = Box2I((30, 20), (200, 160))
    K = _varying_kernel(kind, bbox)
    sub = Box2I((60, 50), (120, 90))  # an image box inside the kernel's box
    order, img_terms, var_terms = spatial_term_images(K, sub)
    assert order == 2 and len(img_terms) == 6 and len(var_terms) == 15
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = rng.uniform(sub.getMinX(), sub.getMaxX())
        y = rng.uniform(sub.getMinY(), sub.getMaxY())
        tx = (x - (sub.getMinX() - 0.5 + sub.getWidth() / 2)) * 2 / sub.getWidth()
        ty = (y - (sub.getMinY() - 0.5 + sub.getHeight() / 2)) * 2 / sub.getHeight()
        T = np.polynomial.chebyshev.chebvander(np.array([tx, ty]), 4)
        img = sum(T[0, p] * T[1, q] * R for (p, q), R in img_terms)
        sq = sum(T[0, p] * T[1, q] * W for (p, q), W in var_terms)
        truth = K.computeImage((x, y))
        np.testing.assert_allclose(img, truth, atol=1e-13 * np.abs(truth).max())
        np.testing.assert_allclose(sq, truth ** 2, atol=1e-13 * (truth ** 2).max())


@pytest.mark.parametrize("order, xy0", [(4, (10000, 9000)), (3, (150000, 0))])
def test_raw_monomials_far_from_the_origin_convolve_exactly(order, xy0):
    """Raw-pixel monomials of order 4 at x ~ 1e4 (x^4 ~ 1e16): the change to Chebyshev terms keeps the constant
    term, which a threshold over the whole change-of-basis matrix dropped (outputs off by 1e3 to 1e6)."""
    from psfmatch.convolve import direct_convolve
    bbox = Box2I(xy0, (2048, 2048))  # a CCD far from the origin; the image is a piece of it
    basis = makeAlardLuptonBasisList(3, 2, (1.0, 2.0), (1, 0))
    sf = SpatialFunction("polynomial", order, bbox)
    cheb, B = sf.conditioned()  # a smooth variation written as raw monomials
    rng = np.random.default_rng(4)
    theta = np.zeros((len(basis), sf.nterms))
    theta[0, 0] = 1.0
    theta[1:] = rng.normal(0, 0.05, (len(basis) - 1, sf.nterms)) @ B
    K = LinearCombinationKernel(basis, theta, sf, 1.0, bbox)
    img = rng.normal(10.0, 1.0, (36, 40))
    var = rng.uniform(0.5, 2.0, (36, 40))
    mi = MaskedImage(img, variance=var, xy0=(xy0[0] + 1500, xy0[1] + 700))
    out = convolve_masked_image(mi, K)
    ref_i, ref_v = direct_convolve(mi, K)
    inner = (slice(3, -3), slice(3, -3))
    # (raw monomials this far out hold the kernel to about 1e-9 of its values, in the reference as here)
    np.testing.assert_allclose(out.image[inner], ref_i[inner], rtol=0, atol=1e-7)
    np.testing.assert_allclose(out.variance[inner], ref_v[inner], rtol=0, atol=1e-8)


def test_invariant_kernel_uses_one_term():
    K = _constant_kernel()
    order, img_terms, var_terms = spatial_term_images(K, Box2I((0, 0), (50, 50)))
    assert order == 0 and len(img_terms) == 1 and len(var_terms) == 1


@pytest.mark.parametrize("shape", [(5, 40), (40, 5), (14, 14), (15, 15), (16, 30)])
def test_small_images_are_border(shape):
    """Images no larger than the kernel: everything is border (NaN, inf, NO_DATA); no crash."""
    K = _constant_kernel(k=15)
    mi = MaskedImage(np.ones(shape), variance=np.ones(shape))
    out = convolve_masked_image(mi, K)
    h = 7
    H, W = shape
    interior = np.zeros(shape, bool)
    interior[h:H - h, h:W - h] = True
    nodata = mi.getMask().getPlaneBitMask("NO_DATA")
    assert np.all(np.isnan(out.image[~interior])) and np.all(out.mask[~interior] == nodata)
    np.testing.assert_allclose(out.image[interior], 1.0)


def test_dtype_follows_input():
    K = _constant_kernel()
    for dt in (np.float32, np.float64):
        mi = MaskedImage(np.ones((40, 40), dt), variance=np.ones((40, 40), dt))
        out = convolve_masked_image(mi, K)
        assert out.image.dtype == dt and out.variance.dtype == dt and out.mask.dtype == np.int32


def test_tiles_and_threads_do_not_change_the_result():
    bbox = Box2I((7, -3), (173, 151))
    K = _varying_kernel(bbox=bbox)
    rng = np.random.default_rng(4)
    img = rng.normal(size=(151, 173)) * 10
    var = rng.uniform(1, 2, size=(151, 173))
    mi = MaskedImage(img, variance=var, xy0=(7, -3))
    ref = convolve_masked_image(mi, K, tile=1024, workers=1)
    for tile, workers in ((40, 1), (64, 2), (100, 3)):
        out = convolve_masked_image(mi, K, tile=tile, workers=workers)
        np.testing.assert_allclose(out.image, ref.image, atol=1e-11, equal_nan=True)
        np.testing.assert_allclose(out.variance, ref.variance, rtol=1e-11)
        np.testing.assert_array_equal(out.mask, ref.mask)


def test_a_failure_preparing_the_variance_spectra_in_the_pool_propagates(monkeypatch):
    # the variance's term spectra are prepared by a pool thread while the image's tiles are queued
    import threading

    import psfmatch.convolve as conv

    bbox = Box2I((0, 0), (200, 160))
    K = _varying_kernel(bbox=bbox)
    mi = MaskedImage(np.ones((160, 200)), variance=np.ones((160, 200)))
    real_init, real_apply = conv._PlaneTransform.__init__, conv._PlaneTransform.apply
    n_img_terms = len(conv.spatial_term_images(K, bbox)[1])
    applied = []

    def init(self, terms, *args):
        if len(terms) != n_img_terms:  # the variance's (its square has more terms)
            raise MemoryError("variance spectra failed")
        real_init(self, terms, *args)

    def apply(self, *args):
        applied.append(1)
        return real_apply(self, *args)

    monkeypatch.setattr(conv._PlaneTransform, "__init__", init)
    monkeypatch.setattr(conv._PlaneTransform, "apply", apply)
    with pytest.raises(MemoryError, match="variance spectra failed"):
        convolve_masked_image(mi, K, tile=48, workers=2)
    done = len(applied)
    threading.Event().wait(0.2)
    assert len(applied) == done  # no image tile still running or started afterwards
    monkeypatch.setattr(conv._PlaneTransform, "__init__", real_init)
    out = convolve_masked_image(mi, K, tile=48, workers=2)  # the pool is not poisoned
    np.testing.assert_allclose(out.variance, convolve_masked_image(mi, K, workers=1).variance, rtol=1e-12)


def test_a_failing_tile_propagates_and_leaves_nothing_running(monkeypatch):
    import threading

    import psfmatch.convolve as conv

    bbox = Box2I((0, 0), (200, 160))
    K = _varying_kernel(bbox=bbox)
    mi = MaskedImage(np.ones((160, 200)), variance=np.ones((160, 200)))
    mi.mask[50, 60] = mi.getMask().getPlaneBitMask("SAT")  # the dilation runs beside the tiles
    real = conv._PlaneTransform.apply
    calls, active = [], []
    lock = threading.Lock()

    def flaky(self, block, ny, Yw, Xw):
        with lock:
            calls.append(len(self.groups))
            active.append(1)
            n = len(calls)
        try:
            if n == 3:  # an image tile, while others are queued
                raise FloatingPointError("tile 3 failed")
            return real(self, block, ny, Yw, Xw)
        finally:
            with lock:
                active.pop()

    monkeypatch.setattr(conv._PlaneTransform, "apply", flaky)
    with pytest.raises(FloatingPointError, match="tile 3 failed"):
        convolve_masked_image(mi, K, tile=48, workers=2)
    assert not active  # every started tile had finished when the error came out
    done = len(calls)
    threading.Event().wait(0.2)
    assert len(calls) == done  # and none started afterwards
    # the failure did not poison the shared pool
    monkeypatch.setattr(conv._PlaneTransform, "apply", real)
    out = convolve_masked_image(mi, K, tile=48, workers=2)
    np.testing.assert_allclose(out.image, convolve_masked_image(mi, K, workers=1).image, atol=1e-12,
                               equal_nan=True)


def test_memory_limit_is_enforced():
    K = _constant_kernel()
    mi = MaskedImage(np.ones((64, 64), np.float32), variance=np.ones((64, 64), np.float32))
    with pytest.raises(MemoryLimitError, match="maxMemoryGiB"):
        convolve_masked_image(mi, K, max_memory_bytes=1000)
    need = estimate_memory((4096, 4096), 21, 6, 15, 512)
    assert need < 1.0 * 2 ** 30  # the default run fits the 1 GiB budget
    # the tile batches do not grow with the image height: memory is the planes plus a constant
    a = estimate_memory((4096, 4096), 21, 6, 15, 512)
    b = estimate_memory((8192, 4096), 21, 6, 15, 512)
    per_pixel = (b - a) / (4096 * 4096)
    assert per_pixel < 20


def test_memory_estimate_counts_no_more_threads_than_batches_of_tiles(monkeypatch):
    # PSFMATCH_NUM_THREADS=99999999 made every exposure fail with a MemoryLimitError of 96082 GiB (whose remedy,
    # maxMemoryGiB or convolveTileSize, was not the cause): threads without a batch of tiles hold nothing
    one_tile = estimate_memory((300, 300), 21, 6, 15, 384, 4, 2)  # one tile per plane: two batches at most
    assert estimate_memory((300, 300), 21, 6, 15, 384, 4, 10 ** 8) == one_tile
    assert estimate_memory((300, 300), 21, 6, 15, 384, 4, 1) < one_tile
    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "99999999")
    K = _constant_kernel()
    rng = np.random.default_rng(0)
    mi = MaskedImage(rng.normal(size=(200, 200)).astype(np.float32), variance=np.ones((200, 200), np.float32))
    out = convolve_masked_image(mi, K, max_memory_bytes=2 ** 30)
    np.testing.assert_allclose(out.image, convolve_masked_image(mi, K, workers=1).image, rtol=1e-6, atol=1e-6)


def _brute_dilate(mask, fp, exclude=0):
    out = np.zeros_like(mask)
    H, W = mask.shape
    c = np.array(fp.shape) // 2
    m = mask & ~exclude
    for dy, dx in np.argwhere(fp) - c:
        ys = slice(max(0, dy), min(H, H + dy))
        xs = slice(max(0, dx), min(W, W + dx))
        out[ys, xs] |= m[max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
    return out


@pytest.mark.parametrize("box_overhead, band", [(0, None), (None, None), (None, 50), (0, 1), (None, 400)])
def test_dilate_mask_matches_brute_force(box_overhead, band, monkeypatch):
    import psfmatch.convolve as convolve_mod

    if box_overhead is not None:  # 0: dilate box by box (the default merges many boxes into one pass)
        monkeypatch.setattr(convolve_mod, "_BOX_OVERHEAD_PIXELS", box_overhead)
    if band is not None:  # bands of a few rows: each needs the footprint's reach above and below it
        monkeypatch.setattr(convolve_mod, "_BAND_PIXELS", band)
        monkeypatch.setattr(convolve_mod, "_CHUNK_PIXELS", max(1, band // 3))  # bit tests in smaller chunks still
    rng = np.random.default_rng(7)
    for trial in range(60):
        k = int(rng.integers(0, 9)) * 2 + 1
        if trial % 3 == 0:
            yy, xx = np.mgrid[:k, :k] - k // 2
            fp = yy ** 2 + xx ** 2 <= rng.uniform(0, k * k / 4)
        else:
            fp = rng.random((k, k)) < rng.uniform(0.1, 1.0)  # holes, asymmetric, centre may be missing
        H, W = int(rng.integers(1, 150)), int(rng.integers(1, 200))
        mask = np.where(rng.random((H, W)) < rng.uniform(0, 0.1),
                        rng.integers(-2 ** 31, 2 ** 31, (H, W)), 0).astype(np.int32)  # the sign bit too
        exclude = int(rng.choice([0, 256, 1 << 30]))
        got = dilate_mask(mask, fp, exclude=exclude)
        np.testing.assert_array_equal(got, _brute_dilate(mask, fp, exclude))
        rects = footprint_rectangles(fp)
        union = np.zeros_like(fp)
        for dy0, dy1, dx0, dx1 in rects:
            union[dy0 + k // 2:dy1 + k // 2 + 1, dx0 + k // 2:dx1 + k // 2 + 1] = True
        np.testing.assert_array_equal(union, fp)


def test_mask_footprint_threshold():
    bbox = Box2I((0, 0), (256, 256))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.2, 0.0])
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    fit = ModelPsfMatchTask(config=config).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    loose, tight = mask_footprint(fit.kernel, 1e-4), mask_footprint(fit.kernel, 1e-2)
    assert tight.sum() < loose.sum() <= mask_footprint(fit.kernel, 0.0).sum()
    assert np.all(loose[tight])
    assert tight[10, 10]


def test_output_registers_no_data_when_the_input_mask_lacks_it():
    """The border and the pixels touched by missing data carry a NO_DATA bit even if the input had no such plane."""
    img = np.ones((60, 70), np.float32)
    img[30, 35] = np.nan
    mask = np.zeros(img.shape, np.int32)
    mask[5, 5] = 1 << 2  # an unnamed bit in use: not taken for NO_DATA
    mi = MaskedImage(img, mask, np.ones_like(img), mask_planes={"BAD": 0, "SAT": 1, "CR": 3})
    out = convolve_masked_image(mi, _constant_kernel(k=7))
    planes = out.getMask().getMaskPlaneDict()
    assert planes == {"BAD": 0, "SAT": 1, "CR": 3, "NO_DATA": 4}
    bad = ~np.isfinite(out.image)
    assert bad.sum() == 60 * 70 - 54 * 64 + 49  # the 3 px border and the NaN's 7x7 footprint
    assert np.all(out.mask[bad] & (1 << 4)) and not np.any(out.mask[~bad] & (1 << 4))
    assert mi.getMask().getMaskPlaneDict() == {"BAD": 0, "SAT": 1, "CR": 3}  # the input is untouched


def test_no_free_bit_for_no_data_is_logged(caplog):
    img = np.ones((40, 40), np.float32)
    mi = MaskedImage(img, np.zeros(img.shape, np.int32), np.ones_like(img),
                     mask_planes={f"P{b}": b for b in range(32)})
    with caplog.at_level("WARNING", logger="psfmatch.convolve"):
        out = convolve_masked_image(mi, _constant_kernel(k=7))
    assert "no NO_DATA plane and no free bit for one" in caplog.text
    assert np.all(out.mask[:3] == 0) and np.all(np.isnan(out.image[:3]))


def test_a_kernel_applied_outside_its_box_warns():
    """Outside the box it was fitted on, a spatially varying kernel is extrapolated: convolving an image that
    reaches there warns, naming both boxes; inside the box (as the task does), or with a constant kernel, nothing
    is said."""
    K = _varying_kernel()  # fitted on (0, 0) + 200 x 160
    img = np.random.default_rng(5).normal(size=(40, 60))
    outside = MaskedImage(img, variance=np.ones_like(img), xy0=(150, 30))  # x up to 209
    with pytest.warns(KernelQualityWarning, match=r"the image's box Box2I\(minimum=\(150, 30\), dimensions=\(60, "
                                                  r"40\)\) reaches outside the box the kernel was fitted on, "
                                                  r"Box2I\(minimum=\(0, 0\), dimensions=\(200, 160\)\): its spatial "
                                                  r"model is extrapolated there"):
        convolve_masked_image(outside, K)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)
        convolve_masked_image(MaskedImage(img, variance=np.ones_like(img), xy0=(140, 120)), K)  # touches the corner
        convolve_masked_image(outside, _constant_kernel())
        flat = LinearCombinationKernel(K.basis, np.where(np.arange(6) == 0, K.coefficients, 0.0),
                                       K.spatial_function, 1.0, K.bbox)  # order 2, but nothing varies
        convolve_masked_image(outside, flat)
    # the task applies its kernel to the box it fitted it on, also away from the origin: never a warning
    exposure = Exposure(np.random.default_rng(6).normal(10.0, 1.0, (96, 128)).astype(np.float32),
                        psf=VariableGaussianPsf(21, 21, Box2I((300, 500), (128, 96)), sigma=[1.6, 0.2, 0.1]),
                        xy0=(300, 500))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.kernelSize = 11
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 2.6))
    assert result.psfMatchingKernel.isSpatiallyVarying() and result.psfMatchingKernel.bbox == exposure.getBBox()
    assert not [w for w in caught if "extrapolated" in str(w.message)]


def _delta_to_gaussian_kernel(bbox=None):
    """A 7x7 kernel that is a delta at x = 0 and a Gaussian of sigma 1.5 px at x = 1000 (raw-pixel polynomial)."""
    from psfmatch.kernel.basis import KernelBasis
    from psfmatch.kernel.spatial import SpatialFunction

    yy, xx = np.mgrid[-3:4, -3:4]
    delta = np.zeros((7, 7))
    delta[3, 3] = 1
    wide = np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.5 ** 2))
    sf = SpatialFunction("polynomial", 1, Box2I((0, 0), (2000, 2000)))
    coeffs = np.array([[1.0, -1e-3, 0.0], [0.0, 1e-3, 0.0]])
    return LinearCombinationKernel(KernelBasis(np.array([delta, wide / wide.sum()]), "pca"), coeffs, sf, bbox=bbox)


def test_the_mask_footprint_is_the_kernels_over_the_image():
    """A spatially varying kernel without a box took its footprint at parent (0, 0) only: on an image at
    x = 1000, where it is a 7x7 Gaussian, a BAD pixel was not spread at all."""
    mask = np.zeros((31, 31), np.int32)
    mask[15, 15] = 1  # BAD
    mi = MaskedImage(np.zeros((31, 31)), mask, np.ones((31, 31)), xy0=(1000, 0))
    out = convolve_masked_image(mi, _delta_to_gaussian_kernel(), mask_threshold=1e-3)
    assert np.count_nonzero(out.mask & 1) == 49


@pytest.mark.parametrize("kwargs, match", [
    ({"mask_threshold": float("inf")}, r"mask threshold must be a number in \[0, 1\] .*; got inf"),
    ({"mask_threshold": 2.0}, r"mask threshold must be a number in \[0, 1\]"),
    ({"mask_threshold": None}, r"mask threshold must be a number in \[0, 1\] .*; got None"),
    ({"tile": float("nan")}, r"tile must be a positive integer; got nan"),
    ({"workers": "x"}, r"workers must be a positive integer; got 'x'"),
    ({"workers": 0}, r"workers must be a positive integer; got 0"),
])
def test_convolution_arguments_are_checked(kwargs, match):
    """An infinite threshold gave an empty footprint (every mask bit dropped, even the flagged pixel's)."""
    mi = MaskedImage(np.zeros((31, 31)), np.zeros((31, 31), np.int32), np.ones((31, 31)))
    with pytest.raises(InvalidInputError, match=match):
        convolve_masked_image(mi, _delta_to_gaussian_kernel(Box2I((0, 0), (31, 31))), **kwargs)


def test_the_footprint_grid_follows_the_spatial_order():
    """A kernel pixel whose weight, a parabola in x, exceeds the threshold only between the points of a 5x5 grid
    (its peak at x' = 0.25, 0.9375 of it at the grid's x' = 0 and 0.5): the mask now spreads there."""
    from psfmatch.kernel.basis import KernelBasis
    from psfmatch.kernel.spatial import SpatialFunction

    box = Box2I((0, 0), (41, 41))
    sf = SpatialFunction("chebyshev1", 2, box)
    centre, side = np.zeros((5, 5)), np.zeros((5, 5))
    centre[2, 2] = side[2, 3] = 1.0
    c = 1.03e-3  # f = 1 - (x' - 0.25)^2 = 0.4375 + 0.5 T1 - 0.5 T2
    coeffs = np.zeros((2, sf.nterms))
    coeffs[0, sf.terms.index((0, 0))] = 1.0
    coeffs[1, sf.terms.index((0, 0))], coeffs[1, sf.terms.index((1, 0))] = c * 0.4375, c * 0.5
    coeffs[1, sf.terms.index((2, 0))] = -c * 0.5
    kernel = LinearCombinationKernel(KernelBasis(np.array([centre, side]), "pca"), coeffs, sf, bbox=box)
    assert not mask_footprint(kernel, 1e-3, n_grid=5)[2, 3]  # (what the 5x5 grid saw)
    assert mask_footprint(kernel, 1e-3)[2, 3]
    mask = np.zeros((41, 41), np.int32)
    mask[20, 20] = 1  # BAD
    out = convolve_masked_image(MaskedImage(np.zeros((41, 41)), mask, np.ones((41, 41))), kernel,
                                mask_threshold=1e-3)
    assert out.mask[20, 21] & 1


def _sky_with(values, mask_bits, sky=100.0, sigma=2.0, shape=(80, 90), seed=5):
    """A noisy sky whose pixels ``values`` ({(y, x): value}) carry ``mask_bits`` ({(y, x): plane name})."""
    rng = np.random.default_rng(seed)
    mi = MaskedImage(rng.normal(sky, sigma, shape), variance=np.full(shape, sigma ** 2))
    for (y, x), v in values.items():
        mi.image[y, x] = v
    for (y, x), name in mask_bits.items():
        mi.mask[y, x] |= mi.getMask().getPlaneBitMask(name)
    return mi


def test_a_masked_value_reaches_no_pixel_without_its_bit():
    """A BAD pixel of 1e6 on a sky of 100 +- 2: with a 1e-3 footprint the kernel's outskirts carried hundreds of
    sigma of it beyond the footprint. A plane that may hold wrong values now spreads over every non-zero kernel
    pixel, so every pixel left without the bit equals the convolution of the clean sky to rounding; the
    maskDilationPlanes (DETECTED here) keep the footprint whatever their values; and the rule does not depend on
    kernelSum."""
    K = _constant_kernel(sigma=2.0, k=21)
    Kimg = K.computeImage()
    mi = _sky_with({(40, 45): 1e6, (40, 20): 1e6}, {(40, 45): "BAD", (40, 20): "DETECTED"})
    out = convolve_masked_image(mi, K)
    clean = mi.image.copy()
    clean[40, 45] = 100.0
    truth = ndimage.convolve(clean, Kimg, mode="constant")
    bad, det = mi.getMask().getPlaneBitMask("BAD"), mi.getMask().getPlaneBitMask("DETECTED")
    flagged = (out.mask & bad) != 0
    assert flagged[30:51, 35:56].all() and flagged.sum() == 441  # the kernel's whole support
    inner = np.isfinite(out.image) & ~flagged
    assert np.abs(out.image[inner] - truth[inner]).max() < 1e-9
    fp = mask_footprint(K, 1e-3)
    assert np.array_equal((out.mask & det)[30:51, 10:31] != 0, fp) and fp.sum() == 177
    for other in (_constant_kernel(sigma=2.0, k=21, kernel_sum=8.0),):
        assert np.array_equal(convolve_masked_image(mi, other).mask, out.mask)
    # footprint_planes chooses the planes that keep the footprint (here BAD too: LSST's footprint for none)
    narrow = convolve_masked_image(mi, K, footprint_planes=("DETECTED", "BAD"))
    assert ((narrow.mask & bad) != 0).sum() == 177
    wide = convolve_masked_image(mi, K, footprint_planes=())
    assert ((wide.mask & det) != 0).sum() == 441


def test_masked_pixels_spread_by_their_planes_exactly_as_dilate_mask():
    """A BAD column at 0, a cosmic ray, a bright DETECTED core, an INTRP pixel, a SAT|INTRP core and a hot pixel
    also flagged NO_DATA (left out of the convolution): DETECTED and INTRP bits spread by the footprint, the
    others by the kernel's support, exactly as dilate_mask does with each."""
    K = _constant_kernel(sigma=2.0, k=21)
    values = {(y, 20): 0.0 for y in range(80)}
    bits = {(y, 20): "BAD" for y in range(80)}
    values[(40, 60)], bits[(40, 60)] = 300.0, "CR"
    values[(20, 70)], bits[(20, 70)] = 1e6, "DETECTED"
    values[(60, 70)], bits[(60, 70)] = 1e6, "INTRP"
    mi = _sky_with(values, bits)
    m = mi.getMask()
    mi.mask[30, 40] |= m.getPlaneBitMask("SAT") | m.getPlaneBitMask("INTRP")
    mi.image[10, 50] = 1e6
    mi.mask[10, 50] |= m.getPlaneBitMask("NO_DATA") | m.getPlaneBitMask("SAT")
    out = convolve_masked_image(mi, K)
    no_data = m.getPlaneBitMask("NO_DATA")
    narrow = m.getPlaneBitMask("DETECTED") | m.getPlaneBitMask("DETECTED_NEGATIVE") | m.getPlaneBitMask("INTRP")
    expected = (dilate_mask(mi.mask, mask_footprint(K, 1e-3), exclude=no_data | ~narrow)
                | dilate_mask(mi.mask, mask_footprint(K, 0.0), exclude=no_data | narrow))
    inner = (slice(10, -10), slice(10, -10))
    assert np.array_equal(out.mask[inner] & ~no_data, expected[inner])


def test_kernel_sum_errors_say_so_by_an_attribute():
    """The errors whose remedy is another kernelSum carry ``kernel_sum_remedy`` (run(..., zeroPoint=) adds where its
    kernelSum came from: it found them by the word 'kernelSum' in their text); others do not."""
    mi = MaskedImage(np.ones((40, 40), np.float32), variance=np.full((40, 40), 1e-30, np.float32))
    with pytest.raises(InvalidInputError, match="kernelSum = 1e-22 takes the matched variance plane") as info:
        convolve_masked_image(mi, _constant_kernel(kernel_sum=1e-22))
    assert info.value.kernel_sum_remedy is True
    with pytest.raises(InvalidInputError, match="tile must be a positive integer") as info:
        convolve_masked_image(mi, _constant_kernel(), tile=0)
    assert not getattr(info.value, "kernel_sum_remedy", False)


def test_a_footprint_plane_the_mask_lacks_is_warned_of():
    """A typo in maskDilationPlanes ('DETECTD') changed nothing without a word, and DETECTED then spread over the
    whole kernel; a name neither the mask nor psfmatch's defaults have is now warned of."""
    from psfmatch.errors import PsfMatchWarning

    mi = _sky_with({(40, 20): 1e4}, {(40, 20): "DETECTED"})
    with pytest.warns(PsfMatchWarning, match=r"maskDilationPlanes names \['DETECTD'\], which the exposure's mask "
                                             r"does not have .*is it a typo"):
        out = convolve_masked_image(mi, _constant_kernel(sigma=2.0, k=21), footprint_planes=("DETECTD",))
    assert ((out.mask & mi.getMask().getPlaneBitMask("DETECTED")) != 0).sum() == 441
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults, and a custom plane the mask has, say nothing
        mi.getMask().addMaskPlane("STREAK")
        convolve_masked_image(mi, _constant_kernel(sigma=2.0, k=21))
        convolve_masked_image(mi, _constant_kernel(sigma=2.0, k=21), footprint_planes=["DETECTED", "STREAK"])
    with pytest.raises(InvalidInputError, match=r"footprint_planes \(as maskDilationPlanes\) must be a mask plane "
                                                r"name or a sequence of names .*got int 5"):
        convolve_masked_image(mi, _constant_kernel(sigma=2.0, k=21), footprint_planes=5)
